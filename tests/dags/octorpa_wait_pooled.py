"""Mapped waits in a DAG whose default_args name the rate-limit pool, as the Rate limits page
suggests for trigger tasks: the waits must hold none of its slots while a later trigger calls."""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.providers.common.compat.sdk import DAG

from airflow_octorpa.operators.octorpa import OctoRpaTriggerOperator
from airflow_octorpa.sensors.octorpa import OctoRpaRunSensor

with DAG(
    dag_id="octorpa_wait_pooled",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    # A retry for the infrastructure, every task: Airflow 3.0's executor may start a task whose state
    # has moved on (409 on start) on a busy machine. A retried trigger task never calls twice.
    default_args={"pool": "octorpa", "retries": 1, "retry_delay": timedelta(seconds=2)},
):
    started = OctoRpaTriggerOperator.partial(
        task_id="trigger", octorpa_conn_id="octorpa_callbacks", callback=True
    ).expand(app_params=[{"订单号": f"P-{i}"} for i in range(5)])
    waits = OctoRpaRunSensor.partial(task_id="wait", timeout=600, poll_interval=2).expand(started_run=started.output)
    # Runs while the five waits wait: with their five slots taken it could not start.
    late = OctoRpaTriggerOperator(task_id="late", octorpa_conn_id="octorpa_callbacks", app_params={"订单号": "P-late"})
    started >> late
