"""Start N app runs that report their end (mapped), wait for each report, collect the outputs."""

from __future__ import annotations

from datetime import datetime

from airflow.providers.common.compat.sdk import DAG, task

from airflow_octorpa.operators.octorpa import OctoRpaTriggerOperator
from airflow_octorpa.sensors.octorpa import OctoRpaRunSensor

with DAG(
    dag_id="octorpa_wait_mapped",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    params={"n": 4},
):

    @task
    def orders(**context) -> list[dict]:
        n = int(context["params"]["n"])
        return [{"订单号": f"{context['run_id']}-{i:03d}"} for i in range(n)]

    started = OctoRpaTriggerOperator.partial(
        task_id="trigger", octorpa_conn_id="octorpa_callbacks", callback=True
    ).expand(app_params=orders())
    waits = OctoRpaRunSensor.partial(task_id="wait", timeout=3600).expand(started_run=started.output)  # polls every 5 s

    @task
    def collect(reports: list[dict]) -> list[str]:
        return sorted(str(report["outputs"]["waybill"]) for report in reports)

    collect(waits.output)
