"""Between a run's start and its end: progress reports, the app asking whether to stop, and a cancel
Airflow asks for. The provider's route on a real HTTP server, the records in Airflow's database."""

from __future__ import annotations

import datetime
import json
import time

import pytest
import requests

from airflow_octorpa.callbacks.cancel import request_cancel_in
from airflow_octorpa.callbacks.progress import COALESCE_SECONDS, MAX_HISTORY
from airflow_octorpa.callbacks.reports import ReportKey, registration
from airflow_octorpa.callbacks.token import new_callback
from tests.support.airflow_helpers import run_dag, xcom_return_values
from tests.support.callback_server import report_route

START = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)

pytestmark = pytest.mark.usefixtures("airflow_db")


@pytest.fixture(scope="module")
def route():
    with report_route() as base:
        yield base


def _registered(route: str, dag_id: str) -> tuple[str, ReportKey]:
    """A call awaiting its report, as a trigger task registers it."""
    from airflow.models.variable import Variable

    callback = new_callback(route, dag_id, "manual", "trigger", -1)
    Variable.set(callback.key.variable, registration(dag_id, "manual", "trigger", -1, callback.key.token_sha256))
    return callback.url, callback.key


def _stored(key: ReportKey) -> dict:
    from airflow.models.variable import Variable
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        return json.loads(session.scalar(select(Variable).where(Variable.key == key.variable)).val)


def _ask(url: str) -> requests.Response:
    return requests.get(url, timeout=10)


def _cancel(key: ReportKey, dag_id: str, reason: str = "the waiting task was marked failed") -> None:
    from airflow.utils.session import create_session

    with create_session() as session:
        assert request_cancel_in(session, key.variable, dag_id, "manual", reason)


def test_progress_is_kept_and_every_answer_says_whether_to_cancel(route):
    url, key = _registered(route, "pg_kept")
    assert _ask(url).json() == {"accepted": True, "cancel": False}
    post = requests.post(url, json={"status": "running", "message": "第 1 步: 打开订单", "progress": 0.25}, timeout=10)
    assert (post.status_code, post.json()) == (200, {"accepted": True, "cancel": False})
    time.sleep(COALESCE_SECONDS + 0.2)
    get = requests.get(url, params={"status": "running", "message": "step 2", "progress": "0.5"}, timeout=10)
    assert get.json() == {"accepted": True, "cancel": False}
    stored = _stored(key)
    assert stored["status"] == "waiting"
    assert stored["progress"]["message"] == "step 2" and stored["progress"]["progress"] == 0.5
    assert [entry["message"] for entry in stored["history"]] == ["第 1 步: 打开订单", "step 2"]
    assert [entry["seq"] for entry in stored["history"]] == [1, 2]


def test_a_burst_of_progress_is_coalesced_to_about_one_write_a_second_and_keeps_the_latest(route):
    url, key = _registered(route, "pg_burst")
    started = time.monotonic()
    with requests.Session() as http:
        for step in range(60):
            assert http.post(url, json={"status": "running", "message": f"step {step}"}, timeout=10).ok
    time.sleep(COALESCE_SECONDS + 0.5)  # the held latest is written when its second is up
    stored = _stored(key)
    elapsed = time.monotonic() - started  # writes fall in the burst and in the wait after it
    writes = stored["progress"]["seq"]
    assert stored["progress"]["message"] == "step 59"
    assert writes <= elapsed / COALESCE_SECONDS + 2, (writes, elapsed)
    assert len(stored["history"]) == min(writes, MAX_HISTORY)


def test_progress_after_the_final_report_is_refused_with_409(route):
    url, key = _registered(route, "pg_after_final")
    assert requests.post(url, json={"status": "succeeded", "outputs": {"n": 1}}, timeout=10).status_code == 200
    late = requests.post(url, json={"status": "running", "message": "still here"}, timeout=10)
    assert late.status_code == 409 and late.json()["accepted"] is False
    assert "final report" in late.json()["error"]
    assert _ask(url).json() == {"accepted": True, "cancel": False}  # asking is still answered
    assert _stored(key)["status"] == "succeeded"


def test_once_a_cancel_is_asked_every_answer_says_so_and_the_first_request_after_is_noted(route):
    url, key = _registered(route, "pg_cancel")
    requests.post(url, json={"status": "running", "message": "working"}, timeout=10)
    _cancel(key, "pg_cancel")
    before = time.time()
    assert _ask(url).json() == {"accepted": True, "cancel": True}
    heard_at = _stored(key)["cancel_heard_at"]
    assert heard_at >= before - 1
    progress = requests.post(url, json={"status": "running", "message": "one more step"}, timeout=10)
    assert progress.json() == {"accepted": True, "cancel": True}
    assert _stored(key)["cancel_heard_at"] == heard_at  # the first time it heard, kept
    failed = requests.post(url, json={"status": "failed", "message": "cancelled by Airflow"}, timeout=10)
    assert (failed.status_code, failed.json()) == (200, {"accepted": True, "cancel": True})
    assert _stored(key)["status"] == "failed"


def test_after_the_wait_has_ended_the_app_hears_cancel_and_its_failed_report_is_still_accepted(route):
    from airflow.models.variable import Variable

    url, key = _registered(route, "pg_expired")
    Variable.set(key.variable, json.dumps({**_stored(key), "status": "expired"}))  # as a timed-out wait leaves it
    assert _ask(url).json() == {"accepted": True, "cancel": True}
    assert requests.post(url, json={"status": "running"}, timeout=10).json() == {"accepted": True, "cancel": True}
    succeeded = requests.post(url, json={"status": "succeeded"}, timeout=10)
    assert succeeded.status_code == 409 and succeeded.json()["cancel"] is True
    failed = requests.post(url, json={"status": "failed", "message": "cancelled"}, timeout=10)
    assert (failed.status_code, failed.json()) == (200, {"accepted": True, "cancel": True})
    stored = _stored(key)
    assert stored["status"] == "expired" and stored["after_end"]["message"] == "cancelled"
    assert requests.post(url, json={"status": "failed", "message": "again"}, timeout=10).status_code == 409


def test_a_new_call_of_the_task_instance_starts_with_no_cancel(route):
    """A later try of the trigger task registers a new call (in a task, through the Task SDK)."""
    from airflow.providers.common.compat.sdk import DAG, task

    from airflow_octorpa.callbacks.reports import register

    url, key = _registered(route, "pg_new_call")
    _cancel(key, "pg_new_call")
    assert _ask(url).json()["cancel"] is True
    again = new_callback(route, "pg_new_call", "manual", "trigger", -1)

    with DAG("pg_new_call_register", schedule=None, start_date=START) as dag:

        @task
        def register_again() -> None:
            register(again.key, "pg_new_call", "manual", "trigger", -1)

        register_again()

    assert run_dag(dag).state == "success"
    assert _ask(again.url).json() == {"accepted": True, "cancel": False}
    assert _ask(url).status_code == 404  # the earlier call's token names no call now


def test_a_dag_runs_end_asks_its_awaited_runs_to_stop_and_keeps_their_records_until_the_sweep(route):
    """The record of a run still awaited outlives its DAG run's end, marked cancelled, so that the app
    hears it; a run that reported is removed at once; the sweep removes the rest later."""
    from airflow.providers.common.compat.sdk import DAG, task
    from airflow.utils.session import create_session

    from airflow_octorpa.callbacks.reports import register
    from airflow_octorpa.run_records import sweep

    calls: dict[str, object] = {}

    with DAG("pg_run_end", schedule=None, start_date=START) as dag:

        @task
        def start_two(**context) -> None:
            ti = context["ti"]
            for task_id in ("awaited", "reported"):
                calls[task_id] = new_callback(route, ti.dag_id, ti.run_id, task_id, -1)
                register(calls[task_id].key, ti.dag_id, ti.run_id, task_id, -1)
            assert requests.post(calls["reported"].url, json={"status": "succeeded"}, timeout=10).ok

        @task
        def noop() -> None:
            """The records name task instances of the run, as a trigger task's records do."""

        start_two() >> [noop.override(task_id="awaited")(), noop.override(task_id="reported")()]

    dag_run = run_dag(dag)
    assert dag_run.state == "success"
    awaited, reported = calls["awaited"], calls["reported"]
    assert _ask(awaited.url).json() == {"accepted": True, "cancel": True}
    assert _marker(awaited.key)["reason"] == "its DAG run ended success"
    assert _ask(reported.url).status_code == 404  # reported: removed with its run, as before
    with create_session() as session:
        sweep(session, retention_seconds=0)
    assert _ask(awaited.url).status_code == 404 and _marker(awaited.key) is None


def _marker(key: ReportKey) -> dict | None:
    from airflow.models.variable import Variable
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        row = session.scalar(select(Variable).where(Variable.key == key.cancel))
        return json.loads(row.val) if row is not None else None


# -- through dag.test(): the emulator's app reports progress and honours a cancel -----------------


@pytest.fixture
def asking_app(emulator, monkeypatch, route):
    """An app that reports progress every ``ask_every`` seconds and stops when told, with a connection
    to it and the route it is told to call."""
    from airflow_octorpa.emulator import WebhookSpec
    from tests.support.settings import FAST_LIMITS, ORDER_SECRET, connection_json

    monkeypatch.setenv("AIRFLOW__OCTORPA__CALLBACK_BASE_URL", route)
    monkeypatch.setenv(
        "AIRFLOW_CONN_OCTORPA_DEFAULT",
        connection_json(emulator.webhook_url("asking-app"), ORDER_SECRET, rate_limits=FAST_LIMITS),
    )

    def configure(**callback):
        emulator.state.put_webhook(WebhookSpec.reporting_app("asking-app", ORDER_SECRET, name="进度示例", **callback))
        return emulator

    return configure


def _start_and_wait(dag_id: str, **sensor_kwargs):
    from airflow.providers.common.compat.sdk import DAG

    from airflow_octorpa.operators.octorpa import OctoRpaTriggerOperator
    from airflow_octorpa.sensors.octorpa import OctoRpaRunSensor

    with DAG(dag_id, schedule=None, start_date=START) as dag:
        trigger = OctoRpaTriggerOperator(task_id="trigger", app_params={"订单号": dag_id}, callback=True)
        OctoRpaRunSensor(
            task_id="wait", started_run=trigger.output, **{"timeout": 60, "poll_interval": 1, **sensor_kwargs}
        )
    return run_dag(dag)


@pytest.mark.parametrize("deferrable", [True, False], ids=["deferred", "reschedule"])
def test_the_waits_log_shows_each_progress_report_and_the_final_reports_output_names(
    asking_app, deferrable, capfd, caplog
):
    emulator = asking_app(after=5, ask_every=1.2, outputs={"运单号": "SF-7", "件数": 1}, message="已发货")
    dag_run = _start_and_wait(f"pg_log_{deferrable}", deferrable=deferrable)
    printed = "".join(capfd.readouterr())
    out = printed + caplog.text
    (run,) = emulator.state.snapshot("runs")
    sent = [step["step"] for step in run["callback"]["progress"]]
    assert len(sent) >= 3 and all(step["cancel"] is False for step in run["callback"]["progress"])
    assert dag_run.get_task_instance("wait").state == "success"
    flow = run["flow_process_no"]
    marker = f"flowProcessNo={flow} progress #"
    logged = _logged(printed, marker) or _logged(caplog.text, marker)  # some versions log to both
    assert set(logged) >= set(range(2, len(sent) + 1)), (logged, sent)  # the first may land before the wait starts
    assert len(logged) == len(set(logged)), logged  # each once, though each poke of a reschedule wait is a new process
    assert f"第 {sent[-1]} 步" in out and "%" in out
    assert f"flowProcessNo={flow} succeeded: 已发货; outputs: 件数, 运单号." in out
    assert "SF-7" not in out.split("succeeded: 已发货")[1].splitlines()[0]  # names, never values


def _logged(text: str, marker: str) -> list[int]:
    return [int(line.split(marker, 1)[1].split()[0]) for line in text.splitlines() if marker in line]


def test_a_wait_that_times_out_asks_the_run_to_stop_and_the_app_hears_it(asking_app):
    from airflow.providers.common.compat.sdk import DAG, task

    from airflow_octorpa.operators.octorpa import OctoRpaTriggerOperator
    from airflow_octorpa.sensors.octorpa import OctoRpaRunSensor

    emulator = asking_app(after=120, ask_every=0.5)

    with DAG("pg_timeout_cancel", schedule=None, start_date=START) as dag:
        trigger = OctoRpaTriggerOperator(task_id="trigger", app_params={"订单号": "x"}, callback=True)
        wait = OctoRpaRunSensor(task_id="wait", started_run=trigger.output, timeout=3, poll_interval=1)

        @task(trigger_rule="all_done")
        def record_once_the_app_stopped(started_run: dict) -> dict:
            """Read while the DAG run lasts: its end removes the record once the app has heard."""
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not emulator.state.snapshot("runs")[0]["callback"]["reports"]:
                time.sleep(0.2)
            return _stored(ReportKey.parse(started_run["report_key"]))

        wait >> record_once_the_app_stopped(trigger.output)

    dag_run = run_dag(dag)
    assert dag_run.get_task_instance("wait").state == "failed"
    (run,) = emulator.state.snapshot("runs")
    assert run["callback"]["cancelled_at"] is not None
    assert [(r["status"], r["status_code"]) for r in run["callback"]["reports"]] == [("failed", 200)]
    stored = xcom_return_values(dag_run, "record_once_the_app_stopped")[-1]
    assert stored["status"] == "expired" and stored["after_end"]["message"].startswith("cancelled")
    assert stored["cancel_heard_at"] <= run["callback"]["cancelled_at"] + 1


# -- the run's page: what it shows once the DAG run's end removed the records --------------------


def test_the_run_page_shows_the_finished_run_from_the_tasks_copies_from_either_tasks_link(asking_app):
    from airflow.utils.session import create_session

    from airflow_octorpa.callbacks.run_page import OctoRpaRunLink, gather
    from airflow_octorpa.plugins.run_page import render

    emulator = asking_app(after=3, ask_every=1, outputs={"运单号": "<b>SF-8</b>"}, message="已发货 <script>")
    dag_run = _start_and_wait("pg_page", poll_interval=1)
    (run,) = emulator.state.snapshot("runs")
    assert dag_run.get_task_instance("wait").state == "success"
    with create_session() as session:
        pages = {task: gather(session, "pg_page", dag_run.run_id, task, -1) for task in ("trigger", "wait")}
    for task, facts in pages.items():
        assert facts.trigger == ("trigger", -1) and facts.asked_from == (task, -1)
        assert "report record" not in facts.sources  # removed at the run's end (3.3 keeps the call's, in its store)
        assert facts.result["flow_process_no"] == run["flow_process_no"]
        assert facts.call["state"] == "started" and facts.call["answered_at"] >= facts.call["sent_at"]
        assert facts.call["slot"]["pool"] == "octorpa"
        assert facts.report["status"] == "succeeded" and facts.report["history"]
        page = render(facts, "/back")
        assert f"flowProcessNo={run['flow_process_no']}" in page and "第 " in page
        assert (
            "&lt;b&gt;SF-8&lt;/b&gt;" in page and "<script>" not in page.split("<body>")[1]
        )  # the app's text, escaped
        assert "token" not in page and "sha256" not in page

    class TiKey:
        dag_id, run_id, task_id, map_index = "pg_page", dag_run.run_id, "wait", 3

    link = OctoRpaRunLink().get_link(None, ti_key=TiKey())  # no XCom, no record: it cannot fail
    assert link.startswith("/octorpa/v1/run?dag_id=pg_page&run_id=") and link.endswith("&task_id=wait&map_index=3")


def test_the_run_page_of_a_task_that_made_no_call_says_so():
    from airflow.utils.session import create_session

    from airflow_octorpa.callbacks.run_page import gather
    from airflow_octorpa.plugins.run_page import render

    with create_session() as session:
        facts = gather(session, "no_such_dag", "manual", "trigger", -1)
    assert not facts.found
    assert "No Octopus RPA call is recorded" in render(facts, "/back")
