"""``make bench`` ``inbox:`` lines: what an inbox costs and how soon its reports schedule DAG runs,
through real components on PostgreSQL (whose statistics count the reads) and Airflow's defaults.

- ``inbox: accept``: reports per second one new inbox (no watcher: they are held) answers 200 with
  1 and 4 api-server workers, 16 clients at once, against the same clients' requests per second to
  the api-server's health route in the same run (``ratio = reports/s / health/s``). A ``busy``
  answer (503: the inbox's record kept changing under the write; SQLite only, since PostgreSQL
  locks the row) is sent again, as the app's retry would, and counted.
- ``inbox: latency``: from a report's 200 to the start of the DAG run it scheduled
  (``tests/dags/octorpa_inbox.py``'s consumer), one report every 4 s, median and p95, against the
  scheduler's idle sleep plus the watcher's poll (the least either adds; ``ratio = median / goal``).
- ``inbox: idle``: the reads of the ``variable`` table per second while nothing arrives, with one
  watcher running, against its own two small reads (cursor, counter) per poll.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from benchmarks.percentiles import p95
from benchmarks.rate_limit import SETTINGS, deployment, variable_scans
from tests.support.airflow_cluster import AirflowCluster, Component

CLIENTS = 16
WATCHED, HELD = "test-orders", "bench-held"  # the consumer DAG's inbox; one no DAG watches
DAG_ID = "octorpa_inbox_consumer"
IDLE_SECONDS = 60.0


def _per_second(count: int, send: Callable[[int], int]) -> tuple[float, int]:
    """``count`` calls of ``send(i)`` from CLIENTS threads; calls per second and busy answers."""
    busy = 0
    lock = threading.Lock()

    def one(i: int) -> None:
        nonlocal busy
        while (status := send(i)) == 503:
            with lock:
                busy += 1
        if status != 200:
            raise RuntimeError(f"request {i} was answered {status}")

    began = time.perf_counter()
    with ThreadPoolExecutor(CLIENTS) as pool:
        list(pool.map(one, range(count)))
    return count / (time.perf_counter() - began), busy


def accept_line(cluster: AirflowCluster, url: str, workers: int, count: int) -> str:
    _restart_api_server(cluster, workers)
    local = threading.local()

    def session() -> requests.Session:
        if not hasattr(local, "session"):
            local.session = requests.Session()
        return local.session

    health = f"http://127.0.0.1:{cluster.port}/api/v2/monitor/health"
    baseline, _ = _per_second(count, lambda i: session().get(health, timeout=30).status_code)
    tag = f"w{workers}"
    rate, busy = _per_second(
        count,
        lambda i: session().post(url, json={"status": "succeeded", "report_id": f"{tag}-{i}"}, timeout=30).status_code,
    )
    return (
        f"inbox: accept workers={workers} clients={CLIENTS} reports={count} reports/s={rate:.0f} "
        f"health/s={baseline:.0f} ratio={rate / baseline:.2f} busy_answers={busy}"
    )


def _restart_api_server(cluster: AirflowCluster, workers: int) -> None:
    cluster.kill("api-server")
    cluster.start_component(Component("api-server", ("api-server", "--workers", str(workers))))
    cluster.wait_for(cluster._api_healthy, 180, f"the api-server with {workers} worker(s)")


def latency_line(cluster: AirflowCluster, url: str, reports: int, every: float) -> str:
    from airflow_octorpa.triggers.inbox import DEFAULT_POLL_INTERVAL

    answered: dict[int, float] = {}
    for n in range(1, reports + 1):
        answer = requests.post(url, json={"status": "succeeded", "outputs": {"n": n}}, timeout=30)
        answered[n] = time.time()
        assert answer.status_code == 200, answer.text
        time.sleep(every)

    def runs() -> list[tuple[str, object]]:
        return cluster._query("SELECT run_id, start_date FROM dag_run WHERE dag_id = ? ORDER BY id", DAG_ID)

    def loaded() -> dict[int, float]:
        started = {}
        for run_id, start in runs():
            for n, _ in cluster.xcom_values(DAG_ID, run_id, "load").get(-1, []):
                started[n] = start.timestamp()
        return started

    cluster.wait_for(lambda: len(loaded()) == reports, 300, "every report's DAG run")
    latencies = [start - answered[n] for n, start in loaded().items()]
    goal = float(SETTINGS["default"]["AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME"]) + DEFAULT_POLL_INTERVAL
    median = statistics.median(latencies)
    return (
        f"inbox: latency reports={reports} every={every:g}s runs={len(runs())} settings=default "
        f"median={median:.1f}s p95={p95(latencies):.1f}s goal={goal:g}s ratio={median / goal:.2f}"
    )


def idle_line(cluster: AirflowCluster) -> str:
    from airflow_octorpa.triggers.inbox import DEFAULT_POLL_INTERVAL

    before, since = variable_scans(cluster), time.time()
    time.sleep(IDLE_SECONDS)
    after, until = variable_scans(cluster), time.time()
    index_reads, table_scans = (a - b for a, b in zip(after, before, strict=True))
    per_second = (index_reads + table_scans) / (until - since)
    goal = 2 / DEFAULT_POLL_INTERVAL
    return (
        f"inbox: idle watchers=1 seconds={until - since:.0f} variable-reads/s={per_second:.2f} "
        f"({table_scans} whole-table) goal={goal:g}/s ratio={per_second / goal:.2f}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--accept-n", type=int, default=400, help="reports per api-server setting")
    parser.add_argument("--latency-n", type=int, default=20, help="reports for the latency line")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="octorpa-bench-inbox-") as home:
        with deployment("local", Path(home), {}, SETTINGS["default"], postgres=True) as cluster:
            cluster.wait_for_dags(DAG_ID, timeout=300)
            watched = cluster.create_inbox(WATCHED)
            cluster.wait_for(
                lambda: cluster._query("SELECT 1 FROM asset_watcher w JOIN trigger t ON t.id = w.trigger_id "
                                       "WHERE t.triggerer_id IS NOT NULL"),
                180, "the inbox's watcher to run",
            )  # fmt: skip
            for workers in (1, 4):  # a new inbox each: its record's repeat keys grow with its reports
                held = cluster.create_inbox(f"{HELD}-{workers}")
                print(accept_line(cluster, held, workers, args.accept_n), flush=True)
            _restart_api_server(cluster, 1)
            print(latency_line(cluster, watched, args.latency_n, every=4.0), flush=True)
            time.sleep(5)  # the last run's end and its clean-up
            print(idle_line(cluster), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
