"""Never twice, never lost: every injected fault, run through real ``dag.test()`` against the emulator.

Each test asserts from the emulator's record of started runs: no run started twice, and every
task either holds its run's flowProcessNo or failed with a clear "not started" or "may have
started" error.
"""

from __future__ import annotations

import datetime

import pytest
from airflow_helpers import run_dag, task_states, xcom_return_values
from conftest import FAST_LIMITS, ORDER_SECRET, ORDER_WEBHOOK, connection_json

from airflow_octorpa.operators.octorpa import OctoRpaTriggerOperator

START = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)

pytestmark = pytest.mark.usefixtures("airflow_db")


@pytest.fixture
def short_timeout_conn(emulator, monkeypatch):
    """The order webhook with a 1 s client timeout, so a 2.5 s late answer is lost."""
    monkeypatch.setenv(
        "AIRFLOW_CONN_OCTORPA_DEFAULT",
        connection_json(emulator.webhook_url(ORDER_WEBHOOK), ORDER_SECRET, rate_limits=FAST_LIMITS, timeout=1),
    )


def _run_one(dag_id: str, **operator_kwargs):
    from airflow.sdk import DAG

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


def test_retry_after_a_crash_returns_the_started_run(emulator, monkeypatch):
    # The hold after the call (3 s: 1 call per 3 s, one slot) outlasts the execution timeout, so
    # the first try dies after its run started; the retry must return that run, not start another.
    monkeypatch.setenv(
        "AIRFLOW_CONN_OCTORPA_DEFAULT",
        connection_json(emulator.webhook_url(ORDER_WEBHOOK), ORDER_SECRET, rate_limits="1/3 seconds", pool_slots=1),
    )
    dag_run = _run_one("eo_crash_after_start", retries=1, execution_timeout=datetime.timedelta(seconds=1))

    assert task_states(dag_run)[("trigger", -1)] == "success"
    assert _try_numbers(dag_run) == 2
    (run,) = emulator.state.snapshot("runs")
    assert len(emulator.state.snapshot("calls")) == 1
    assert xcom_return_values(dag_run, "trigger")[-1]["flow_process_no"] == run["flow_process_no"]


def test_wrong_secret_fails_fast_without_burning_retries(emulator, monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_OCTORPA_DEFAULT",
        connection_json(emulator.webhook_url(ORDER_WEBHOOK), "wrong-secret", rate_limits=FAST_LIMITS),
    )
    dag_run = _run_one("eo_wrong_secret", retries=3)

    assert task_states(dag_run)[("trigger", -1)] == "failed"
    assert _try_numbers(dag_run) == 1
    assert len(emulator.state.snapshot("calls")) == 1


def test_each_map_index_and_each_dag_run_is_its_own_trigger(emulator, order_conn):
    from airflow.sdk import DAG

    with DAG("eo_mapped", schedule=None, start_date=START) as dag:
        OctoRpaTriggerOperator.partial(task_id="trigger").expand(app_params=[{"订单号": "same"}, {"订单号": "same"}])
    run_dag(dag)
    run_dag(dag)

    assert len(emulator.state.snapshot("runs")) == 4
