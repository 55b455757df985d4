"""``make test-distributed``: the limits and "never twice" on the CeleryExecutor with PostgreSQL and
Redis, two schedulers and two workers, while workers, schedulers and the triggerer die.

Each scenario prints ``distributed: N=<n> refused=<n> duplicates=<n> lost=<n> ratio=<r>`` and
asserts on what the emulator received.
"""

from __future__ import annotations

import json
import os
import signal
import tempfile
import time
from pathlib import Path

import pytest

from tests_distributed.celery_deployment import celery_deployment, worker

HERE = Path(__file__).resolve().parent
from tests.support.airflow_cluster import component  # noqa: E402  (tests/ is on the path through celery_deployment)
from tests.support.fault_load import account  # noqa: E402
from tests.support.limits_check import SCALED_LIMITS, ideal_seconds, scaled_emulator, worst_windows  # noqa: E402

# The emulator and the connection use the vendor's windows scaled down (limits_check.SCALED_LIMITS).
WEBHOOK, SECRET = "order-processing", "demo-order-secret"
MODES = ("worker", "deferred")
CALLBACK_WEBHOOK = "callback-app"


@pytest.fixture(scope="module", name="emulator")
def _emulator():
    with scaled_emulator() as emulator:
        yield emulator


@pytest.fixture(scope="module")
def cluster(emulator):
    home = Path(tempfile.mkdtemp(prefix="octorpa-distributed-"))
    connection = {
        "conn_type": "octorpa",
        "host": emulator.webhook_url(WEBHOOK),
        "password": SECRET,
        "extra": {"rate_limits": SCALED_LIMITS, "timeout": 2},
    }
    # Its apps report their end to the api-server ([api] base_url) when given a callback URL.
    callbacks = {**connection, "host": emulator.webhook_url(CALLBACK_WEBHOOK)}
    connections = {"octorpa_default": connection, "octorpa_callbacks": callbacks}
    with celery_deployment(home, HERE.parent / "tests" / "dags", connections) as cluster:
        cluster.wait_for_dags(*(f"octorpa_burst_{mode}" for mode in MODES), timeout=300)
        yield cluster


def _start(cluster, emulator, run_id: str, n_per_dag: int, modes=MODES) -> float:
    emulator.state.reset()
    for mode in modes:
        cluster.trigger(f"octorpa_burst_{mode}", run_id, {"n": n_per_dag, "tag": f"{run_id}-{mode}"})
    return time.monotonic()


def _finish(cluster, emulator, run_id: str, n_per_dag: int, modes=MODES, timeout: float = 600) -> dict:
    """Wait for the runs; account for every trigger; check every moving window; print the line."""
    for mode in modes:
        cluster.wait_for_run(f"octorpa_burst_{mode}", run_id, timeout=timeout)
    summaries = [
        account(cluster, emulator, n_per_dag, run_id, f"{run_id}-{mode}", dag_id=f"octorpa_burst_{mode}")
        for mode in modes
    ]
    calls = emulator.state.snapshot("calls")
    arrivals = sorted(c["received_at"] for c in calls)
    n = n_per_dag * len(modes)
    result = {
        "n": n,
        "started": sum(s.started for s in summaries),
        "unknown": sum(s.unknown for s in summaries),
        "duplicates": sum(s.duplicates for s in summaries),
        "lost": sum(s.lost for s in summaries),
        "refused": sum(1 for c in calls if c["status"] != 200),
        "ratio": ideal_seconds(n, SCALED_LIMITS) / (arrivals[-1] - arrivals[0]) if len(arrivals) > 1 else 0.0,
        "worst_windows": worst_windows(arrivals, SCALED_LIMITS),
    }
    print(
        f"distributed: N={n} refused={result['refused']} duplicates={result['duplicates']} lost={result['lost']} "
        f"ratio={result['ratio']:.3f} scenario={run_id} started={result['started']} unknown={result['unknown']}"
    )
    return result


def _assert_limits_and_once(result: dict) -> None:
    assert result["duplicates"] == 0, result
    assert result["lost"] == 0, result
    assert result["started"] + result["unknown"] == result["n"], result
    assert all(worst <= amount for worst, amount in result["worst_windows"].values()), result


def _hostnames(cluster, run_id: str) -> set[str]:
    rows = cluster._query(
        "SELECT DISTINCT hostname FROM task_instance WHERE run_id = ? AND task_id = 'trigger'", run_id
    )
    return {row[0] for row in rows}


@pytest.mark.timeout(900)
def test_burst_from_two_dags_on_both_workers(cluster, emulator):
    _start(cluster, emulator, "burst", 30)
    result = _finish(cluster, emulator, "burst", 30)

    _assert_limits_and_once(result)
    assert result["refused"] == 0 and result["started"] == 60, result
    assert {"worker-1", "worker-2"} <= _hostnames(cluster, "burst")  # both workers took tasks
    for mode in MODES:  # each XCom names its own run
        runs = {r["flow_process_no"]: r["params"]["订单号"] for r in emulator.state.snapshot("runs")}
        for index, value in cluster.xcom_values(f"octorpa_burst_{mode}", "burst", "trigger").items():
            assert runs[value["flow_process_no"]] == f"burst-{mode}-{index:03d}"


@pytest.mark.timeout(900)
def test_a_worker_killed_mid_call_and_mid_hold(cluster, emulator):
    _start(cluster, emulator, "worker-dies", 15)
    cluster.wait_for(lambda: len(emulator.state.snapshot("calls")) >= 8, 300, "the first rounds of calls")
    # A worker-mode task keeps its slot (and stays running) on its worker for the hold; a deferred one
    # may leave for the triggerer at any moment, so what died is read after the kill.
    cluster.wait_for(
        lambda: cluster._query(
            "SELECT 1 FROM task_instance WHERE run_id = 'worker-dies' AND state = 'running' AND hostname = 'worker-1' "
            "AND dag_id = 'octorpa_burst_worker'"
        ),
        120,
        "a worker-mode trigger task running on worker-1",
    )
    cluster.kill("worker-1")
    killed = set(
        cluster._query(
            "SELECT dag_id, map_index FROM task_instance WHERE run_id = 'worker-dies' AND task_id = 'trigger' "
            "AND state = 'running' AND hostname = 'worker-1'"
        )
    )
    try:
        result = _finish(cluster, emulator, "worker-dies", 15)
    finally:
        cluster.start_component(worker("worker-1"))
    _assert_limits_and_once(result)
    # The tasks that died with the worker were tried again elsewhere, and no call was sent twice.
    retried = set(
        cluster._query(
            "SELECT dag_id, map_index FROM task_instance WHERE run_id = 'worker-dies' AND task_id = 'trigger' "
            "AND try_number > 1"
        )
    )
    assert killed and killed <= retried, (killed, retried)
    # "unknown" is a call whose worker died after recording it and before its answer: the request may
    # never have left (killed before the first byte), but none was sent twice.
    arrived = len(emulator.state.snapshot("calls"))
    assert result["started"] + result["refused"] <= arrived <= result["started"] + result["unknown"] + result["refused"]


@pytest.mark.timeout(900)
def test_a_scheduler_killed_mid_burst(cluster, emulator):
    _start(cluster, emulator, "scheduler-dies", 15)
    cluster.wait_for(lambda: len(emulator.state.snapshot("calls")) >= 5, 300, "the first calls")
    cluster.kill("scheduler-1")
    result = _finish(cluster, emulator, "scheduler-dies", 15)
    _assert_limits_and_once(result)
    assert result["refused"] == 0 and result["started"] == 30, result


@pytest.mark.timeout(900)
def test_the_triggerer_restarted_during_deferred_holds(cluster, emulator):
    # The new triggerer is on the same host: it ends each hold when the worker's would have ended.
    _start(cluster, emulator, "triggerer-restarts", 20, modes=("deferred",))
    cluster.wait_for(
        lambda: (
            len(
                cluster._query("SELECT 1 FROM task_instance WHERE run_id = 'triggerer-restarts' AND state = 'deferred'")
            )
            >= 3
        ),
        300,
        "deferred holds",
    )
    calls_before = len(emulator.state.snapshot("calls"))
    cluster.kill("triggerer")
    cluster.start_component(component("triggerer"))
    result = _finish(cluster, emulator, "triggerer-restarts", 20, modes=("deferred",))
    _assert_limits_and_once(result)
    assert result["refused"] == 0 and result["started"] == 20, result
    assert len(emulator.state.snapshot("calls")) == 20 >= calls_before  # no call repeated


@pytest.mark.timeout(900)
def test_runs_report_through_the_api_server_and_mapped_waits_survive_a_worker_and_the_triggerer(cluster, emulator):
    """Celery: mapped trigger tasks start runs whose apps report to the api-server 45 s later; the
    sensors wait deferred in the triggerer. A worker is killed and the triggerer restarted while
    they wait: every wait still ends with its own run's outputs, none was started twice."""
    from airflow_octorpa.emulator import WebhookSpec

    n = 8
    emulator.state.reset()
    emulator.state.put_webhook(
        WebhookSpec.reporting_app(CALLBACK_WEBHOOK, SECRET, after=45, outputs={"waybill": "SF-1"})
    )
    cluster.wait_for_dags("octorpa_wait_mapped", timeout=300)
    cluster.trigger("octorpa_wait_mapped", "reports", {"n": n})
    # Every run started and every sensor waiting in the triggerer, the reports still to come.
    cluster.wait_for(
        lambda: _states(cluster, "trigger") == {"success": n} and _states(cluster, "wait") == {"deferred": n},
        300,
        "all runs started and all sensors deferred",
    )
    assert not any(r.get("callback", {}).get("reports") for r in emulator.state.snapshot("runs"))
    cluster.kill("worker-1")
    cluster.kill("triggerer")
    time.sleep(3)
    cluster.start_component(component("triggerer"))
    try:
        assert cluster.wait_for_run("octorpa_wait_mapped", "reports", timeout=600) == "success", cluster.log_tail()
    finally:
        cluster.start_component(worker("worker-1"))
    runs = emulator.state.snapshot("runs")
    assert sorted(r["params"]["订单号"] for r in runs) == [f"reports-{i:03d}" for i in range(n)]  # each once
    reports = [report for run in runs for report in run["callback"]["reports"]]
    assert [report["status_code"] for report in reports] == [200] * n
    # Each sensor returned its own run's report, and the outputs reached the task after them.
    started = cluster.xcom_values("octorpa_wait_mapped", "reports", "trigger")
    waited = cluster.xcom_values("octorpa_wait_mapped", "reports", "wait")
    assert {i: v["flow_process_no"] for i, v in waited.items()} == {i: v["flow_process_no"] for i, v in started.items()}
    assert all(v["status"] == "succeeded" and v["outputs"] == {"waybill": "SF-1"} for v in waited.values())
    assert cluster.xcom_values("octorpa_wait_mapped", "reports", "collect") == {-1: ["SF-1"] * n}


def _states(cluster, task_id: str) -> dict[str, int]:
    rows = cluster._query(
        "SELECT state, COUNT(*) FROM task_instance WHERE dag_id = 'octorpa_wait_mapped' AND run_id = 'reports' "
        "AND task_id = ? GROUP BY state",
        task_id,
    )
    return {state: count for state, count in rows}


@pytest.mark.timeout(900)
def test_a_cancel_asked_while_a_worker_is_dead_still_reaches_the_apps(cluster, emulator):
    """Celery: two runs report progress while their waits wait (one deferred, one in reschedule mode,
    whose pokes run on the workers). A worker is killed, and a user marks both waits failed while it
    is down: each app hears the cancel at its next request and its ``failed`` report is accepted."""
    from airflow_octorpa.emulator import WebhookSpec
    from tests.support.airflow_rest import mark

    emulator.state.reset()
    emulator.state.put_webhook(WebhookSpec.reporting_app(CALLBACK_WEBHOOK, SECRET, after=600, ask_every=1))
    dags = {"octorpa_cancel": "deferred", "octorpa_cancel_reschedule": "up_for_reschedule"}
    cluster.wait_for_dags(*dags, timeout=300)
    for dag_id in dags:
        cluster.trigger(dag_id, "celery-cancel", {})

    def waiting() -> bool:
        runs = emulator.state.snapshot("runs")
        states = {dag_id: cluster.task_states(dag_id, "celery-cancel").get(("wait", -1)) for dag_id in dags}
        return states == dags and len(runs) == 2 and all(len(run["callback"]["progress"]) >= 2 for run in runs)

    cluster.wait_for(waiting, 300, "both waits waiting while their apps report progress")
    cluster.kill("worker-1")
    try:
        for dag_id in dags:
            mark(cluster, dag_id, "celery-cancel", "wait", "failed")
        cluster.wait_for(
            lambda: all(run["callback"]["cancelled_at"] for run in emulator.state.snapshot("runs")),
            120,
            "both apps to hear the cancel",
        )
        cluster.wait_for(
            lambda: all(run["callback"]["reports"] for run in emulator.state.snapshot("runs")), 30, "their reports"
        )
    finally:
        cluster.start_component(worker("worker-1"))
    runs = emulator.state.snapshot("runs")
    assert [[(r["status"], r["status_code"]) for r in run["callback"]["reports"]] for run in runs] == [
        [("failed", 200)]
    ] * 2
    heard = [run["callback"]["cancelled_at"] - run["callback"]["progress"][0]["sent_at"] for run in runs]
    print(f"distributed: cancel apps=2 heard_after_first_progress={max(heard):.1f}s worker_killed=worker-1")


@pytest.mark.timeout(900)
def test_two_triggerers_one_frozen_then_one_killed_carry_each_inbox_report_once_in_order(cluster):
    """Celery, HA triggerers: an inbox's watcher runs in one of two triggerers. That one is frozen
    (SIGSTOP) with reports arriving: the other takes the watcher over, and when the frozen one
    thaws both run it for a moment. Then the one running it is killed (kill -9) right after two
    answers. Every report answered 200 schedules exactly once, in order."""
    import requests

    from tests.support.airflow_cluster import NO_LOG_SERVER, Component

    uri, dag_id = "octorpa://inbox/test-orders", "octorpa_inbox_consumer"
    second = Component("triggerer-2", ("triggerer", *NO_LOG_SERVER), {"OCTORPA_WORKER_NAME": "triggerer-2"})
    cluster.start_component(second)
    frozen: list[str] = []
    try:
        cluster.wait_for_dags(dag_id, timeout=300)
        url = cluster.create_inbox("test-orders")

        def send(n: int) -> None:
            answer = requests.post(url, json={"status": "succeeded", "outputs": {"n": n}, "report_id": f"o-{n}"},
                                   timeout=30)  # fmt: skip
            assert answer.status_code == 200, answer.text

        def events() -> list[int]:
            rows = cluster._query(
                "SELECT e.extra::text FROM asset_event e JOIN asset a ON a.id = e.asset_id WHERE a.uri = ? "
                "ORDER BY e.id", uri,
            )  # fmt: skip
            return [json.loads(extra)["payload"]["outputs"]["n"] for (extra,) in rows]

        def holder() -> str | None:
            rows = cluster._query(
                "SELECT j.hostname FROM asset_watcher w JOIN asset a ON a.id = w.asset_id "
                "JOIN trigger t ON t.id = w.trigger_id JOIN job j ON j.id = t.triggerer_id WHERE a.uri = ?", uri,
            )  # fmt: skip
            return rows[0][0] if rows else None

        cluster.wait_for(lambda: holder() is not None, 180, "a triggerer to run the inbox's watcher")
        for n in (1, 2, 3):
            send(n)
        cluster.wait_for(lambda: len(events()) == 3, 120, "the first reports' asset events")
        first = holder()
        frozen.append(second.name if first == "triggerer-2" else "triggerer")
        os.killpg(cluster.processes[frozen[0]].pid, signal.SIGSTOP)
        for n in (4, 5, 6):
            send(n)
        cluster.wait_for(lambda: holder() not in (None, first), 180, "the other triggerer to take the watcher over")
        cluster.wait_for(lambda: len(events()) >= 6, 120, "the reports sent while one triggerer was frozen")
        os.killpg(cluster.processes[frozen.pop()].pid, signal.SIGCONT)  # it still runs its copy for a moment
        for n in (7, 8):
            send(n)
        cluster.wait_for(lambda: len(events()) >= 8, 120, "the reports sent after it thawed")
        # Then the one running the watcher is killed right after two answers: the other emits them.
        cluster.wait_for(lambda: holder() is not None, 60, "a triggerer to hold the watcher")
        killed = second.name if holder() == "triggerer-2" else "triggerer"
        for n in (9, 10):
            send(n)
        cluster.kill(killed)
        send(11)
        cluster.wait_for(lambda: len(events()) >= 11, 180, "the reports sent around the kill")
        time.sleep(10)  # a report emitted twice would be stored by now
        assert events() == list(range(1, 12))

        def runs() -> list[tuple[str, str]]:
            return cluster._query("SELECT run_id, state FROM dag_run WHERE dag_id = ? ORDER BY id", dag_id)

        queued = "SELECT COUNT(*) FROM asset_dag_run_queue WHERE target_dag_id = ?"
        cluster.wait_for(
            lambda: cluster._query(queued, dag_id) == [(0,)] and runs() and all(s in ("success", "failed") for _, s in runs()),
            300,
            "the DAG runs the inbox's events scheduled",
        )  # fmt: skip
        loaded = [pair for run_id, _ in runs() for pair in cluster.xcom_values(dag_id, run_id, "load")[-1]]
        assert [n for n, _ in loaded] == list(range(1, 12)), loaded  # each once, in order (PostgreSQL locks rows)
        print(f"distributed: inbox reports=11 events={len(events())} runs={len(runs())} frozen_triggerer={first} "
              f"killed={killed}")  # fmt: skip
    finally:
        for name in frozen:
            os.killpg(cluster.processes[name].pid, signal.SIGCONT)
        if second.name in cluster.processes:
            cluster.kill(second.name)
        if "triggerer" not in cluster.processes:  # the module's own, for what runs after
            cluster.start_component(component("triggerer"))
