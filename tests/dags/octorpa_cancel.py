"""Start an app that reports progress until it is told to stop; the tests mark each wait failed."""

from __future__ import annotations

import time
from datetime import datetime, timedelta

from airflow.providers.common.compat.sdk import DAG, task

from airflow_octorpa.operators.octorpa import OctoRpaTriggerOperator
from airflow_octorpa.sensors.octorpa import OctoRpaRunSensor

with DAG(
    dag_id="octorpa_cancel",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    default_args={"retries": 1, "retry_delay": timedelta(seconds=2)},  # the infrastructure's, as octorpa_wait's
):
    trigger = OctoRpaTriggerOperator(
        task_id="trigger", octorpa_conn_id="octorpa_callbacks", app_params={"订单号": "{{ run_id }}"}, callback=True
    )
    OctoRpaRunSensor(task_id="wait", started_run=trigger.output, timeout=300, poll_interval=2, retries=0)

    @task
    def keep_the_run_open() -> None:
        """The DAG run outlasts the wait: its end (which also asks the run to stop) cannot be why the app heard."""
        time.sleep(90)

    keep_the_run_open()

with DAG(
    dag_id="octorpa_cancel_reschedule",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    default_args={"retries": 1, "retry_delay": timedelta(seconds=2)},
):
    trigger = OctoRpaTriggerOperator(
        task_id="trigger", octorpa_conn_id="octorpa_callbacks", app_params={"订单号": "{{ run_id }}"}, callback=True
    )
    OctoRpaRunSensor(
        task_id="wait", started_run=trigger.output, deferrable=False, timeout=300, poll_interval=5, retries=0
    )
