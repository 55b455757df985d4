"""``make bench``: the provider's costs, each as a ratio against a baseline measured in the same run.

- ``rate-limit``: a burst of N mapped triggers (default 45) with the vendor's real limits
  (5/second, 20/minute) through real Airflow components against the emulator, with the slot
  hold in the worker and deferred, on LocalExecutor with SQLite and on the CeleryExecutor with
  PostgreSQL and Redis; deferred once more on LocalExecutor with the triggerer on a monotonic
  clock of its own (``triggerer=other-clock``: a time namespace, as on another machine). ``took``
  is the time from the first call the emulator received to the last; ``ideal`` is the least time
  the two limits allow for N calls (the baseline); ``ratio = ideal / took``; then where each
  round's time goes beyond the hold.
- ``hook-overhead``: the hook's cost per call against a bare ``requests.post`` of the same signed
  body to the same local server (``ratio = hook / bare``).
- ``faults``: 200 triggers through the scheduler with faults injected at random (fixed seed: about
  10% 429s, 5% unknown outcomes, 5% 503s before starting) under scaled-down windows; every trigger
  must be accounted for (started once, or failed saying it may have started), none twice.
- ``callback``: N runs (default 200) started at once whose apps report their end a few minutes later
  (the emulator's app, through Airflow's api-server), N sensors waiting deferred on one triggerer,
  on LocalExecutor and on the CeleryExecutor, both on PostgreSQL and Airflow's default settings.
  The latency from a report's arrival to its waiting task's success (median, p95), and the reads
  of the ``variable`` table while the sensors wait, counted by PostgreSQL (``pg_stat_user_tables``),
  per second and per waiting task per poll interval (the baseline: one read per poll).
- ``import-overhead``: what a DAG file pays to import the operator on top of ``import airflow.sdk``
  (``ratio = (sdk + operator) / sdk``), in CPU time of fresh interpreters, best of 11 each.

Machines here are shared and noisy: compare ratios, not seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from airflow_octorpa.emulator import OctoRpaEmulator, default_config, expected_sign
from airflow_octorpa.rate_limit import DEFAULT_POOL_SIZE as POOL_SIZE
from airflow_octorpa.rate_limit import hold_seconds
from benchmarks.percentiles import p95
from tests.support.airflow_cluster import COMPONENTS, OTHER_CLOCK, AirflowCluster, can_run_on_other_clock, component
from tests.support.fault_load import run_fault_load
from tests.support.limits_check import SCALED_LIMITS, gaps_apart, ideal_seconds

REPO = Path(__file__).resolve().parent.parent

VENDOR_LIMITS = "5/second;20/minute"
# The harness tunes the scheduler's idle sleep to 0.2 s and the triggerer's heartbeat to 1 s; users run
# Airflow's defaults (1 s and 5 s). Each burst is measured on both, side by side.
SETTINGS = {
    "default": {"AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "1", "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "5"},
    "tuned": {"AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.2", "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "1"},
}
WEBHOOK, SECRET = "order-processing", "demo-order-secret"


def rate_limit_line(
    n: int, mode: str, executor: str = "local", other_clock: bool = False, settings: str = "tuned"
) -> str:
    config = default_config()
    config.rate_limits = VENDOR_LIMITS
    with OctoRpaEmulator(config) as emulator, tempfile.TemporaryDirectory(prefix="octorpa-bench-") as home:
        connections = {
            "octorpa_default": {
                "conn_type": "octorpa",
                "host": emulator.webhook_url(WEBHOOK),
                "password": SECRET,
                "extra": {"rate_limits": VENDOR_LIMITS},
            }
        }
        dag_id = f"octorpa_burst_{mode}"
        with deployment(executor, Path(home), connections, SETTINGS[settings], other_clock) as cluster:
            cluster.wait_for_dags(dag_id, timeout=300)
            cluster.trigger(dag_id, "bench", {"n": n, "tag": mode})
            state = cluster.wait_for_run(dag_id, "bench", timeout=60 + 20 * n)
            logs = cluster.home
        calls = emulator.state.snapshot("calls")
        runs = emulator.state.snapshot("runs")
        arrivals = sorted(c["received_at"] for c in calls)
        breakdown = round_breakdown(logs, dag_id, arrivals)
    took = arrivals[-1] - arrivals[0]
    ideal = ideal_seconds(n, VENDOR_LIMITS)
    orders = [r["params"]["订单号"] for r in runs]
    refused = sum(1 for c in calls if c["status"] != 200)
    duplicates = len(orders) - len(set(orders))
    return (
        f"rate-limit: N={n} delivered={len(set(orders))} refused={refused} duplicates={duplicates} "
        f"took={took:.1f}s ideal={ideal:.1f}s ratio={ideal / took:.3f} mode={mode} executor={executor} run={state}"
        f" settings={settings}{' triggerer=other-clock' if other_clock else ''}\n"
        f"  per round of {POOL_SIZE} calls, {breakdown}"
    )


@contextlib.contextmanager
def deployment(
    executor: str,
    home: Path,
    connections: dict,
    settings: dict[str, str],
    other_clock: bool = False,
    postgres: bool = False,
) -> Iterator[AirflowCluster]:
    """LocalExecutor and SQLite (``postgres``: PostgreSQL), or the CeleryExecutor on PostgreSQL and
    Redis (tests_distributed); ``other_clock``: the LocalExecutor's triggerer runs on a monotonic
    clock of its own."""
    if executor == "celery":
        from tests_distributed.celery_deployment import celery_deployment

        with celery_deployment(home, REPO / "tests" / "dags", connections, settings) as cluster:
            yield cluster
        return
    # Only the other-clock run names its components (Airflow 3's); otherwise the version's own.
    components = (
        [component(name, OTHER_CLOCK if name == "triggerer" else ()) for name in COMPONENTS] if other_clock else None
    )
    with contextlib.ExitStack() as stack:
        database = {}
        if postgres:
            from tests.support.services import PostgresServer

            database = {"sql_alchemy_conn": stack.enter_context(PostgresServer()).url, "parallelism": 32}
        cluster = AirflowCluster(home, REPO / "tests" / "dags", components=components, extra_env=settings, **database)
        cluster.prepare(connections)
        with cluster:
            cluster.start()
            yield cluster


# What a task's log says at each step, for the breakdown of a round.
_MARKS = {
    "call": "Started Octopus RPA run",
    "deferred": "Pausing task as DEFERRED",
    "trigger_started": ") starting",
    "overlapped": "to the end of the hold the worker began",
    "trigger_fired": "Trigger fired event",
    "resumed": "Slot hold over",
}


def round_breakdown(home: Path, dag_id: str, arrivals: list[float]) -> str:
    """Where a round's time goes beyond the hold, as means over the rounds and tasks (seconds).

    - ``over``: from a round's first call to the next round's first call, less the hold.
    - ``hand-off``: the task deferred, until the triggerer started its trigger. With the triggerer
      on the worker's host the hold goes on meanwhile (``inside the hold``); otherwise the hold is
      timed from the trigger's start and the hand-off adds to the round.
    - ``event``: the trigger fired, until the task resumed on a worker (triggerer reporting,
      scheduler loop, queueing, task process start, DAG parse).
    - ``resume``: execute_complete to the task's end (XCom push, success).
    - ``start``: the rest of ``over``: the next task's scheduling, process start, DAG parse,
      connection look-up and call (what worker mode pays alone).
    - the gaps from each call to the fifth after it (one slot's round): deferred rounds last whole
      ticks of the triggerer's one-second loop, 16 or, past ``hold + 1.5``, 17 and more.
    """
    hold = hold_seconds(VENDOR_LIMITS, POOL_SIZE)
    firsts = arrivals[::POOL_SIZE]
    over = statistics.fmean(b - a - hold for a, b in zip(firsts, firsts[1:], strict=False)) if len(firsts) > 1 else 0.0
    gaps = gaps_apart(arrivals, POOL_SIZE)
    long = hold + 1.5  # past 16 ticks of the triggerer's loop: a deferred round of 17 or more
    rounds = (
        f"; a call to the {POOL_SIZE}th after it: median {statistics.median(gaps):.2f}s, "
        f"{sum(1 for g in gaps if g >= long)} of {len(gaps)} at {long:g}s or more"
        if gaps
        else ""
    )
    marks: dict[str, list[float]] = {name: [] for name in ("hand-off", "event", "resume")}
    overlapped = []
    folder = home / "logs" / f"dag_id={dag_id}" / "run_id=bench" / "task_id=trigger"
    for task in folder.glob("map_index=*"):
        times = _mark_times(task)
        if {"deferred", "trigger_started", "trigger_fired", "resumed", "end"} <= set(times):
            marks["hand-off"].append(times["trigger_started"] - times["deferred"])
            marks["event"].append(times["resumed"] - times["trigger_fired"])
            marks["resume"].append(times["end"] - times["resumed"])
            overlapped.append("overlapped" in times)
    parts = {name: statistics.fmean(values) for name, values in marks.items() if values}
    inside = bool(overlapped) and all(overlapped)
    start = over - sum(value for name, value in parts.items() if not (inside and name == "hand-off"))
    shown = " ".join(
        f"{name}={value:.2f}s{' (inside the hold)' if inside and name == 'hand-off' else ''}"
        for name, value in parts.items()
    )
    return f"over the hold {over:.2f}s: {shown}{' ' if shown else ''}start={start:.2f}s{rounds}"


def _mark_times(task_folder: Path) -> dict[str, float]:
    """The first time each mark appears in a task's logs (its attempt and its trigger's), and the
    time of its last line (``end``)."""
    from datetime import datetime

    times: dict[str, float] = {}
    for log in sorted(task_folder.glob("attempt=1.log*")):
        for line in log.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
                at = datetime.fromisoformat(entry["timestamp"].replace("Z", "+00:00")).timestamp()
            except (ValueError, KeyError, TypeError):
                continue
            event = str(entry.get("event", ""))
            for name, text in _MARKS.items():
                if text in event:
                    times.setdefault(name, at)
            if log.name == "attempt=1.log":
                times["end"] = max(times.get("end", at), at)
    return times


CALLBACK_DAG, CALLBACK_WEBHOOK = "octorpa_wait_mapped", "callback-app"
CALLBACK_LIMITS = "1000/second;60000/minute"  # the starts are not what is measured here


def callback_line(n: int, executor: str, report_after: float) -> str:
    from airflow_octorpa.emulator import WebhookSpec
    from airflow_octorpa.triggers.report import DEFAULT_POLL_INTERVAL

    config = default_config()
    config.rate_limits = CALLBACK_LIMITS
    with OctoRpaEmulator(config) as emulator, tempfile.TemporaryDirectory(prefix="octorpa-bench-") as home:
        emulator.state.put_webhook(
            WebhookSpec.reporting_app(CALLBACK_WEBHOOK, SECRET, after=report_after, outputs={"waybill": "SF-1"})
        )
        connection = {
            "conn_type": "octorpa",
            "host": emulator.webhook_url(CALLBACK_WEBHOOK),
            "password": SECRET,
            "extra": {"rate_limits": CALLBACK_LIMITS},
        }
        # On PostgreSQL, whose statistics count the reads, and Airflow's default settings.
        with deployment(
            executor, Path(home), {"octorpa_callbacks": connection}, SETTINGS["default"], postgres=True
        ) as cluster:
            cluster.wait_for_dags(CALLBACK_DAG, timeout=300)
            cluster.trigger(CALLBACK_DAG, "bench", {"n": n})
            cluster.wait_for(
                lambda: (
                    _count(cluster, "wait", "deferred") + _count(cluster, "wait", "success") >= n
                    or _first_report(emulator) is not None
                ),
                60 + 5 * n,
                "the sensors to defer",
            )
            # Reads are counted while every sensor waits and no report has come yet: what waiting
            # costs, apart from the reports' own writes and the clean-up when the DAG run ends.
            waiting_at_once = _count(cluster, "wait", "deferred")
            scans_before, counted_from = variable_scans(cluster), time.time()
            cluster.wait_for(lambda: _first_report(emulator) is not None, report_after + 60, "the first report")
            scans_after, counted_to = variable_scans(cluster, settle=0), time.time()
            index_reads, table_scans = (after - before for after, before in zip(scans_after, scans_before, strict=True))
            reads = index_reads + table_scans
            counted = min(counted_to, _first_report(emulator) or counted_to) - counted_from
            state = cluster.wait_for_run(CALLBACK_DAG, "bench", timeout=report_after + 60 + 10 * n)
            ends = dict(
                cluster._query(
                    "SELECT map_index, end_date FROM task_instance WHERE dag_id = ? AND run_id = 'bench' "
                    "AND task_id = 'wait'",
                    CALLBACK_DAG,
                )
            )
            started = cluster.xcom_values(CALLBACK_DAG, "bench", "trigger")
        runs = {r["flow_process_no"]: r for r in emulator.state.snapshot("runs")}
    latencies = []
    for index, value in started.items():
        reports = runs[value["flow_process_no"]].get("callback", {}).get("reports", [])
        accepted = [r["sent_at"] for r in reports if r.get("status_code") == 200]
        if accepted and ends.get(index) is not None:
            latencies.append(ends[index].timestamp() - accepted[0])
    slowest = p95(latencies)
    polls = waiting_at_once * counted / DEFAULT_POLL_INTERVAL  # the baseline: one read per task per poll
    return (
        f"callback: N={n} reported={len(latencies)} executor={executor} run={state} settings=default "
        f"latency median={statistics.median(latencies):.1f}s p95={slowest:.1f}s; while {waiting_at_once} waited "
        f"{counted:.0f}s: variable-reads={reads} ({reads / counted:.1f}/s, {table_scans} whole-table) "
        f"per-waiting-task-per-{DEFAULT_POLL_INTERVAL:g}s-poll={reads / polls:.2f}"
    )


def _count(cluster: AirflowCluster, task_id: str, state: str) -> int:
    rows = cluster._query(
        "SELECT COUNT(*) FROM task_instance WHERE dag_id = ? AND run_id = 'bench' AND task_id = ? AND state = ?",
        CALLBACK_DAG,
        task_id,
        state,
    )
    return int(rows[0][0]) if rows else 0


def _first_report(emulator: OctoRpaEmulator) -> float | None:
    sent = [r["sent_at"] for run in emulator.state.snapshot("runs") for r in run.get("callback", {}).get("reports", [])]
    return min(sent) if sent else None


def variable_scans(cluster: AirflowCluster, settle: float = 1.5) -> tuple[int, int]:
    """Index reads and whole-table scans of the ``variable`` table so far, as PostgreSQL counts them."""
    time.sleep(settle)  # PostgreSQL publishes a backend's counts within a second of its transaction
    ((index_reads, table_scans),) = cluster._query(
        "SELECT COALESCE(idx_scan, 0), COALESCE(seq_scan, 0) FROM pg_stat_user_tables WHERE relname = 'variable'"
    )
    return int(index_reads), int(table_scans)


def faults_line(n: int = 200) -> str:
    config = default_config()
    config.rate_limits = SCALED_LIMITS
    with OctoRpaEmulator(config) as emulator, tempfile.TemporaryDirectory(prefix="octorpa-bench-") as home:
        cluster = AirflowCluster(Path(home), REPO / "tests" / "dags")
        extra = {"rate_limits": SCALED_LIMITS, "timeout": 2}
        cluster.prepare(
            {
                "octorpa_default": {
                    "conn_type": "octorpa",
                    "host": emulator.webhook_url(WEBHOOK),
                    "password": SECRET,
                    "extra": extra,
                }
            }
        )
        with cluster:
            cluster.start()
            return run_fault_load(cluster, emulator, n=n, run_id="load", seed=5, timeout=60 + 10 * n).line()


def hook_overhead_line(calls: int = 300, rounds: int = 5) -> str:
    import os

    import requests

    from airflow_octorpa.hooks.octorpa import OctoRpaHook

    config = default_config()
    config.rate_limits = "1000000/second"
    with OctoRpaEmulator(config) as emulator:
        url = emulator.webhook_url(WEBHOOK)
        os.environ["AIRFLOW_CONN_OCTORPA_BENCH"] = json.dumps(
            {"conn_type": "octorpa", "host": url, "password": SECRET, "extra": {"rate_limits": "1000000/second"}}
        )
        hook = OctoRpaHook("octorpa_bench")
        params = {"订单号": "SO-BENCH", "数量": 10, "收货地址": "上海市浦东新区世纪大道100号"}
        call = hook.prepare(params)

        def bare() -> None:
            ts = str(int(time.time()))
            body = {"sign": expected_sign(ts, SECRET), "params": params, "timestamp": ts}
            data = json.dumps(body, ensure_ascii=False).encode("utf-8")
            requests.post(url, data=data, headers={"Content-Type": "application/json"}, timeout=30).raise_for_status()

        def timed(fn) -> float:
            started = time.perf_counter()
            for _ in range(calls):
                fn()
            return time.perf_counter() - started

        hook_times, bare_times = [], []
        for _ in range(rounds):  # interleaved, so both see the same machine
            bare_times.append(timed(bare))
            hook_times.append(timed(lambda: hook.send(call)))
    hook_ms = statistics.median(hook_times) / calls * 1000
    bare_ms = statistics.median(bare_times) / calls * 1000
    return f"hook-overhead: hook={hook_ms:.2f}ms bare={bare_ms:.2f}ms per call ratio={hook_ms / bare_ms:.3f}"


def import_overhead_line(repeats: int = 11) -> str:
    """Child CPU time of fresh interpreters; the minimum of interleaved runs is the cost itself,
    the rest being what else the shared machine was doing."""
    import resource

    def cpu(code: str) -> float:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)

    sdk_times, op_times = [], []
    for _ in range(repeats):
        sdk_times.append(cpu("import airflow.sdk"))
        op_times.append(cpu("import airflow.sdk\nfrom airflow_octorpa.operators.octorpa import OctoRpaTriggerOperator"))
    sdk, op = min(sdk_times), min(op_times)
    return f"import-overhead: sdk={sdk:.3f}s sdk+operator={op:.3f}s (CPU, best of {repeats}) ratio={op / sdk:.3f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=45, help="triggers in the burst (default 45)")
    parser.add_argument("--modes", default="worker,deferred", help="slot-hold modes to measure")
    parser.add_argument("--faults-n", type=int, default=200, help="triggers in the fault load test (0: skip)")
    parser.add_argument(
        "--executors", default="local,celery", help="deployments for the burst: local (SQLite), celery (PostgreSQL)"
    )
    parser.add_argument(
        "--no-other-clock", dest="other_clock", action="store_false", help="skip the triggerer=other-clock burst"
    )
    parser.add_argument("--callback-n", type=int, default=200, help="runs waiting at once (0: skip)")
    parser.add_argument("--report-after", type=float, default=240, help="seconds from a run's start to its report")
    parser.add_argument(
        "--settings",
        default="default,tuned",
        help="Airflow settings for each burst: default (Airflow's own) and tuned (scheduler idle sleep 0.2 s)",
    )
    args = parser.parse_args()
    print(import_overhead_line(), flush=True)
    print(hook_overhead_line(), flush=True)
    if args.faults_n:
        print(faults_line(args.faults_n), flush=True)
    if args.callback_n:
        for executor in args.executors.split(","):
            print(callback_line(args.callback_n, executor, args.report_after), flush=True)
    for executor in args.executors.split(","):
        for mode in filter(None, args.modes.split(",")):
            for settings in args.settings.split(","):
                print(rate_limit_line(args.n, mode, executor, settings=settings), flush=True)
            if executor == "local" and mode == "deferred" and args.other_clock:
                if can_run_on_other_clock():
                    print(rate_limit_line(args.n, mode, executor, other_clock=True), flush=True)
                else:
                    print("rate-limit: triggerer=other-clock skipped: unshare --time needs root or CAP_SYS_ADMIN")
    return 0


if __name__ == "__main__":
    sys.exit(main())
