"""Through real Airflow components: a burst from two DAGs stays inside the limits, and a worker
killed after its call does not trigger twice.

Airflow 2 refuses the LocalExecutor on SQLite, so there the components share a throwaway
PostgreSQL (installed from Debian's packages where missing, as ``make test-distributed`` does).
"""

from __future__ import annotations

import contextlib
import json
import re
import tempfile
import time
import uuid
from pathlib import Path

import pytest
import requests

from airflow_octorpa.rate_limit import hold_seconds
from tests.support.airflow_cluster import (
    OTHER_CLOCK,
    AirflowCluster,
    can_run_on_other_clock,
    component,
    kill,
    pids_whose,
)
from tests.support.airflow_helpers import AIRFLOW_V_3, AIRFLOW_VERSION
from tests.support.airflow_rest import API_PASSWORD, api_headers, mark
from tests.support.callback_server import BAD_REPORTS, send_bad_reports
from tests.support.fault_load import run_fault_load
from tests.support.limits_check import SCALED_LIMITS, min_gap, scaled_emulator, within
from tests.support.settings import ORDER_SECRET, ORDER_WEBHOOK

N_PER_DAG = 24
# Airflow 3.0's task supervisor marks a task whose process died of a signal FAILED, without retries.
KILLED_TASK_IS_RETRIED = AIRFLOW_VERSION.release[:2] != (3, 0)


@pytest.fixture(scope="module", name="scaled_emulator")
def _scaled_emulator():
    with scaled_emulator() as emulator:
        yield emulator


@pytest.fixture(scope="module")
def cluster(scaled_emulator):
    """One set of Airflow components for the module's tests, stopped whatever happens."""
    with contextlib.ExitStack() as stack:
        yield stack.enter_context(_cluster(scaled_emulator, _database(stack)))


def _database(stack: contextlib.ExitStack) -> str | None:
    """The components' metadata database: SQLite in their home, or PostgreSQL for Airflow 2."""
    if AIRFLOW_V_3:
        return None
    from tests.support.services import PostgresServer, ensure_installed

    if (impossible := ensure_installed({"initdb": "postgresql"})) is not None:
        pytest.skip(f"Airflow 2 runs the LocalExecutor only on PostgreSQL or MySQL: {impossible}")
    return stack.enter_context(PostgresServer()).url


@contextlib.contextmanager
def _cluster(scaled_emulator, sql_alchemy_conn: str | None):
    home = Path(tempfile.mkdtemp(prefix="octorpa-cluster-"))
    cluster = AirflowCluster(
        home,
        Path(__file__).parent / "dags",
        plugins_folder=Path(__file__).parent / "plugins",
        sql_alchemy_conn=sql_alchemy_conn,
        # Airflow 2's REST API with a password, as a user's script calls it (3.x: the simple auth manager's).
        extra_env=(
            # An admin, and a user who may read no DAG (the run's page must ask the auth manager).
            {"AIRFLOW__CORE__AUTH_MANAGER": "octorpa_test_auth_manager.OneUserLockedOutAuthManager",
             "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin,outsider:viewer"}
            if AIRFLOW_V_3
            else {"AIRFLOW__API__AUTH_BACKENDS": "airflow.api.auth.backend.basic_auth"}
        ),
    )  # fmt: skip
    url = scaled_emulator.webhook_url(ORDER_WEBHOOK)
    cluster.prepare(
        {
            # A 2 s client timeout: the injected late answers (5 s) are lost, as a slow network would lose them.
            "octorpa_default": {
                "conn_type": "octorpa",
                "host": url,
                "password": ORDER_SECRET,
                "extra": {"rate_limits": SCALED_LIMITS, "timeout": 2},
            },
            # An app that reports its end (its webhook is set up by the callback test).
            "octorpa_callbacks": {
                "conn_type": "octorpa",
                "host": scaled_emulator.webhook_url("callback-app"),
                "password": ORDER_SECRET,
                "extra": {"rate_limits": SCALED_LIMITS},
            },
            # One call per 20 s from one slot: a 20 s hold after the call, time to kill the worker.
            "octorpa_slow": {
                "conn_type": "octorpa",
                "host": url,
                "password": ORDER_SECRET,
                "extra": {"rate_limits": "1/20 seconds", "pool_size": 1},
            },
        }
    )
    if not AIRFLOW_V_3:
        cluster.cli("users", "create", "-r", "Admin", "-u", "admin", "-p", API_PASSWORD, "-e", "a@example.com",
                    "-f", "Ada", "-l", "Admin")  # fmt: skip
        # A login without any DAG's permission (the run's page must refuse it).
        cluster.cli("sync-perm")  # the permissions a role is given exist once synced
        cluster.cli("roles", "create", "NoDags")
        cluster.cli("roles", "add-perms", "NoDags", "-a", "can_read", "-r", "Website")
        cluster.cli("users", "create", "-r", "NoDags", "-u", "outsider", "-p", API_PASSWORD, "-e", "o@example.com",
                    "-f", "Otto", "-l", "Outsider")  # fmt: skip
    with cluster:
        cluster.start()
        yield cluster


@pytest.mark.timeout(600)
def test_burst_from_two_dags_is_delivered_once_each_and_never_refused(scaled_emulator, cluster):
    scaled_emulator.state.reset()
    cluster.wait_for_dags("octorpa_burst_worker", "octorpa_burst_deferred")
    started = time.monotonic()
    for mode in ("worker", "deferred"):
        cluster.trigger(f"octorpa_burst_{mode}", "burst", {"n": N_PER_DAG, "tag": mode})
    states = {
        mode: cluster.wait_for_run(f"octorpa_burst_{mode}", "burst", timeout=420) for mode in ("worker", "deferred")
    }
    took = time.monotonic() - started
    assert states == {"worker": "success", "deferred": "success"}, cluster.log_tail()
    xcoms = {mode: cluster.xcom_values(f"octorpa_burst_{mode}", "burst", "trigger") for mode in ("worker", "deferred")}
    for mode in ("worker", "deferred"):  # a downstream task received every result as a dict
        assert cluster.xcom_values(f"octorpa_burst_{mode}", "burst", "received") == {-1: N_PER_DAG}

    calls = scaled_emulator.state.snapshot("calls")
    runs = scaled_emulator.state.snapshot("runs")
    orders = [r["params"]["订单号"] for r in runs]
    expected = {f"{mode}-{i:03d}" for mode in ("worker", "deferred") for i in range(N_PER_DAG)}
    assert [c for c in calls if c["status"] != 200] == []  # none refused
    assert len(orders) == len(set(orders)) == 2 * N_PER_DAG  # none arrived twice
    assert set(orders) == expected  # every trigger started a run
    for mode in ("worker", "deferred"):  # each task's XCom names its own run
        assert sorted(xcoms[mode]) == list(range(N_PER_DAG))
    by_number = {r["flow_process_no"]: r["params"]["订单号"] for r in runs}
    for mode in ("worker", "deferred"):
        for index, value in xcoms[mode].items():
            assert by_number[value["flow_process_no"]] == f"{mode}-{index:03d}"
    # No moving window ever held more than the limits (the emulator refused none, and this says why).
    assert within(sorted(c["received_at"] for c in calls), SCALED_LIMITS)
    assert min_gap([c["received_at"] for c in calls], 5) >= hold_seconds(SCALED_LIMITS, 5)
    # The triggerer shares the workers' host, so each deferred hold ended when the worker's would.
    assert "to the end of the hold the worker began" in _task_log(cluster, "octorpa_burst_deferred", "burst")
    print(f"{2 * N_PER_DAG} triggers through the scheduler in {took:.1f} s")


@pytest.mark.timeout(600)
@pytest.mark.skipif(not can_run_on_other_clock(), reason="needs unshare --time (Linux 5.6+, root or CAP_SYS_ADMIN)")
def test_a_triggerer_on_another_clock_times_each_hold_itself(scaled_emulator, cluster):
    """A triggerer whose monotonic clock is not the workers' (as on another machine; here a time
    namespace 100000 s ahead, where the worker's deadline reads as long past) waits each hold's
    whole rest itself: no slot is handed on before its hold is over."""
    scaled_emulator.state.reset()
    cluster.wait_for_dags("octorpa_burst_deferred")
    n = 10
    cluster.kill("triggerer")
    cluster.start_component(component("triggerer", launcher=OTHER_CLOCK))
    try:
        cluster.trigger("octorpa_burst_deferred", "other-clock", {"n": n, "tag": "other-clock"})
        state = cluster.wait_for_run("octorpa_burst_deferred", "other-clock", timeout=300)
    finally:
        cluster.kill("triggerer")
        cluster.start_component(component("triggerer"))
    assert state == "success", cluster.log_tail()
    calls = scaled_emulator.state.snapshot("calls")
    assert [c for c in calls if c["status"] != 200] == [] and len(calls) == n
    # A trigger that trusted the worker's deadline would fire at once and hand its slot on early.
    assert min_gap([c["received_at"] for c in calls], 5) >= hold_seconds(SCALED_LIMITS, 5)
    logs = _task_log(cluster, "octorpa_burst_deferred", "other-clock")
    assert "timed from here" in logs and "to the end of the hold the worker began" not in logs


@pytest.mark.timeout(600)
def test_a_pool_that_does_not_count_deferred_tasks_keeps_the_holds_in_the_workers(scaled_emulator, cluster):
    """`airflow pools set` and the UI's checkbox make pools that do not count deferred tasks: a
    deferred hold there would free its slot at once. Deferrable tasks keep their holds in the
    worker instead (on Airflow 3 the scheduler publishes the pool when the DAG run starts)."""
    scaled_emulator.state.reset()
    cluster.wait_for_dags("octorpa_burst_deferred")
    n = 12
    cluster.cli("pools", "set", "octorpa", "5", "Octopus RPA webhook calls")  # include_deferred off
    try:
        cluster.trigger("octorpa_burst_deferred", "uncounted", {"n": n, "tag": "uncounted"})
        state = cluster.wait_for_run("octorpa_burst_deferred", "uncounted", timeout=300)
    finally:
        cluster.cli("pools", "set", "octorpa", "5", "Octopus RPA webhook calls", "--include-deferred")
    assert state == "success", cluster.log_tail()
    calls = scaled_emulator.state.snapshot("calls")
    assert [c for c in calls if c["status"] != 200] == [] and len(calls) == n
    assert within(sorted(c["received_at"] for c in calls), SCALED_LIMITS)
    assert min_gap([c["received_at"] for c in calls], 5) >= hold_seconds(SCALED_LIMITS, 5)
    logs = _task_log(cluster, "octorpa_burst_deferred", "uncounted")
    assert "the pool 'octorpa' does not count deferred tasks" in logs and "(deferred)" not in logs


@pytest.mark.timeout(300)
def test_a_dagrun_timeout_during_a_deferred_hold_notes_that_the_run_started(scaled_emulator, cluster):
    """dagrun_timeout cancels a deferred hold and skips the task although its run started (a slot
    freed early, as the README says); the provider's listener notes the started run on the task."""
    scaled_emulator.state.reset()
    cluster.wait_for_dags("octorpa_dagrun_timeout")
    cluster.trigger("octorpa_dagrun_timeout", "timeout", {})
    assert cluster.wait_for_run("octorpa_dagrun_timeout", "timeout", timeout=180) == "failed", cluster.log_tail()
    (run,) = scaled_emulator.state.snapshot("runs")
    assert cluster.task_states("octorpa_dagrun_timeout", "timeout") == {("trigger", -1): "skipped"}
    where = (
        "ti_id = (SELECT id FROM task_instance WHERE dag_id = ? AND run_id = ?)"
        if AIRFLOW_V_3
        else ("dag_id = ? AND run_id = ?")
    )
    (note,) = cluster._query(
        f"SELECT content FROM task_instance_note WHERE {where}", "octorpa_dagrun_timeout", "timeout"
    )
    assert f"flowProcessNo={run['flow_process_no']} STARTED" in note[0] and "ended skipped" in note[0]


@pytest.mark.timeout(600)
def test_worker_killed_after_its_call_is_not_triggered_twice_but_a_clear_is(scaled_emulator, cluster):
    _start_and_wait_for_the_hold(scaled_emulator, cluster, "octorpa_crash", "crash")
    # The run started and was recorded; the task process (titled 'airflow worker -- <ti id>') dies
    # holding its slot.
    # The DAG's retries change before the retry (as a DAG reading them from a Variable would see):
    # the retry must still find the run it started, by the scheduler's max_tries.
    (cluster.home / "octorpa_crash_retries").write_text("3")
    (task_pid,) = pids_whose("cmdline", _task_process_title(cluster, "octorpa_crash", "crash"))
    kill(task_pid)

    try_number = "SELECT try_number FROM task_instance WHERE dag_id = 'octorpa_crash' AND run_id = 'crash'"
    if not KILLED_TASK_IS_RETRIED:  # Airflow 3.0 fails a task whose process was killed, without its retries
        assert cluster.wait_for_run("octorpa_crash", "crash", timeout=180) == "failed", cluster.log_tail()
        assert cluster._query(try_number)[0][0] == 1
        assert len(scaled_emulator.state.snapshot("calls")) == len(scaled_emulator.state.snapshot("runs")) == 1
    else:
        assert cluster.wait_for_run("octorpa_crash", "crash", timeout=180) == "success", cluster.log_tail()
        (first,) = scaled_emulator.state.snapshot("runs")
        assert len(scaled_emulator.state.snapshot("calls")) == 1  # the retry sent nothing
        xcom = cluster.xcom_values("octorpa_crash", "crash", "trigger")[-1]
        assert xcom["flow_process_no"] == first["flow_process_no"]
        assert cluster._query(try_number)[0][0] == 2

    # Clearing the task is a deliberate new trigger: it starts a second run.
    # (The DAG's only task; Airflow 3.3's --task-regex selects nothing here.)
    cluster.cli("tasks", "clear", "octorpa_crash", "--yes")
    cluster.wait_for(lambda: len(scaled_emulator.state.snapshot("runs")) == 2, 180, "the cleared task's call")
    assert cluster.wait_for_run("octorpa_crash", "crash", timeout=180) == "success", cluster.log_tail()
    second = scaled_emulator.state.snapshot("runs")[1]
    assert cluster.xcom_values("octorpa_crash", "crash", "trigger")[-1]["flow_process_no"] == second["flow_process_no"]
    (cluster.home / "octorpa_crash_retries").unlink()


@pytest.mark.timeout(300)
@pytest.mark.skipif(not KILLED_TASK_IS_RETRIED, reason="Airflow 3.0 fails a killed task without its retries")
def test_a_task_cleared_while_it_runs_triggers_anew(scaled_emulator, cluster):
    """A clear is a new trigger even when the task is running: Airflow keeps its max_tries (and before
    3.2 its DAG run's clear_number) then, so the task's on_kill marks its record from the
    'restarting' state."""
    _start_and_wait_for_the_hold(scaled_emulator, cluster, "octorpa_running_clear", "running")
    cluster.cli("tasks", "clear", "octorpa_running_clear", "--yes")
    cluster.wait_for(lambda: len(scaled_emulator.state.snapshot("runs")) == 2, 180, "the cleared task's call")
    assert cluster.wait_for_run("octorpa_running_clear", "running", timeout=180) == "success", cluster.log_tail()
    second = scaled_emulator.state.snapshot("runs")[1]
    xcom = cluster.xcom_values("octorpa_running_clear", "running", "trigger")[-1]
    assert xcom["flow_process_no"] == second["flow_process_no"]


@pytest.mark.timeout(400)
def test_a_run_reports_to_the_api_server_and_the_waiting_task_gets_its_outputs(scaled_emulator, cluster):
    """The app's report reaches the plugin route on the real api-server (Airflow 2: the webserver,
    CSRF-exempt, setting no session cookie), with no Airflow login, lands in the metadata database,
    and the deferred sensor in the real triggerer hands the outputs on. The web component is
    restarted between the report and the wait's end: the report survives it."""
    from airflow_octorpa.emulator import WebhookSpec

    scaled_emulator.state.reset()
    scaled_emulator.state.put_webhook(
        WebhookSpec.reporting_app("callback-app", ORDER_SECRET, after=3, outputs={"waybill": "SF-42"}, fault="twice")
    )
    cluster.wait_for_dags("octorpa_wait")
    cluster.trigger("octorpa_wait", "report", {})
    cluster.wait_for(
        lambda: [r.get("status_code") for r in _callback_reports(scaled_emulator)] == [200, 200],
        180,
        "the app's report and its repeat",
    )
    cluster.wait_for(
        lambda: cluster.task_states("octorpa_wait", "report").get(("trigger", -1)) == "success",
        120,
        "the trigger task to end its slot hold",
    )
    # The restart falls in the wait, not in its start: Airflow 3 fails a task that starts while the
    # api-server is down, and a busy machine can take longer to restart it than the retries last.
    cluster.wait_for(
        lambda: cluster.task_states("octorpa_wait", "report").get(("wait", -1)) in ("deferred", "success"),
        120,
        "the wait to defer",
    )
    web = "api-server" if AIRFLOW_V_3 else "webserver"
    cluster.kill(web)
    cluster.start_component(component(web))
    cluster.wait_for(cluster._api_healthy, 180, f"the {web} to answer again")
    assert cluster.wait_for_run("octorpa_wait", "report", timeout=240) == "success", cluster.log_tail()
    assert cluster.xcom_values("octorpa_wait", "report", "ship") == {-1: "SF-42"}
    (run,) = scaled_emulator.state.snapshot("runs")
    assert cluster.xcom_values("octorpa_wait", "report", "wait")[-1]["flow_process_no"] == run["flow_process_no"]
    # A forged token is refused by the route itself, and no other Airflow route opened up.
    forged = f"http://127.0.0.1:{cluster.port}/octorpa/v1/callbacks/{'F' * 43}"
    answer = requests.post(forged, json={"status": "succeeded"}, timeout=10)
    assert answer.status_code == 404 and answer.json()["accepted"] is False
    assert "set-cookie" not in {name.lower() for name in answer.headers}  # a report opens no web session
    api = "/api/v2/variables" if AIRFLOW_V_3 else "/api/v1/variables"
    assert requests.get(f"http://127.0.0.1:{cluster.port}{api}", timeout=10).status_code in (401, 403)


@pytest.mark.timeout(400)
def test_mapped_waits_hold_no_rate_limit_slot_and_bad_reports_change_nothing(scaled_emulator, cluster):
    """Five mapped waits in a DAG whose default_args name the ``octorpa`` pool run in default_pool,
    so a trigger task after them starts while they wait. Meanwhile reports the database or the
    triggerer could not carry reach the real api-server (Airflow 2: the webserver): 400 each, and
    the app's real report still completes its wait. No component's log holds a token."""
    from airflow_octorpa.emulator import WebhookSpec

    scaled_emulator.state.reset()
    scaled_emulator.state.put_webhook(
        WebhookSpec.reporting_app("callback-app", ORDER_SECRET, after=30, outputs={"waybill": "SF-P"})
    )
    cluster.wait_for_dags("octorpa_wait_pooled")
    cluster.trigger("octorpa_wait_pooled", "pooled", {})
    cluster.wait_for(lambda: len(_callback_urls(scaled_emulator)) == 5, 180, "the five mapped calls")
    url = _callback_urls(scaled_emulator)[0]
    assert send_bad_reports(url) == dict.fromkeys(BAD_REPORTS, 400)
    assert cluster.wait_for_run("octorpa_wait_pooled", "pooled", timeout=300) == "success", cluster.log_tail()
    waited = cluster.xcom_values("octorpa_wait_pooled", "pooled", "wait")
    assert sorted(waited) == list(range(5)) and all(v["outputs"] == {"waybill": "SF-P"} for v in waited.values())
    pools = cluster._query(
        "SELECT DISTINCT pool FROM task_instance WHERE dag_id = ? AND task_id = 'wait'", "octorpa_wait_pooled"
    )
    assert pools == [("default_pool",)]
    (late_start,) = cluster._query(
        "SELECT start_date FROM task_instance WHERE dag_id = ? AND task_id = 'late'", "octorpa_wait_pooled"
    )[0]
    first_end = min(row[0] for row in cluster._query(
        "SELECT end_date FROM task_instance WHERE dag_id = ? AND task_id = 'wait'", "octorpa_wait_pooled"
    ))  # fmt: skip
    assert str(late_start) < str(first_end), (late_start, first_end)  # it ran while every wait waited
    secrets_ = [u[-43:] for u in _callback_urls(scaled_emulator)]
    for log in [*(cluster.home / "component-logs").glob("*.log"), *(cluster.home / "logs").rglob("*.log")]:
        text = log.read_text(errors="replace")
        assert not [s for s in secrets_ if s in text], f"a callback token is in {log}"


def _callback_urls(emulator) -> list[str]:
    return [
        r["params"]["airflow_callback_url"]
        for r in emulator.state.snapshot("runs")
        if "airflow_callback_url" in r["params"]
    ]


@pytest.mark.timeout(500)
def test_a_user_marking_a_deferred_wait_failed_asks_the_run_to_stop_and_the_app_hears_it(scaled_emulator, cluster):
    """A user marks the deferred wait failed: the run is asked to stop (2.11: by the real triggerer's
    cancelled trigger, which reads that its task ended, as no listener hears a user there; 3.x: by
    the api-server's listener). The app hears it at its next progress report and reports
    ``failed``; the DAG run stays open, so its end is not why. The wait's log has the progress."""
    run = _app_running_while("octorpa_cancel", "cancel", "deferred", scaled_emulator, cluster)
    cluster.wait_for(lambda: " progress #" in _wait_logs(cluster, "octorpa_cancel"), 60, "the trigger to log progress")
    mark(cluster, "octorpa_cancel", "cancel", "wait", "failed")
    _app_heard_the_cancel(scaled_emulator, cluster)
    logs = _wait_logs(cluster, "octorpa_cancel")
    assert " 步 (step " in logs, cluster.log_tail()
    _the_run_page_shows_the_cancel(cluster, run)
    if not AIRFLOW_V_3:  # the trigger asked: nothing else hears a user on 2.11 (3.x: the api-server's listener)
        asked = (
            f"Asked Octopus RPA run flowProcessNo={run['flow_process_no']} to stop (the waiting task was set to failed)"
        )
        assert asked in logs, cluster.log_tail()


@pytest.mark.skipif(not AIRFLOW_V_3, reason="Airflow 2.11 tells no listener when a user marks a task (see the docs)")
@pytest.mark.timeout(500)
def test_a_user_marking_a_reschedule_wait_failed_asks_the_run_to_stop(scaled_emulator, cluster):
    """Between two pokes no process of the wait runs: the api-server's listener asks the run to stop,
    finding the report through the wait's rendered ``started_run``."""
    _app_running_while("octorpa_cancel_reschedule", "mark", "up_for_reschedule", scaled_emulator, cluster)
    mark(cluster, "octorpa_cancel_reschedule", "mark", "wait", "failed")
    _app_heard_the_cancel(scaled_emulator, cluster)
    api_server = (cluster.home / "component-logs" / "api-server.log").read_text(errors="replace")
    assert "a user marked wait failed" in api_server, cluster.log_tail()


def _app_running_while(dag_id: str, run_id: str, wait_state: str, emulator, cluster) -> dict:
    """Start a run whose app reports progress each second for ten minutes; return it once the wait
    is in ``wait_state`` and the app has reported twice, never told to stop."""
    from airflow_octorpa.emulator import WebhookSpec

    emulator.state.reset()
    emulator.state.put_webhook(WebhookSpec.reporting_app("callback-app", ORDER_SECRET, after=600, ask_every=1))
    cluster.wait_for_dags(dag_id)
    cluster.trigger(dag_id, run_id, {})

    def progress() -> list[dict]:
        runs = emulator.state.snapshot("runs")
        return runs[0].get("callback", {}).get("progress", []) if runs else []

    cluster.wait_for(
        lambda: cluster.task_states(dag_id, run_id).get(("wait", -1)) == wait_state and len(progress()) >= 2,
        240,
        f"the wait to be {wait_state} while the app reports progress",
    )
    assert not any(step["cancel"] for step in progress())
    return emulator.state.snapshot("runs")[0]


def _wait_logs(cluster, dag_id: str) -> str:
    """The wait's task logs, the trigger's lines included."""
    return "".join(
        p.read_text(errors="replace") for p in cluster.home.glob(f"logs/dag_id={dag_id}/**/task_id=wait/*.log")
    )


def _app_heard_the_cancel(emulator, cluster) -> None:
    cluster.wait_for(
        lambda: emulator.state.snapshot("runs")[0]["callback"]["cancelled_at"], 120, "the app to hear the cancel"
    )
    cluster.wait_for(lambda: _callback_reports(emulator), 30, "the app's failed report")
    assert [(r["status"], r["status_code"]) for r in _callback_reports(emulator)] == [("failed", 200)]


def _the_run_page_shows_the_cancel(cluster, run: dict) -> None:
    """Both tasks link to the run's page; it is behind Airflow's login and the DAG's permission; it
    shows the run, its progress and when the app heard the cancel."""
    base = f"http://127.0.0.1:{cluster.port}"
    version = "v2" if AIRFLOW_V_3 else "v1"
    pages = set()
    for task_id in ("trigger", "wait"):
        answer = requests.get(
            f"{base}/api/{version}/dags/octorpa_cancel/dagRuns/cancel/taskInstances/{task_id}/links",
            headers=api_headers(cluster), timeout=60,
        )  # fmt: skip
        assert answer.status_code == 200, answer.text
        links = answer.json().get("extra_links", answer.json())
        pages.add(links["Octopus RPA run"])
    for page in pages:
        assert page.startswith("/octorpa/v1/run?dag_id=octorpa_cancel&run_id=cancel&task_id="), page
        anonymous = requests.get(base + page, timeout=60, allow_redirects=False)
        assert run["flow_process_no"] not in anonymous.text
        if AIRFLOW_V_3:
            assert anonymous.status_code == 401, anonymous.text  # a browser goes on to Airflow's login
            outsider = requests.get(base + page, headers=api_headers(cluster, "outsider"), timeout=60)
            assert outsider.status_code == 403, outsider.text
            seen = requests.get(base + page, headers=api_headers(cluster), timeout=60)
        else:
            assert anonymous.status_code == 302 and "/login/" in anonymous.headers["Location"], anonymous.headers
            outsider = _webserver_login(base, "outsider").get(base + page, timeout=60, allow_redirects=False)
            assert outsider.status_code == 302 and "/login/" not in outsider.headers["Location"], outsider.headers
            seen = _webserver_login(base, "admin").get(base + page, timeout=60)
        assert run["flow_process_no"] not in outsider.text
        assert seen.status_code == 200, seen.text
        for shown in (f"flowProcessNo={run['flow_process_no']}", "Progress", "步", "Requested at", "Heard by the app"):
            assert shown in seen.text, (shown, seen.text)
        assert "not yet" not in seen.text.split("Heard by the app")[1][:80], seen.text
    assert len(pages) == 2  # each task's own link, one run


def _webserver_login(base: str, user: str) -> requests.Session:
    """A browser's login to Airflow 2.11's webserver (its form, with its CSRF token)."""
    session = requests.Session()
    form = session.get(f"{base}/login/", timeout=60).text
    csrf = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', form) or re.search(
        r'value="([^"]+)"[^>]*name="csrf_token"', form
    )
    assert csrf, form[:2000]
    done = session.post(
        f"{base}/login/", data={"username": user, "password": API_PASSWORD, "csrf_token": csrf.group(1)}, timeout=60
    )
    assert done.status_code == 200, done.text[:2000]
    return session


def _callback_reports(emulator) -> list[dict]:
    runs = emulator.state.snapshot("runs")
    return runs[0].get("callback", {}).get("reports", []) if runs else []


@pytest.mark.timeout(600)
def test_deferred_mode_ends_like_worker_mode(scaled_emulator, cluster):
    """Same XCom semantics, same listener events, same downstream behaviour in both modes."""
    scaled_emulator.state.reset()
    modes = ("worker", "deferred")
    cluster.wait_for_dags(*(f"octorpa_modes_{mode}" for mode in modes))
    for mode in modes:
        cluster.trigger(f"octorpa_modes_{mode}", "modes", {})
    for mode in modes:
        assert cluster.wait_for_run(f"octorpa_modes_{mode}", "modes", timeout=300) == "success", cluster.log_tail()

    runs = {r["params"]["订单号"]: r["flow_process_no"] for r in scaled_emulator.state.snapshot("runs")}
    assert len(scaled_emulator.state.snapshot("calls")) == len(runs) == 8  # none twice
    events = [json.loads(line) for line in (cluster.home / "listener-events.jsonl").read_text().splitlines()]
    for mode in modes:
        dag_id = f"octorpa_modes_{mode}"
        states = cluster.task_states(dag_id, "modes")
        assert set(states.values()) == {"success"}, states
        # The downstream .expand() over single's dict found its mapped length: one task per key.
        assert sorted(i for (task_id, i) in states if task_id == "field") == [0, 1, 2]
        assert cluster.xcom_values(dag_id, "modes", "single")[-1]["flow_process_no"] == runs[f"{mode}-single"]
        assert cluster.xcom_values(dag_id, "modes", "silent") == {}  # do_xcom_push=False is honoured
        assert cluster.xcom_values(dag_id, "modes", "check") == {0: runs[f"{mode}-m0"], 1: runs[f"{mode}-m1"]}
        # Listeners (OpenLineage among them) see every trigger task succeed.
        succeeded = {(e["task_id"], e["map_index"]) for e in events if e["dag_id"] == dag_id}
        assert {("single", -1), ("silent", -1), ("mapped", 0), ("mapped", 1)} <= succeeded, succeeded
    assert "(deferred)" in _task_log(cluster, "octorpa_modes_deferred", "modes")
    assert "(deferred)" not in _task_log(cluster, "octorpa_modes_worker", "modes")


def _start_and_wait_for_the_hold(scaled_emulator, cluster, dag_id: str, run_id: str) -> None:
    """Trigger the DAG's only trigger task and return once its run started and its slot hold began."""
    scaled_emulator.state.reset()
    cluster.wait_for_dags(dag_id)
    cluster.trigger(dag_id, run_id, {})
    cluster.wait_for(lambda: len(scaled_emulator.state.snapshot("runs")) == 1, 180, "the first call")
    cluster.wait_for(
        lambda: "Keeping the pool slot" in _task_log(cluster, dag_id, run_id), 30, "the slot hold to begin"
    )


def _task_process_title(cluster, dag_id: str, run_id: str) -> str:
    """What the process running the DAG run's only task calls itself."""
    if not AIRFLOW_V_3:
        return f"airflow task runner: {dag_id} trigger {run_id}"
    (ti_hex,) = cluster._query("SELECT id FROM task_instance WHERE dag_id = ? AND run_id = ?", dag_id, run_id)[0]
    return f"airflow worker -- {uuid.UUID(str(ti_hex))}"


def _task_log(cluster, dag_id: str, run_id: str) -> str:
    """The run's task logs and their triggers' logs."""
    folder = cluster.home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}"
    return "".join(p.read_text(errors="replace") for p in folder.rglob("*.log*") if p.is_file())


@pytest.mark.timeout(600)
def test_random_faults_leave_every_trigger_accounted_for_and_none_twice(scaled_emulator, cluster):
    # Seed 5 draws every kind of fault within the first 40 calls.
    summary = run_fault_load(cluster, scaled_emulator, n=40, run_id="faults", seed=5, timeout=420)
    print(summary.line())
    assert summary.duplicates == 0 and summary.lost == 0, summary.line()
    assert summary.started + summary.unknown == 40
    assert summary.runs_of_unknown >= 1, "a run must have started behind a lost answer"
    assert {"rate_limit", "status_before_start", "delay_after_start", "reset_after_start"} <= set(summary.faults)


@pytest.mark.timeout(500)
@pytest.mark.skipif(not AIRFLOW_V_3, reason="asset watchers came in Airflow 3.0")
def test_an_inbox_schedules_each_report_once_in_order_across_a_killed_triggerer(cluster):
    """Reports sent to an inbox reach the real api-server; the real triggerer's watcher turns each
    into one asset event, which the scheduler turns into DAG runs. The triggerer is killed with
    reports held and more arrive while it is down: each still schedules exactly once, in order."""
    cluster.wait_for_dags("octorpa_inbox_consumer")
    url = cluster.create_inbox("test-orders")

    def send(n: int, **extra) -> requests.Response:
        answer = requests.post(url, json={"status": "succeeded", "outputs": {"n": n}, **extra}, timeout=30)
        assert answer.status_code == 200, answer.text
        return answer

    def events() -> int:
        query = "SELECT COUNT(*) FROM asset_event e JOIN asset a ON a.id = e.asset_id WHERE a.uri = ?"
        return cluster._query(query, "octorpa://inbox/test-orders")[0][0]

    send(1, report_id="order-1")
    send(2)
    assert send(1, report_id="order-1").json()["repeat"] is True
    cluster.wait_for(lambda: events() == 2, 180, "the first two reports' asset events")
    cluster.kill("triggerer")
    send(3)
    send(4)
    cluster.start_component(component("triggerer"))
    send(5)
    cluster.wait_for(lambda: events() == 5, 180, "the asset events of the reports sent around the restart")

    def runs() -> list[tuple[str, str]]:
        return cluster._query(
            "SELECT run_id, state FROM dag_run WHERE dag_id = ? ORDER BY id", "octorpa_inbox_consumer"
        )

    def queued() -> int:
        query = "SELECT COUNT(*) FROM asset_dag_run_queue WHERE target_dag_id = ?"
        return cluster._query(query, "octorpa_inbox_consumer")[0][0]

    cluster.wait_for(
        lambda: queued() == 0 and runs() and all(state in ("success", "failed") for _, state in runs()),
        240,
        "the DAG runs the inbox's events scheduled",
    )
    assert {state for _, state in runs()} == {"success"}, cluster.log_tail()
    loaded = [
        pair for run_id, _ in runs() for pair in cluster.xcom_values("octorpa_inbox_consumer", run_id, "load")[-1]
    ]
    # Each once, in order, none left behind: on SQLite (no row locks) an event committed while the
    # scheduler creates a run is queued again by the provider's listener as that run starts.
    assert [n for n, _ in loaded] == [1, 2, 3, 4, 5], loaded
    time.sleep(5)  # a re-emitted report would show by now
    assert events() == 5
    listed = cluster.octorpa("inbox", "list")
    (row,) = [line.split() for line in listed.splitlines() if line.startswith("test-orders ")]
    assert row[-3:] == ["5", "5", "0"]
    for log in (cluster.home / "component-logs").glob("*.log"):  # the route blanked the token
        assert url[-43:] not in log.read_text(errors="replace"), log.name
    forged = url[:-43] + "A" * 43
    assert requests.post(forged, json={"status": "succeeded"}, timeout=10).status_code == 404
