"""A run reports its end to Airflow and a task waits for it: real dag.test() runs, the emulator's
app calling back to the provider's route on a real HTTP server."""

from __future__ import annotations

import datetime
import json
import threading

import pytest
import requests

from airflow_octorpa.callbacks.reports import ReportKey, registration
from airflow_octorpa.callbacks.token import new_callback
from airflow_octorpa.emulator import WebhookSpec
from airflow_octorpa.exceptions import OctoRpaConfigurationError
from airflow_octorpa.operators.octorpa import OctoRpaTriggerOperator
from airflow_octorpa.sensors.octorpa import OctoRpaRunSensor
from tests.support.airflow_helpers import AIRFLOW_VERSION, run_dag, task_states, xcom_return_values
from tests.support.callback_server import report_route
from tests.support.settings import FAST_LIMITS, ORDER_SECRET, ORDER_WEBHOOK, connection_json

START = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
APP = "callback-app"

pytestmark = pytest.mark.usefixtures("airflow_db")
# Airflow 3.0's dag.test() prints no task's error message (it shows only in the task log).
TASK_ERRORS_PRINTED = AIRFLOW_VERSION.release[:2] != (3, 0)


def _try_number(dag_run, task_id: str) -> int:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        return session.scalar(
            select(TaskInstance.try_number).where(
                TaskInstance.dag_id == dag_run.dag_id,
                TaskInstance.run_id == dag_run.run_id,
                TaskInstance.task_id == task_id,
            )
        )


@pytest.fixture(scope="module")
def route():
    with report_route() as base:
        yield base


@pytest.fixture
def reporting_app(emulator, monkeypatch, route):
    """An app that reports its end, a connection to it, and the route robots are told to call."""
    monkeypatch.setenv("AIRFLOW__OCTORPA__CALLBACK_BASE_URL", route)
    monkeypatch.setenv(
        "AIRFLOW_CONN_OCTORPA_DEFAULT",
        connection_json(emulator.webhook_url(APP), ORDER_SECRET, rate_limits=FAST_LIMITS),
    )

    def configure(**callback):
        emulator.state.put_webhook(WebhookSpec.reporting_app(APP, ORDER_SECRET, name="回调示例", **callback))
        return emulator

    return configure


def _start_and_wait(dag_id: str, *, sensor_kwargs=None, trigger_kwargs=None):
    from airflow.providers.common.compat.sdk import DAG

    with DAG(dag_id, schedule=None, start_date=START) as dag:
        trigger = OctoRpaTriggerOperator(
            task_id="trigger", app_params={"订单号": dag_id}, callback=True, **(trigger_kwargs or {})
        )
        options = {"timeout": 60, "poll_interval": 1, **(sensor_kwargs or {})}
        wait = OctoRpaRunSensor(task_id="wait", started_run=trigger.output, **options)
        trigger >> wait
    return run_dag(dag)


@pytest.mark.parametrize("deferrable", [True, False], ids=["deferred", "reschedule"])
def test_the_apps_report_completes_the_wait_with_its_outputs(reporting_app, deferrable):
    emulator = reporting_app(after=1.5, outputs={"运单号": "SF-1", "件数": 2}, message="done")
    dag_run = _start_and_wait(f"cb_ok_{deferrable}", sensor_kwargs={"deferrable": deferrable})

    (run,) = emulator.state.snapshot("runs")
    assert task_states(dag_run) == {("trigger", -1): "success", ("wait", -1): "success"}
    result = xcom_return_values(dag_run, "wait")[-1]
    assert result["flow_process_no"] == run["flow_process_no"]
    assert (result["status"], result["outputs"], result["message"]) == (
        "succeeded",
        {"运单号": "SF-1", "件数": 2},
        "done",
    )
    assert run["callback"]["reports"][0]["status_code"] == 200
    # The URL (the token) went only to the app: not to XCom, nor to the rendered fields.
    url = run["params"]["airflow_callback_url"]
    assert url.startswith("http://127.0.0.1:") and "/octorpa/v1/callbacks/" in url
    trigger_xcom = xcom_return_values(dag_run, "trigger")[-1]
    assert url.rsplit("/", 1)[1] not in json.dumps(trigger_xcom) and "report_key" in trigger_xcom


def test_a_reschedule_wait_that_pokes_several_times_gets_the_report(reporting_app):
    # The report lands after a few pokes: each later poke reads the first reschedule's date.
    reporting_app(after=4, outputs={"件数": 3})
    dag_run = _start_and_wait("cb_several_pokes", sensor_kwargs={"deferrable": False})
    assert task_states(dag_run) == {("trigger", -1): "success", ("wait", -1): "success"}
    assert xcom_return_values(dag_run, "wait")[-1]["outputs"] == {"件数": 3}


def test_a_get_report_with_a_message_works_like_a_post(reporting_app):
    emulator = reporting_app(after=0.5, method="GET", message="打开网页")
    dag_run = _start_and_wait("cb_get")
    assert xcom_return_values(dag_run, "wait")[-1]["message"] == "打开网页"
    assert emulator.state.snapshot("runs")[0]["callback"]["reports"][0]["status_code"] == 200


def test_a_failed_report_fails_the_wait_at_once_with_the_apps_message(reporting_app, capfd, caplog):
    reporting_app(after=0.5, status="failed", message="库存不足")
    dag_run = _start_and_wait("cb_failed", sensor_kwargs={"retries": 2})
    out = "".join(capfd.readouterr()) + caplog.text
    assert task_states(dag_run)[("wait", -1)] == "failed"
    assert _try_number(dag_run, "wait") == 1  # failed at once: waiting again cannot change a failure
    if TASK_ERRORS_PRINTED:
        assert "reported that it failed: 库存不足" in out


def test_no_report_times_the_wait_out_naming_the_run(reporting_app, capfd, caplog):
    emulator = reporting_app(fault="never")
    dag_run = _start_and_wait("cb_never", sensor_kwargs={"timeout": 3})
    (run,) = emulator.state.snapshot("runs")
    assert task_states(dag_run)[("wait", -1)] == "failed"
    if TASK_ERRORS_PRINTED:
        out = "".join(capfd.readouterr()) + caplog.text
        assert f"flowProcessNo={run['flow_process_no']} did not report its end within 3 s" in out


def test_a_report_before_the_wait_begins_is_kept(reporting_app):
    emulator = reporting_app(after=0.0, outputs={"a": 1})
    dag_run = _start_and_wait("cb_early", trigger_kwargs={})  # the trigger's slot hold outlasts the report
    assert xcom_return_values(dag_run, "wait")[-1]["outputs"] == {"a": 1}
    assert emulator.state.snapshot("runs")[0]["callback"]["reports"][0]["status_code"] == 200


def test_repeats_contradictions_and_forged_tokens_are_answered_and_change_nothing(reporting_app):
    emulator = reporting_app(after=0.3, fault="twice", outputs={"x": 1})
    dag_run = _start_and_wait("cb_twice")
    assert task_states(dag_run)[("wait", -1)] == "success"
    assert [r["status_code"] for r in emulator.state.snapshot("runs")[0]["callback"]["reports"]] == [200, 200]

    emulator = reporting_app(after=0.3, fault="contradiction")
    emulator.state.reset()
    dag_run = _start_and_wait("cb_contradiction")
    assert xcom_return_values(dag_run, "wait")[-1]["status"] == "succeeded"
    assert [r["status_code"] for r in emulator.state.snapshot("runs")[0]["callback"]["reports"]] == [200, 409]

    emulator = reporting_app(after=0.3, fault="forged")
    emulator.state.reset()
    dag_run = _start_and_wait("cb_forged", sensor_kwargs={"timeout": 3})
    assert task_states(dag_run)[("wait", -1)] == "failed"
    assert [r["status_code"] for r in emulator.state.snapshot("runs")[0]["callback"]["reports"]] == [404]


def _registered(route: str, dag_id: str = "cb_direct") -> tuple[str, ReportKey]:
    """A call awaiting its report, as a trigger task registers it (written here outside a task)."""
    from airflow.models.variable import Variable

    callback = new_callback(route, dag_id, "manual", "trigger", -1)
    Variable.set(callback.key.variable, registration(dag_id, "manual", "trigger", -1, callback.key.token_sha256))
    return callback.url, callback.key


def _stored(key: ReportKey) -> dict:
    return _variable(key.variable)


def _variable(name: str) -> dict | None:
    from airflow.models.variable import Variable
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        row = session.scalar(select(Variable).where(Variable.key == name))
        return json.loads(row.val) if row is not None else None


@pytest.mark.parametrize(
    ("method", "kwargs", "status"),
    [
        ("POST", {"data": b"not json", "headers": {"Content-Type": "application/json"}}, 400),
        ("POST", {"json": ["succeeded"]}, 400),
        ("POST", {"json": {"status": "done"}}, 400),
        ("POST", {"json": {"status": "succeeded", "outputs": [1]}}, 400),
        ("POST", {"json": {"status": "succeeded", "message": "x" * 1001}}, 400),
        ("POST", {"json": {"status": "succeeded", "extra": 1}}, 400),
        ("POST", {"data": b"{" + b" " * (64 * 1024 + 10) + b"}", "headers": {"Content-Type": "application/json"}}, 413),
        ("GET", {"params": {"status": "maybe"}}, 400),
        ("GET", {"params": {"status": "failed", "message": "m" * 1001}}, 400),
        ("GET", {"params": {"message": "no status"}}, 400),
        ("GET", {"params": {"status": "succeeded", "progress": "0.5"}}, 400),
        ("GET", {"params": {"status": "running", "progress": "half"}}, 400),
        ("POST", {"json": {"status": "running", "progress": 1.5}}, 400),
        ("POST", {"json": {"status": "running", "progress": True}}, 400),
        ("POST", {"data": b'{"status": "running", "progress": NaN}', "headers": {"Content-Type": "application/json"}}, 400),
        ("POST", {"json": {"status": "running", "outputs": {}}}, 400),
        ("POST", {"json": {"status": "running", "message": "x" * 1001}}, 400),
    ],
    ids=["not-json", "a-list", "unknown-status", "outputs-list", "long-message", "unknown-field", "too-big",
         "get-unknown-status", "get-long-message", "get-message-no-status", "get-progress-of-a-final-report",
         "get-progress-not-a-number", "progress-over-1", "progress-a-bool", "progress-nan", "running-with-outputs",
         "running-long-message"],
)  # fmt: skip
def test_a_malformed_report_is_a_4xx_and_changes_nothing(route, method, kwargs, status):
    url, key = _registered(route)
    answer = requests.request(method, url, timeout=10, **kwargs)
    assert answer.status_code == status and answer.json()["accepted"] is False, answer.text
    assert _stored(key)["status"] == "waiting"


def test_a_token_that_names_no_call_is_404_and_creates_nothing(route):
    _, key = _registered(route, "cb_forged_direct")
    before = _report_count()
    digest = key.variable.rsplit(".", 1)[1]
    for token in ("A" * 43, "short", "../../etc", digest + "B" * 43):  # the last: a real record, a wrong secret
        answer = requests.post(f"{route}/octorpa/v1/callbacks/{token}", json={"status": "succeeded"}, timeout=10)
        assert answer.status_code == 404, answer.text
    assert _report_count() == before


def _report_count() -> int:
    from airflow.models.variable import Variable
    from airflow.utils.session import create_session
    from sqlalchemy import func, select

    with create_session() as session:
        return session.scalar(select(func.count()).where(Variable.key.startswith("octorpa_report.")))


def test_of_two_contradicting_reports_at_once_exactly_one_wins(route):
    def report(url: str, status: str, barrier: threading.Barrier, answers: list[int]) -> None:
        barrier.wait()
        answers.append(requests.post(url, json={"status": status}, timeout=10).status_code)

    for attempt in range(5):
        url, key = _registered(route, f"cb_race_{attempt}")
        answers: list[int] = []
        barrier = threading.Barrier(2)
        threads = [
            threading.Thread(target=report, args=(url, status, barrier, answers)) for status in ("succeeded", "failed")
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(answers) == [200, 409]
        assert _stored(key)["status"] in ("succeeded", "failed")


def test_without_a_callback_base_url_nothing_is_sent(emulator, monkeypatch):
    for name in ("AIRFLOW__OCTORPA__CALLBACK_BASE_URL", "AIRFLOW__API__BASE_URL", "AIRFLOW__WEBSERVER__BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(
        "AIRFLOW_CONN_OCTORPA_DEFAULT",
        connection_json(emulator.webhook_url(ORDER_WEBHOOK), ORDER_SECRET, rate_limits=FAST_LIMITS),
    )
    with pytest.raises(OctoRpaConfigurationError, match="callback_base_url"):
        OctoRpaTriggerOperator(task_id="t", app_params={"a": 1}, callback=True).execute({})
    assert emulator.state.snapshot("calls") == []


def _run_trigger_until(trigger, during) -> tuple[dict, float]:
    """Run the report trigger while ``during(elapsed)`` acts on the store; return its event and when."""
    import asyncio
    import time

    async def scenario():
        started = time.monotonic()
        events = trigger.run()
        first = asyncio.ensure_future(events.__anext__())
        while not first.done():
            await asyncio.sleep(0.2)
            await asyncio.to_thread(during, time.monotonic() - started)
        return (await first).payload, time.monotonic() - started

    return asyncio.run(scenario())


def test_a_record_missing_for_less_than_the_grace_is_still_waited_for(route, monkeypatch):
    """Airflow answers "not found" for a failed read too: a record that is missing for a moment and
    then read again is waited on; only one missing for the whole grace ends the wait."""
    import uuid

    from airflow.models.variable import Variable

    from airflow_octorpa.triggers import report as report_trigger

    monkeypatch.setattr(report_trigger, "MISSING_GRACE_SECONDS", 3.0)
    # The triggerer reads through its Task SDK channel, which this test process has not: read the
    # same metadata database directly, as the fallback for Airflow 3.0's dag.test() does.
    monkeypatch.setattr("airflow_octorpa.version_compat.get_variable", lambda key: Variable.get(key, default_var=None))
    callback = new_callback(route, "cb_grace", "manual", "trigger", -1)
    steps: list[str] = []

    def during(elapsed: float) -> None:
        if elapsed >= 2.0 and "registered" not in steps:  # the record shows up within the grace
            value = registration("cb_grace", "manual", "trigger", -1, callback.key.token_sha256)
            Variable.set(callback.key.variable, value)
            steps.append("registered")
        elif elapsed >= 6.0 and "reported" not in steps:  # past the grace from the first miss
            assert requests.post(callback.url, json={"status": "succeeded"}, timeout=10).status_code == 200
            steps.append("reported")

    trigger = report_trigger.OctoRpaReportTrigger(str(callback.key), poll_interval=1)
    payload, took = _run_trigger_until(trigger, during)
    # The event names the outcome, the key and the last progress report logged (none here) only: the
    # report's content stays out of the triggerer.
    expected = {"status": "succeeded", "report_key": str(callback.key), "progress_logged": 0}
    assert payload == expected and took >= 6.0, (payload, took)

    never = str(new_callback(route, "cb_grace", "manual", uuid.uuid4().hex, -1).key)
    payload, took = _run_trigger_until(report_trigger.OctoRpaReportTrigger(never, poll_interval=1), lambda _: None)
    assert payload == {"status": "missing", "report_key": never} and 3.0 <= took < 8.0, (payload, took)


def _deep(levels: int) -> bytes:
    return b'{"status": "succeeded", "outputs": {"a": ' + b"[" * levels + b"]" * levels + b"}}"


JSON = {"Content-Type": "application/json"}


@pytest.mark.parametrize(
    ("method", "kwargs", "names"),
    [
        ("POST", {"data": _deep(600), "headers": JSON}, "nested more than 32 levels"),
        ("POST", {"data": _deep(32), "headers": JSON}, "nested more than 32 levels"),
        ("POST", {"json": {"status": "succeeded", "outputs": {"a\u0000b": 1}}}, "U+0000"),
        ("POST", {"json": {"status": "succeeded", "outputs": {"a": ["x\u0000"]}}}, "U+0000"),
        ("POST", {"json": {"status": "failed", "message": "m\u0000"}}, "U+0000"),
        ("POST", {"json": {"status": "succeeded", "outputs": {f"k{i}": i for i in range(2001)}}}, "more than 2000"),
        ("POST", {"json": {"status": "succeeded", "outputs": {"k" * 257: 1}}}, "over 256 characters"),
        ("POST", {"data": b'{"status": "succeeded", "outputs": {"a": "\\ud800"}}', "headers": JSON}, "surrogate"),
        ("POST", {"data": b'{"status": "succeeded", "outputs": {"a": 18446744073709551616}}', "headers": JSON},
         "beyond 64 bits"),
        ("POST", {"data": b'{"status": "succeeded", "outputs": {"a": NaN}}', "headers": JSON}, "NaN"),
        ("GET", {"params": {"status": "failed", "message": "a\u0000b"}}, "U+0000"),
    ],
    ids=["nested-600", "nested-33", "nul-in-key", "nul-in-value", "nul-in-message", "many-keys", "long-key",
         "lone-surrogate", "huge-integer", "nan", "get-nul"],
)  # fmt: skip
def test_a_report_beyond_the_shape_limits_is_400_naming_the_limit_and_stores_nothing(route, method, kwargs, names):
    url, key = _registered(route)
    answer = requests.request(method, url, timeout=10, **kwargs)
    assert answer.status_code == 400 and answer.json()["accepted"] is False, answer.text
    assert names in answer.json()["error"]
    assert _stored(key)["status"] == "waiting" and _variable(key.claim) is None


def test_a_report_at_the_shape_limits_is_accepted(route):
    url, key = _registered(route)
    outputs = {"deep": json.loads("[" * 31 + "]" * 31), "名": "值" * 100, "n": 2**63 - 1, "k" * 256: 1.5}
    answer = requests.post(url, json={"status": "succeeded", "outputs": outputs}, timeout=10)
    assert answer.status_code == 200, answer.text
    assert _stored(key)["outputs"] == outputs and _variable(key.claim)["end"] == "reported"


def _post_the_apps_report(emulator, **report) -> int:
    (run,) = emulator.state.snapshot("runs")
    answer = requests.post(run["params"]["airflow_callback_url"], json={"status": "succeeded", **report}, timeout=10)
    return answer.status_code


def test_a_report_in_the_gap_before_a_timed_out_deferred_wait_resumes_is_used(reporting_app, monkeypatch):
    """The trigger's last poll saw "waiting", then the report was answered 200, then the task
    resumed with the trigger's "timeout": the report wins, and later reports are refused."""
    from airflow.triggers.base import TriggerEvent

    from airflow_octorpa.triggers.report import OctoRpaReportTrigger

    emulator = reporting_app(fault="never")
    answers: list[int] = []

    async def last_poll_then_timeout(self):
        answers.append(_post_the_apps_report(emulator, outputs={"单号": "G-1"}))
        yield TriggerEvent({"status": "timeout", "report_key": self.report_key})

    monkeypatch.setattr(OctoRpaReportTrigger, "run", last_poll_then_timeout)
    dag_run = _start_and_wait("cb_gap_deferred", sensor_kwargs={"timeout": 30})
    assert answers == [200]
    assert task_states(dag_run)[("wait", -1)] == "success"
    assert xcom_return_values(dag_run, "wait")[-1]["outputs"] == {"单号": "G-1"}


def test_a_report_in_the_gap_before_a_reschedule_wait_times_out_is_used(reporting_app, monkeypatch):
    import time

    emulator = reporting_app(fault="never")
    answers: list[int] = []

    def poke_then_report(self, context):
        time.sleep(1.0)  # past the 0.5 s timeout when the sensor checks it after this poke
        answers.append(_post_the_apps_report(emulator, outputs={"单号": "G-2"}))
        return False

    monkeypatch.setattr(OctoRpaRunSensor, "poke", poke_then_report)
    dag_run = _start_and_wait("cb_gap_reschedule", sensor_kwargs={"timeout": 0.5, "deferrable": False})
    assert answers == [200]
    assert task_states(dag_run)[("wait", -1)] == "success"
    assert xcom_return_values(dag_run, "wait")[-1]["outputs"] == {"单号": "G-2"}


class _ResumedByAirflowsDeferTimeout(OctoRpaRunSensor):
    """Resumes as the scheduler resumes a task whose defer timeout (the backstop) passed."""

    def __init__(self, *, before=None, **kwargs):
        super().__init__(**kwargs)
        self.before = before

    def execute(self, context):
        self.before()
        return self.resume_execution("__fail__", {"error": "Trigger/execution timeout"}, context)


def _backstop_dag(dag_id: str, before, after=lambda: None):
    from airflow.providers.common.compat.sdk import DAG, task

    @task(trigger_rule="all_done")
    def late_report():
        return after()

    with DAG(dag_id, schedule=None, start_date=START) as dag:
        trigger = OctoRpaTriggerOperator(task_id="trigger", app_params={"订单号": dag_id}, callback=True)
        wait = _ResumedByAirflowsDeferTimeout(task_id="wait", started_run=trigger.output, retries=2, before=before)
        trigger >> wait >> late_report()
    return run_dag(dag)


def test_airflows_defer_timeout_ends_the_wait_like_the_triggers_and_uses_a_report_that_landed(reporting_app):
    emulator = reporting_app(fault="never")
    dag_run = _backstop_dag("cb_backstop_report", lambda: _post_the_apps_report(emulator, outputs={"a": 1}))
    assert task_states(dag_run)[("wait", -1)] == "success"
    assert xcom_return_values(dag_run, "wait")[-1]["outputs"] == {"a": 1}

    emulator = reporting_app(fault="never")
    emulator.state.reset()
    dag_run = _backstop_dag("cb_backstop_none", lambda: None, lambda: _post_the_apps_report(emulator))
    assert task_states(dag_run)[("wait", -1)] == "failed"
    assert _try_number(dag_run, "wait") == 1  # a timed-out wait is not retried with a fresh timeout
    assert xcom_return_values(dag_run, "late_report")[-1] == 409  # the wait has ended: the app is told so


@pytest.mark.parametrize("after", [0.0, 3.0], ids=["found-by-the-worker", "found-by-the-trigger"])
def test_with_soft_fail_a_failed_report_skips_the_wait_however_it_was_found(reporting_app, after):
    reporting_app(after=after, status="failed", message="缺货")
    dag_run = _start_and_wait(f"cb_soft_fail_{int(after)}", sensor_kwargs={"soft_fail": True})
    assert task_states(dag_run)[("wait", -1)] == "skipped"


def test_a_wait_stays_out_of_the_rate_limit_pool_however_it_is_declared():
    from airflow.providers.common.compat.sdk import DAG, TaskGroup

    with DAG("cb_pools", schedule=None, start_date=START, default_args={"pool": "octorpa"}):
        plain = OctoRpaRunSensor(task_id="plain", started_run={})
        mapped = OctoRpaRunSensor.partial(task_id="mapped").expand(started_run=[{}, {}])
        own = OctoRpaRunSensor.partial(task_id="own", default_args={"pool": "octorpa"}).expand(started_run=[{}])
        with TaskGroup("group", default_args={"pool": "octorpa"}):
            grouped = OctoRpaRunSensor.partial(task_id="grouped").expand(started_run=[{}])
        elsewhere = OctoRpaRunSensor.partial(task_id="elsewhere", pool="waits").expand(started_run=[{}])
    assert [plain.pool, mapped.pool, own.pool, grouped.pool] == ["default_pool"] * 4
    assert elsewhere.pool == "waits"  # a pool the user names for waits is kept


def test_the_sensors_old_argument_run_still_works_with_a_deprecation_warning():
    from airflow.exceptions import AirflowProviderDeprecationWarning
    from airflow.providers.common.compat.sdk import DAG

    with DAG("cb_old_run_argument", schedule=None, start_date=START):
        with pytest.warns(AirflowProviderDeprecationWarning, match="renamed started_run"):
            old = OctoRpaRunSensor(task_id="old", run={"report_key": "k", "flow_process_no": "F1"})
        mapped = OctoRpaRunSensor.partial(task_id="mapped").expand(run=[{}])  # 0.x DAG files parse as before
        with pytest.raises(TypeError, match="started_run only"):
            OctoRpaRunSensor(task_id="both", started_run={}, run={})
        with pytest.raises(TypeError, match="needs started_run"):
            OctoRpaRunSensor(task_id="neither")
    assert old.started_run == {"report_key": "k", "flow_process_no": "F1"}
    assert "run" not in vars(old)  # Airflow 2's BaseOperator.run is no longer shadowed
    assert mapped.task_id == "mapped"


def test_the_token_reaches_no_repr(route):
    callback = new_callback(route, "cb_repr", "manual", "trigger", -1)
    secret = callback.token[32:]
    for text in (repr(callback), repr({"airflow_callback_url": callback.url}), repr(callback.token)):
        assert secret not in text
    assert callback.url.endswith(secret) and str(callback.key) not in callback.url


def test_callbacks_are_refused_under_multi_team_before_anything_is_sent(emulator, monkeypatch, route):
    monkeypatch.setenv("AIRFLOW__OCTORPA__CALLBACK_BASE_URL", route)
    monkeypatch.setenv("AIRFLOW__CORE__MULTI_TEAM", "True")
    monkeypatch.setenv(
        "AIRFLOW_CONN_OCTORPA_DEFAULT",
        connection_json(emulator.webhook_url(ORDER_WEBHOOK), ORDER_SECRET, rate_limits=FAST_LIMITS),
    )
    with pytest.raises(OctoRpaConfigurationError, match=r"multi-team mode \(\[core\] multi_team\)"):
        OctoRpaTriggerOperator(task_id="t", app_params={"a": 1}, callback=True).execute({})
    assert emulator.state.snapshot("calls") == []


def test_loading_the_plugin_imports_neither_the_webservers_app_nor_its_csrf():
    """The scheduler, the triggerer and every task process load the plugin: on Airflow 2 only the
    webserver, which registers the route, may pay for Flask-AppBuilder and Flask-WTF."""
    import subprocess
    import sys

    code = (
        "import sys, airflow_octorpa.plugins.call_records as plugin; "
        "print(sorted(m for m in ('airflow.www.app', 'flask_wtf', 'flask_appbuilder') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"


def _wait_after(dag_id: str, change_record, retries: int = 0):
    """trigger >> a task that changes the call's record (``change_record(Variable, key)``) >> wait."""
    from airflow.providers.common.compat.sdk import DAG, Variable, task

    @task
    def change(run: dict):
        change_record(Variable, ReportKey.parse(run["report_key"]))

    with DAG(dag_id, schedule=None, start_date=START) as dag:
        trigger = OctoRpaTriggerOperator(task_id="trigger", app_params={"订单号": dag_id}, callback=True)
        wait = OctoRpaRunSensor(
            task_id="wait", started_run=trigger.output, timeout=60, poll_interval=1, retries=retries
        )
        change(trigger.output) >> wait
    return run_dag(dag)


def test_a_record_gone_during_the_wait_fails_it_without_inviting_a_second_run(
    reporting_app, monkeypatch, capfd, caplog
):
    from airflow_octorpa.triggers import report as report_trigger

    monkeypatch.setattr(report_trigger, "MISSING_GRACE_SECONDS", 1.0)
    reporting_app(fault="never")
    dag_run = _wait_after("cb_gone", lambda variable, key: variable.delete(key.variable), retries=2)
    assert task_states(dag_run)[("wait", -1)] == "failed"
    assert _try_number(dag_run, "wait") == 1  # gone is final: the worker confirmed it, retries cannot help
    if TASK_ERRORS_PRINTED:
        out = "".join(capfd.readouterr()) + caplog.text
        assert "No record awaits a report" in out and "before clearing the trigger task" in out
        assert "Clear the trigger task to start the app again" not in out


def test_a_record_that_cannot_be_read_is_not_taken_for_gone(reporting_app, monkeypatch, capfd, caplog):
    from airflow_octorpa.triggers import report as report_trigger

    monkeypatch.setattr(report_trigger, "MISSING_GRACE_SECONDS", 1.0)
    reporting_app(fault="never")
    dag_run = _wait_after("cb_unreadable", lambda variable, key: variable.set(key.variable, "not JSON"))
    assert task_states(dag_run)[("wait", -1)] == "failed"
    if TASK_ERRORS_PRINTED:
        out = "".join(capfd.readouterr()) + caplog.text
        assert "report record cannot be read" in out and "fernet_key" in out
        assert "do not clear the trigger task" in out and "No record awaits a report" not in out
