"""``make bench`` ``cancel:``, ``progress:`` and ``reads:``: the time between a run's start and its end,
through real components (scheduler, triggerer, api-server; Airflow's defaults otherwise).

Eight mapped deferred waits (``poll_interval`` 5 s) await apps of the emulator that report progress
every 5 s (``ask_every``). Once every wait is deferred and its app has reported, each wait is marked
failed through the REST API, as a user does in the UI, a second apart (so the marks fall at every
phase of the apps' 5 s rhythm).

- ``cancel:`` from a mark to the app's next request answering ``"cancel": true`` (the emulator's
  ``cancelled_at``); goal: the asking interval plus one poll (``ratio = p95 / goal``, at most 1).
- ``progress:`` from an app's progress report to its line in the wait's task log (the log line's own
  time); goal: one poll.
- ``reads:`` the waits' reads of their report records per wait per poll while they waited: the
  triggerer's SQL statements that select a report Variable, counted by a SQLAlchemy event hook that
  ``benchmarks/sql_count/sitecustomize.py`` installs in the triggerer alone; goal: 1.
"""

from __future__ import annotations

import datetime
import re
import statistics
import tempfile
import textwrap
import time
from pathlib import Path

from benchmarks.percentiles import p95

N = 8
ASK_EVERY = 5.0
POLL = 5.0
DAG_ID = "octorpa_bench_cancel"
RUN_ID = "bench"
DAG_FILE = f'''
import time
from datetime import datetime

from airflow.providers.common.compat.sdk import DAG, task

from airflow_octorpa.operators.octorpa import OctoRpaTriggerOperator
from airflow_octorpa.sensors.octorpa import OctoRpaRunSensor

with DAG("{DAG_ID}", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
    started = OctoRpaTriggerOperator.partial(task_id="trigger", octorpa_conn_id="octorpa_bench", callback=True).expand(
        app_params=[{{"订单号": f"B-{{i}}"}} for i in range({N})]
    )
    OctoRpaRunSensor.partial(task_id="wait", timeout=900, poll_interval={POLL}).expand(started_run=started.output)

    @task
    def keep_the_run_open() -> None:
        """The DAG run's end (which also asks its runs to stop) must not be why an app heard."""
        time.sleep(240)

    keep_the_run_open()
'''
_TIME = re.compile(r"(\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:\.\d+)?)(Z|[+-]\d\d:?\d\d)?")


def _line_time(line: str) -> float | None:
    found = _TIME.search(line)
    if found is None:
        return None
    zone = found.group(2) or "+00:00"
    zone = "+00:00" if zone == "Z" else zone
    return datetime.datetime.fromisoformat(found.group(1).replace(" ", "T") + zone).timestamp()


def _percentiles(values: list[float]) -> tuple[float, float]:
    return statistics.median(values), p95(values)


def main() -> int:
    from airflow_octorpa.emulator import OctoRpaEmulator, WebhookSpec
    from tests.support.airflow_cluster import AirflowCluster
    from tests.support.airflow_rest import mark
    from tests.support.settings import FAST_LIMITS, ORDER_SECRET

    home = Path(tempfile.mkdtemp(prefix="octorpa-bench-cancel-"))
    dags = home / "dags"
    dags.mkdir()
    (dags / f"{DAG_ID}.py").write_text(textwrap.dedent(DAG_FILE))
    with OctoRpaEmulator() as emulator:
        emulator.state.put_webhook(WebhookSpec.reporting_app("bench-app", ORDER_SECRET, after=900, ask_every=ASK_EVERY))
        connection = {"conn_type": "octorpa", "host": emulator.webhook_url("bench-app"), "password": ORDER_SECRET,
                      "extra": {"rate_limits": FAST_LIMITS}}  # fmt: skip
        sql_log = home / "report-reads.log"
        counting = {"PYTHONPATH": str(Path(__file__).parent / "sql_count"), "OCTORPA_BENCH_SQL_LOG": str(sql_log)}
        with AirflowCluster(home, dags, extra_env=counting) as cluster:
            cluster.prepare({"octorpa_bench": connection})
            cluster.start()
            cluster.wait_for_dags(DAG_ID)
            cluster.trigger(DAG_ID, RUN_ID, {})

            def all_waiting() -> bool:
                runs = emulator.state.snapshot("runs")
                states = cluster.task_states(DAG_ID, RUN_ID)
                deferred = sum(state == "deferred" for (task, _), state in states.items() if task == "wait")
                return len(runs) == N and deferred == N and all(run["callback"]["progress"] for run in runs)

            cluster.wait_for(all_waiting, 300, "every wait to be deferred while its app reports")
            steady_from = time.time()
            time.sleep(4 * POLL)  # a steady stretch for the reads
            steady_to = time.time()
            runs = {run["params"]["订单号"]: run for run in emulator.state.snapshot("runs")}
            marked_at = {}
            for index in range(N):
                marked_at[index] = time.time()
                mark(cluster, DAG_ID, RUN_ID, "wait", "failed", map_index=index)
                time.sleep(1.0)

            def all_heard() -> bool:
                return all(run["callback"]["cancelled_at"] for run in emulator.state.snapshot("runs"))

            cluster.wait_for(all_heard, 120, "every app to hear its cancel")
            runs = {run["params"]["订单号"]: run for run in emulator.state.snapshot("runs")}
            heard = [runs[f"B-{i}"]["callback"]["cancelled_at"] - marked_at[i] for i in range(N)]
            progress = _progress_latencies(cluster.home, runs)
            reads = _reads(sql_log, steady_from, steady_to)
    goal = ASK_EVERY + POLL
    median, p95 = _percentiles(heard)
    print(f"cancel: apps={N} ask_every={ASK_EVERY:g}s poll={POLL:g}s median={median:.1f}s p95={p95:.1f}s "
          f"goal={goal:g}s ratio={p95 / goal:.2f}")  # fmt: skip
    median, p95 = _percentiles(progress)
    print(
        f"progress: reports={len(progress)} median={median:.1f}s p95={p95:.1f}s goal={POLL:g}s ratio={p95 / POLL:.2f}"
    )
    polls = N * (steady_to - steady_from) / POLL
    print(f"reads: waits={N} seconds={steady_to - steady_from:.0f} reads={reads} polls={polls:.0f} "
          f"per_poll={reads / polls:.2f} goal=1")  # fmt: skip
    return 0


def _progress_latencies(home: Path, runs: dict[str, dict]) -> list[float]:
    """From each progress report's sending to its line in its wait's log (the wait of map index i
    awaits the app of order B-i)."""
    latencies = []
    for index in range(N):
        sent = {step["step"]: step["sent_at"] for step in runs[f"B-{index}"]["callback"]["progress"]}
        logs = "".join(
            path.read_text(errors="replace")
            for path in home.glob(f"logs/dag_id={DAG_ID}/**/task_id=wait/map_index={index}/*.log")
        )
        for line in logs.splitlines():
            found = re.search(r" progress #(\d+) at ", line)
            at = _line_time(line)
            if found and at is not None and int(found.group(1)) in sent:
                latencies.append(at - sent[int(found.group(1))])
    return latencies


def _reads(sql_log: Path, since: float, until: float) -> int:
    """The triggerer's SQL reads of report Variables between two times."""
    lines = sql_log.read_text().splitlines() if sql_log.exists() else []
    return sum(since <= float(line.split()[0]) <= until for line in lines)


if __name__ == "__main__":
    raise SystemExit(main())
