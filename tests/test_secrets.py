"""The secret and every sign value stay out of logs, rendered fields, XCom, errors and reprs."""

from __future__ import annotations

import datetime

import pytest

from airflow_octorpa.emulator import expected_sign
from airflow_octorpa.hooks.octorpa import OctoRpaHook
from airflow_octorpa.operators.octorpa import OctoRpaTriggerOperator
from tests.support.airflow_helpers import AIRFLOW_VERSION, dag_bag, run_dag
from tests.support.settings import EXAMPLE_DAGS, FAST_LIMITS, ORDER_SECRET, ORDER_WEBHOOK, connection_json

pytestmark = pytest.mark.usefixtures("airflow_db")

WRONG_SECRET = "wrong-secret-for-the-scan"


def _everything_airflow_stored(dag_runs) -> str:
    """Rendered fields, XComs, task state records and call-record Variables of the runs, as one text."""
    from airflow.models.renderedtifields import RenderedTaskInstanceFields as RTIF
    from airflow.models.variable import Variable
    from airflow.utils.session import create_session
    from sqlalchemy import select

    try:
        from airflow.models.xcom import XComModel as XCom
    except ImportError:  # Airflow 2
        from airflow.models.xcom import XCom  # type: ignore[no-redef]
    models = [RTIF, XCom]
    try:
        from airflow.models.task_state_store import TaskStateStoreModel

        models.append(TaskStateStoreModel)
    except ImportError:  # before Airflow 3.3 the records are Variables
        pass
    parts = []
    with create_session() as session:
        for dag_run in dag_runs:
            for model in models:
                rows = session.scalars(
                    select(model).where(model.dag_id == dag_run.dag_id, model.run_id == dag_run.run_id)
                ).all()
                parts += [repr({c.name: getattr(row, c.key, None) for c in model.__table__.columns}) for row in rows]
        parts += [f"{row.key}={row.val}" for row in session.scalars(select(Variable)).all()]
    return "\n".join(parts)


def test_no_secret_or_sign_anywhere_airflow_writes(emulator, order_conn, monkeypatch, capfd):
    from airflow.providers.common.compat.sdk import DAG

    bag = dag_bag(EXAMPLE_DAGS)
    dag_runs = [bag.dags[dag_id].test() for dag_id in ("example_octorpa_order", "example_octorpa_mapped_orders")]
    monkeypatch.setenv(
        "AIRFLOW_CONN_OCTORPA_WRONG",
        connection_json(emulator.webhook_url(ORDER_WEBHOOK), WRONG_SECRET, rate_limits=FAST_LIMITS),
    )
    with DAG("secrets_failing", schedule=None, start_date=datetime.datetime(2026, 1, 1)) as failing:
        OctoRpaTriggerOperator(task_id="trigger", octorpa_conn_id="octorpa_wrong", app_params={"订单号": "SO-X"})
    dag_runs.append(run_dag(failing))

    calls = emulator.state.snapshot("calls")
    assert len(calls) == 5 and [c["status"] for c in calls].count(400) == 1
    signs = {expected_sign(str(c["timestamp"]), ORDER_SECRET) for c in calls}
    signs |= {expected_sign(str(c["timestamp"]), WRONG_SECRET) for c in calls}
    logs = capfd.readouterr()
    stored = _everything_airflow_stored(dag_runs)
    assert "flow_process_no" in stored and "SignatureVerificationFailureOrTimestampExpired" in logs.out + logs.err
    for text in (_without_airflow_3_0_mask_requests(logs.out), _without_airflow_3_0_mask_requests(logs.err), stored):
        for secret in (ORDER_SECRET, WRONG_SECRET, *signs):
            assert secret not in text


def _without_airflow_3_0_mask_requests(log: str) -> str:
    """Airflow 3.0's task supervisor logs each request to mask a secret at debug level, with the secret
    (``MaskSecret(value=...)``; 3.1 omits the body): Airflow's own leak, in the README. Only those
    lines are left out; everything the provider logs is still scanned."""
    if AIRFLOW_VERSION.release[:2] != (3, 0):
        return log
    return "\n".join(line for line in log.splitlines() if "MaskSecret(value=" not in line)


def test_no_secret_in_reprs_or_error_messages(emulator, monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_OCTORPA_DEFAULT",
        connection_json(emulator.webhook_url(ORDER_WEBHOOK), WRONG_SECRET, rate_limits=FAST_LIMITS),
    )
    hook = OctoRpaHook()
    texts = [repr(hook.config), str(hook.config)]
    try:
        hook.trigger({"订单号": "SO-1"})
    except Exception as err:  # the refusal, with its vendor fields
        texts += [str(err), repr(err), repr(err.__dict__)]
    (call,) = emulator.state.snapshot("calls")
    for text in texts:
        assert WRONG_SECRET not in text
        assert expected_sign(str(call["timestamp"]), WRONG_SECRET) not in text
