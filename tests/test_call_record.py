"""Where the call record lives on every Airflow version, and that it goes when its DAG run ends.

Airflow 3.3 keeps it in the task state store; earlier versions in a Variable that the provider's
listener removes once the DAG run has ended. These run real tasks through ``dag.test()``.
"""

from __future__ import annotations

import datetime
import logging

import pytest

from airflow_octorpa.call_record import STARTED, CallLedger
from airflow_octorpa.operators.octorpa import OctoRpaTriggerOperator
from airflow_octorpa.storage import VARIABLE_PREFIX, VariableRecords, variable_key
from tests.support.airflow_helpers import HAS_TASK_STATE_STORE, run_dag, task_states, xcom_return_values
from tests.support.settings import ORDER_WEBHOOK

START = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)

pytestmark = pytest.mark.usefixtures("airflow_db")


def _stored_keys() -> list[str]:
    from airflow.models.variable import Variable
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        return list(session.scalars(select(Variable.key).where(Variable.key.startswith(VARIABLE_PREFIX))))


def test_a_record_in_a_variable_is_read_back_by_the_next_try_and_removed_when_the_run_ends():
    from airflow.providers.common.compat.sdk import DAG, task

    @task
    def record_a_started_call(**context):
        ti = context["ti"]
        store = VariableRecords(ti.dag_id, ti.run_id, ti.task_id, ti.map_index)
        ledger = CallLedger(store, ti.max_tries, logging.getLogger(__name__))
        assert ledger.prior() is None
        ledger.started(ledger.sending("hook-1", "bot-1"), {"flow_process_no": "42"})
        # What the next try of this task instance would read; a clear (new generation) reads nothing.
        again = CallLedger(VariableRecords(ti.dag_id, ti.run_id, ti.task_id, ti.map_index), ti.max_tries, ledger._log)
        cleared = CallLedger(store, ti.max_tries + 1, ledger._log)
        prior = again.prior()
        return {"key": store.key, "state": prior.state, "result": prior.result, "after_clear": cleared.prior()}

    with DAG("record_in_variable", schedule=None, start_date=START) as dag:
        record_a_started_call()
    dag_run = run_dag(dag)

    assert task_states(dag_run)[("record_a_started_call", -1)] == "success"
    seen = xcom_return_values(dag_run, "record_a_started_call")[-1]
    assert seen["state"] == STARTED and seen["result"] == {"flow_process_no": "42"} and seen["after_clear"] is None
    assert seen["key"] == variable_key(dag_run.dag_id, dag_run.run_id, "record_a_started_call", -1)
    assert seen["key"] not in _stored_keys()  # the run ended: its records went with it


def test_without_a_task_state_store_the_operators_record_is_a_variable_while_the_run_lasts(emulator, order_conn):
    from airflow.providers.common.compat.sdk import DAG, task

    @task
    def keys_while_running():
        return _stored_keys()

    with DAG("record_while_running", schedule=None, start_date=START) as dag:
        trigger = OctoRpaTriggerOperator(task_id="trigger", app_params={"订单号": "V-1"})
        trigger >> keys_while_running()
    dag_run = run_dag(dag)

    assert task_states(dag_run)[("keys_while_running", -1)] == "success"
    (run,) = emulator.state.snapshot("runs")
    assert xcom_return_values(dag_run, "trigger")[-1]["flow_process_no"] == run["flow_process_no"]
    key = variable_key(dag_run.dag_id, dag_run.run_id, "trigger", -1)
    during = xcom_return_values(dag_run, "keys_while_running")[-1]
    if HAS_TASK_STATE_STORE:
        assert key not in during  # Airflow 3.3 keeps it in the task state store
    else:
        assert key in during
    assert key not in _stored_keys()
    assert emulator.state.snapshot("calls")[0]["webhook_id"] == ORDER_WEBHOOK


def test_a_variable_key_fits_airflows_limit_and_its_api_path_whatever_the_names():
    key = variable_key("d" * 250, "scheduled__2026-01-01T00:00:00+00:00/with?odd#chars", "t", 3)
    assert key.startswith(VARIABLE_PREFIX + "d") and len(key) <= 250 and not set("/?#% ") & set(key)
    assert key == variable_key("d" * 250, "scheduled__2026-01-01T00:00:00+00:00/with?odd#chars", "t", 3)
    assert key != variable_key("d" * 250, "scheduled__2026-01-01T00:00:00+00:00/with?odd#chars", "t", 4)
    assert variable_key("orders", "r", "t", -1).startswith("octorpa_call.orders.")
