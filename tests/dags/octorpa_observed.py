"""Three calls for the observability test: one resent after a 429 (worker mode), one deferred, and
one whose answer is lost. What listeners and metrics see of them is checked from outside."""

from __future__ import annotations

from datetime import datetime

from airflow.providers.common.compat.sdk import DAG

from airflow_octorpa.operators.octorpa import OctoRpaTriggerOperator

with DAG(dag_id="octorpa_observed", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
    worker = OctoRpaTriggerOperator(task_id="worker", app_params={"订单号": "OBS-W"}, deferrable=False)
    deferred = OctoRpaTriggerOperator(task_id="deferred", app_params={"订单号": "OBS-D"}, deferrable=True)
    lost = OctoRpaTriggerOperator(
        task_id="lost",
        octorpa_conn_id="octorpa_vendor",
        app_params={"变量1": "OBS-L", "变量2": "B", "变量3": 10},
        deferrable=False,
    )
    worker >> deferred >> lost
