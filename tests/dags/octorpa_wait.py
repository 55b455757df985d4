"""Start an app that reports its end, wait for the report, and use its outputs downstream."""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.providers.common.compat.sdk import DAG, task

from airflow_octorpa.operators.octorpa import OctoRpaTriggerOperator
from airflow_octorpa.sensors.octorpa import OctoRpaRunSensor

# A retry for the infrastructure, every task: Airflow 3.0's executor may start a task whose state has
# moved on (409 on start) on a busy machine. A retried trigger task never calls twice (its record).
with DAG(
    dag_id="octorpa_wait",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    default_args={"retries": 1, "retry_delay": timedelta(seconds=2)},
):
    trigger = OctoRpaTriggerOperator(
        task_id="trigger",
        octorpa_conn_id="octorpa_callbacks",
        app_params={"订单号": "{{ run_id }}"},
        callback=True,
    )
    # Retries for the infrastructure: Airflow 3 fails a task that starts while its api-server restarts
    # (tests/test_scheduler.py restarts it), and a restart on a busy machine takes up to a minute.
    wait = OctoRpaRunSensor(
        task_id="wait",
        started_run=trigger.output,
        timeout=120,
        poll_interval=2,
        retries=4,
        retry_delay=timedelta(seconds=15),
    )

    # The same retries: the wait may find the report at once and this task start during the restart.
    @task(retries=4, retry_delay=timedelta(seconds=15))
    def ship(report: dict) -> str:
        """What a downstream task does with the app's outputs."""
        return str(report["outputs"]["waybill"])

    ship(wait.output)
