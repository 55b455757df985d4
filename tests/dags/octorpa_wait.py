"""Start an app that reports its end, wait for the report, and use its outputs downstream."""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.providers.common.compat.sdk import DAG, task

from airflow_octorpa.operators.octorpa import OctoRpaTriggerOperator
from airflow_octorpa.sensors.octorpa import OctoRpaRunSensor

with DAG(dag_id="octorpa_wait", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
    trigger = OctoRpaTriggerOperator(
        task_id="trigger",
        octorpa_conn_id="octorpa_callbacks",
        app_params={"订单号": "{{ run_id }}"},
        callback=True,
    )
    # A retry for the infrastructure: Airflow 3.0 fails a task that runs while its api-server restarts.
    wait = OctoRpaRunSensor(
        task_id="wait", run=trigger.output, timeout=120, poll_interval=2, retries=1, retry_delay=timedelta(seconds=2)
    )

    @task
    def ship(report: dict) -> str:
        """What a downstream task does with the app's outputs."""
        return str(report["outputs"]["waybill"])

    ship(wait.output)
