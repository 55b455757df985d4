"""Never twice, never lost: every injected fault, run through real ``dag.test()`` against the emulator.

Each test asserts from the emulator's record of started runs: no run started twice, and every
task either holds its run's flowProcessNo or failed with a clear "not started" or "may have
started" error.
"""

from __future__ import annotations

import datetime
import json
import logging
import math
import time

import pytest
from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException

from airflow_octorpa.call_record import STARTED, CallLedger, record_store
from airflow_octorpa.exceptions import CallOutcome, OctoRpaConfigurationError, OctoRpaTryLaterError
from airflow_octorpa.operators.octorpa import OctoRpaTriggerOperator
from airflow_octorpa.storage import VARIABLE_PREFIX
from tests.support.airflow_helpers import HAS_TASK_STATE_STORE, MemoryRecords, run_dag, task_states, xcom_return_values
from tests.support.canned_server import CannedAnswer, canned_server
from tests.support.settings import FAST_LIMITS, ORDER_SECRET, ORDER_WEBHOOK, connection_json
from tests.support.tls_server import tls_server

START = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)

pytestmark = pytest.mark.usefixtures("airflow_db")
requires_variable_records = pytest.mark.skipif(
    HAS_TASK_STATE_STORE, reason="Airflow 3.3 keeps the record in the task state store, not a Variable"
)


@pytest.fixture
def short_timeout_conn(emulator, monkeypatch):
    """The order webhook with a 1 s client timeout, so a 2.5 s late answer is lost."""
    monkeypatch.setenv(
        "AIRFLOW_CONN_OCTORPA_DEFAULT",
        connection_json(emulator.webhook_url(ORDER_WEBHOOK), ORDER_SECRET, rate_limits=FAST_LIMITS, timeout=1),
    )


def _run_one(dag_id: str, **operator_kwargs):
    from airflow.providers.common.compat.sdk import DAG

    operator_kwargs.setdefault("retries", 2)
    operator_kwargs.setdefault("retry_delay", datetime.timedelta(seconds=0))
    with DAG(dag_id, schedule=None, start_date=START) as dag:
        OctoRpaTriggerOperator(task_id="trigger", app_params={"订单号": dag_id}, **operator_kwargs)
    return run_dag(dag)


def _try_numbers(dag_run) -> int:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        return session.scalar(
            select(TaskInstance.try_number).where(
                TaskInstance.dag_id == dag_run.dag_id,
                TaskInstance.run_id == dag_run.run_id,
                TaskInstance.task_id == "trigger",
            )
        )


@pytest.mark.parametrize(
    ("fault", "runs_started"),
    [
        ({"kind": "delay_after_start", "seconds": 2.5}, 1),
        ({"kind": "reset_after_start"}, 1),
        ({"kind": "status_after_start", "status": 502}, 1),
        ({"kind": "status_before_start", "status": 503}, 0),
        ({"kind": "status_before_start", "status": 500}, 0),
        ({"kind": "html", "status": 502}, 0),
        ({"kind": "drop_before_read"}, 0),
        # HTTP 200 without the service's answer: a proxy's page, or an error body with status 200.
        ({"kind": "html", "status": 200}, 0),
        ({"kind": "status_after_start", "status": 200}, 1),
    ],
    ids=lambda v: v["kind"] + str(v.get("status", "")) if isinstance(v, dict) else str(v),
)
def test_unknown_outcome_fails_once_without_resending(emulator, short_timeout_conn, fault, runs_started):
    emulator.state.faults.queue(ORDER_WEBHOOK, [fault])
    dag_run = _run_one(f"eo_unknown_{fault['kind']}_{fault.get('status', '')}")

    assert task_states(dag_run)[("trigger", -1)] == "failed"
    assert _try_numbers(dag_run) == 1  # failed fast: no retry was burnt, nothing was resent
    assert len(emulator.state.snapshot("calls")) == 1
    assert len(emulator.state.snapshot("runs")) == runs_started


def test_a_tls_error_after_delivery_is_never_resent(monkeypatch):
    """A server that read the whole POST and then broke the TLS stream got the call once: the
    task fails as "may have started" instead of resending it as a connect failure."""
    with tls_server("after_request") as (url, log, cert):
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert.cert))
        monkeypatch.setenv(
            "AIRFLOW_CONN_OCTORPA_DEFAULT", connection_json(url, "secret-1", rate_limits=FAST_LIMITS, timeout=5)
        )
        dag_run = _run_one("eo_tls_after_delivery")

    assert task_states(dag_run)[("trigger", -1)] == "failed"
    assert _try_numbers(dag_run) == 1
    assert len(log.requests) == 1


def test_rate_limited_calls_are_resent_and_start_once(emulator, order_conn):
    emulator.state.faults.queue(ORDER_WEBHOOK, [{"kind": "rate_limit", "count": 2}])
    dag_run = _run_one("eo_rate_limited")

    assert task_states(dag_run)[("trigger", -1)] == "success"
    assert [c["status"] for c in emulator.state.snapshot("calls")] == [429, 429, 200]
    (run,) = emulator.state.snapshot("runs")
    assert xcom_return_values(dag_run, "trigger")[-1]["flow_process_no"] == run["flow_process_no"]


def test_opting_in_resends_an_unknown_outcome_on_retry(emulator, short_timeout_conn):
    emulator.state.faults.queue(ORDER_WEBHOOK, [{"kind": "reset_after_start"}])
    dag_run = _run_one("eo_resend_opt_in", resend_on_unknown_outcome=True, retries=1)

    assert task_states(dag_run)[("trigger", -1)] == "success"
    runs = emulator.state.snapshot("runs")
    assert len(runs) == 2  # the documented risk of opting in: the app ran twice
    assert xcom_return_values(dag_run, "trigger")[-1]["flow_process_no"] == runs[1]["flow_process_no"]


def test_execution_timeout_that_cannot_fit_the_call_and_hold_is_refused_before_sending(emulator, monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_OCTORPA_DEFAULT",
        connection_json(emulator.webhook_url(ORDER_WEBHOOK), ORDER_SECRET, rate_limits="1/20 seconds", pool_size=1),
    )
    dag_run = _run_one("eo_timeout_too_short", execution_timeout=datetime.timedelta(seconds=30))

    assert task_states(dag_run)[("trigger", -1)] == "failed"
    assert _try_numbers(dag_run) == 1  # a configuration error: no retry
    assert emulator.state.snapshot("calls") == []
    with pytest.raises(OctoRpaConfigurationError, match=r"execution_timeout=0:00:30 .* at least 55 s"):
        OctoRpaTriggerOperator(
            task_id="t", app_params={"a": 1}, execution_timeout=datetime.timedelta(seconds=30)
        ).execute({})


# The answer arrives one byte at a time (every read well inside the client timeout of 2 s): a
# slow exchange the client timeout cannot cut, so only execution_timeout can.
_ANSWER = json.dumps({"enterpriseId": "e-1", "flowId": "f-1", "flowProcessNo": "639086220306619793"}).encode()


def _dripping_conn(monkeypatch, url: str) -> None:
    # One call per 4 s from one slot: a 4 s hold. execution_timeout must then be 2 + 4 + 5 = 11 s.
    monkeypatch.setenv(
        "AIRFLOW_CONN_OCTORPA_DEFAULT",
        connection_json(url, "secret-1", timeout=2, rate_limits="1/4 seconds", pool_size=1),
    )


def test_timeout_during_the_hold_after_a_started_run_succeeds_and_keeps_the_slot(monkeypatch, capfd):
    answer = CannedAnswer(body=_ANSWER, drip=9.0 / len(_ANSWER))  # the exchange ends after about 9 s
    with canned_server(answer) as url:
        _dripping_conn(monkeypatch, url)
        dag_run = _run_one("eo_timeout_in_hold", retries=0, execution_timeout=datetime.timedelta(seconds=11))

    # The timeout fired during the hold: the task still keeps its slot to the hold's end, and ends
    # as a success naming the run it started, not as a failure that invites a second trigger.
    assert task_states(dag_run)[("trigger", -1)] == "success"
    assert xcom_return_values(dag_run, "trigger")[-1]["flow_process_no"] == "639086220306619793"
    assert len(answer.requests) == 1
    assert _end(dag_run) >= answer.answered_at[0] + 4.0
    assert "execution_timeout fired after Octopus RPA run flowProcessNo=639086220306619793" in capfd.readouterr().out


def test_timeout_while_the_answer_is_out_fails_as_may_have_started(monkeypatch, capfd):
    answer = CannedAnswer(body=_ANSWER, drip=1.0)  # would take a minute
    with canned_server(answer) as url:
        _dripping_conn(monkeypatch, url)
        dag_run = _run_one("eo_timeout_in_call", retries=2, execution_timeout=datetime.timedelta(seconds=11))

    assert task_states(dag_run)[("trigger", -1)] == "failed"
    assert _try_numbers(dag_run) == 1  # not retried: the app may have started
    assert len(answer.requests) == 1
    # execution_timeout cut the exchange 11 s after the try began; the hold (4 s) is kept after it too.
    assert _end(dag_run) >= answer.received_at[0] + 11.0 + 4.0 - 1.0  # the request left within 1 s of the start
    log = capfd.readouterr().out
    assert "MAY HAVE STARTED" in log and "execution_timeout fired while it waited for the answer" in log


@pytest.mark.parametrize(
    ("retry_after", "execution_timeout", "reason"),
    [
        ("3600", None, "asks to wait 3600 s"),
        ("30", 20, "would not fit in execution_timeout"),
    ],
)
def test_long_retry_after_fails_for_the_tasks_retries_instead_of_sleeping(
    monkeypatch, retry_after, execution_timeout, reason
):
    refusal = json.dumps({"code": "TooManyRequests", "description": "slow down"}).encode()
    answer = CannedAnswer(status=429, body=refusal, headers={"Retry-After": retry_after})
    with canned_server(answer) as url:
        monkeypatch.setenv(
            "AIRFLOW_CONN_OCTORPA_DEFAULT", connection_json(url, "secret-1", timeout=5, rate_limits=FAST_LIMITS)
        )
        kwargs = {"execution_timeout": datetime.timedelta(seconds=execution_timeout)} if execution_timeout else {}
        with pytest.raises(OctoRpaTryLaterError) as caught:
            OctoRpaTriggerOperator(task_id="t", app_params={"a": 1}, **kwargs).execute({})
    assert len(answer.requests) == 1
    assert reason in str(caught.value) and "Nothing was started" in str(caught.value)
    assert caught.value.outcome is CallOutcome.NOT_STARTED
    assert not isinstance(caught.value, AirflowFailException)  # the task's own retries send it later


def test_a_failed_write_of_started_does_not_fail_a_started_run(emulator, order_conn, monkeypatch, capfd):
    # No real store fails on demand: the write is made to fail here.
    def broken(*args, **kwargs):
        raise OSError("the task state store is unreachable")

    monkeypatch.setattr(CallLedger, "started", broken)
    dag_run = _run_one("eo_started_write_fails", retries=0)

    (run,) = emulator.state.snapshot("runs")
    assert task_states(dag_run)[("trigger", -1)] == "success"
    assert xcom_return_values(dag_run, "trigger")[-1]["flow_process_no"] == run["flow_process_no"]
    assert "Could not record that run" in capfd.readouterr().out


def test_the_record_keeps_the_schedulers_max_tries_not_the_workers_retries():
    import logging

    store = MemoryRecords()
    record = CallLedger(store, 3, logging.getLogger()).sending("hook-1", None)
    assert record.generation == 3
    assert CallLedger(store, 3, logging.getLogger()).prior() == record  # a retry: max_tries unchanged
    assert CallLedger(store, 5, logging.getLogger()).prior() is None  # a clear: try_number + retries


def test_the_generation_is_the_task_instances_max_tries():
    import logging

    class TaskInstance:
        max_tries = 3

    assert CallLedger.from_context({"ti": TaskInstance()}, logging.getLogger())._generation == 3


def test_an_unreadable_record_counts_as_may_have_started():
    import logging

    store = MemoryRecords({"state": "sent", "by": "a future version"})
    prior = CallLedger(store, 1, logging.getLogger()).prior()
    assert prior is not None and prior.state == "unknown"


def _fail_first_try(message: str, then=None):
    """A ``pre_execute``/``post_execute`` hook that fails try 1 (after running ``then``), so that try 2
    is a retry of the same task instance."""

    def hook(context, *result):
        if context["ti"].try_number == 1:
            if then is not None:
                then(context)
            raise AirflowException(message)

    return hook


@pytest.fixture
def failing_record_reads(monkeypatch):
    """How many of the metadata database's next reads of call records fail (``math.inf``: all).

    No real database fails on demand, so Airflow's metastore backend is made to fail here; Airflow
    itself turns the failure into "no such Variable" (2.11 logs it, 3.x's API answers 404). The
    probe's own reads are spared only while ``spare_probe`` is set."""
    state = {"left": 0.0, "spare_probe": True}
    from airflow.secrets.metastore import MetastoreBackend

    real_get = MetastoreBackend.get_variable

    def get_variable(self, key, *args, **kwargs):
        is_probe = key.endswith(".probe") and state["spare_probe"]
        if state["left"] > 0 and key.startswith(VARIABLE_PREFIX) and not is_probe:
            state["left"] -= 1
            raise OSError("the metadata database went away")
        return real_get(self, key, *args, **kwargs)

    monkeypatch.setattr(MetastoreBackend, "get_variable", get_variable)
    return state


def _arm(state, reads, spare_probe=True):
    def arm(context):
        state.update(left=reads, spare_probe=spare_probe)

    return arm


@requires_variable_records
def test_a_retry_whose_record_read_fails_once_does_not_send_again(emulator, order_conn, failing_record_reads):
    """The retry must not take a failed read for "no earlier call"."""
    dag_run = _run_one(
        "eo_flaky_record_read",
        retries=1,
        post_execute=_fail_first_try("fails after its call", then=_arm(failing_record_reads, 1)),
    )

    assert failing_record_reads["left"] == 0  # the failure fired
    (run,) = emulator.state.snapshot("runs")  # one run: the retry found the record
    assert task_states(dag_run)[("trigger", -1)] == "success"
    assert xcom_return_values(dag_run, "trigger")[-1]["flow_process_no"] == run["flow_process_no"]


@requires_variable_records
def test_a_record_read_that_keeps_failing_sends_nothing_and_is_retryable(emulator, order_conn, failing_record_reads):
    dag_run = _run_one(
        "eo_broken_record_read",
        retries=1,
        post_execute=_fail_first_try("fails after its call", then=_arm(failing_record_reads, math.inf, False)),
    )

    assert task_states(dag_run)[("trigger", -1)] == "failed"
    assert _try_numbers(dag_run) == 2  # the read's failure is retryable, not a final failure
    assert len(emulator.state.snapshot("runs")) == 1


def test_a_record_left_by_a_deleted_run_with_the_same_run_id_is_not_taken(emulator, order_conn):
    """A DAG run deleted while its task awaited a retry leaves its record; a new run with the same
    run_id triggers anew instead of returning the deleted run's flowProcessNo."""

    def plant_leftover(context):
        # What the deleted run's try wrote: the same key (dag, run_id, task, map index), another run.
        leftover = {
            "state": STARTED,
            "generation": context["ti"].max_tries,
            "sent_at": time.time() - 600,
            "webhook": ORDER_WEBHOOK,
            "robot": None,
            "result": {"flow_process_no": "from-a-deleted-run", "flow_id": None, "enterprise_id": None},
            "clear_number": context["dag_run"].clear_number,
            "dag_run_started": "2025-12-31T23:00:00+00:00",
        }
        record_store(context).write(leftover)

    dag_run = _run_one(
        "eo_deleted_run", retries=1, pre_execute=_fail_first_try("fails before its call", plant_leftover)
    )

    (run,) = emulator.state.snapshot("runs")
    assert task_states(dag_run)[("trigger", -1)] == "success"
    assert xcom_return_values(dag_run, "trigger")[-1]["flow_process_no"] == run["flow_process_no"]


def test_a_cleared_dag_run_is_a_new_generation_even_with_the_same_max_tries():
    """Lowering retries and clearing can give the same max_tries; the run's clear_number still moves."""
    store = MemoryRecords()
    log = logging.getLogger()
    record = CallLedger(store, 3, log, clear_number=0, dag_run_started="2026-01-01T00:00:00+00:00").sending("h", None)
    assert CallLedger(store, 3, log, clear_number=0, dag_run_started="2026-01-01T00:00:00+00:00").prior() == record
    assert CallLedger(store, 3, log, clear_number=1, dag_run_started="2026-01-01T00:00:00+00:00").prior() is None
    assert CallLedger(store, 3, log, clear_number=0, dag_run_started="2026-02-01T00:00:00+00:00").prior() is None


def test_a_record_from_before_run_identity_is_matched_on_max_tries_alone():
    store = MemoryRecords({"state": "started", "generation": 3, "sent_at": 1.0, "webhook": "h", "robot": None,
                            "result": {"flow_process_no": "1"}})  # fmt: skip
    prior = CallLedger(store, 3, logging.getLogger(), clear_number=2, dag_run_started="2026-01-01T00:00:00").prior()
    assert prior is not None and prior.state == "started"


def test_the_generation_reads_the_dag_runs_clear_number_and_start():
    class DagRun:
        clear_number = 2
        start_date = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)

    class TaskInstance:
        max_tries = 3
        try_number = 2

    ledger = CallLedger.from_context({"ti": TaskInstance(), "dag_run": DagRun()}, logging.getLogger())
    assert (ledger._generation, ledger._clear_number, ledger._dag_run_started) == (3, 2, "2026-01-01T00:00:00+00:00")


def _end(dag_run) -> float:
    """When the task instance ended (Airflow 2.11's dag.test() records no start_date)."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        end = session.scalar(
            select(TaskInstance.end_date).where(
                TaskInstance.dag_id == dag_run.dag_id, TaskInstance.run_id == dag_run.run_id
            )
        )
    return end.timestamp()
