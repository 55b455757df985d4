"""Start an app that reports progress until it is told to stop; the tests mark each wait failed."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any

from airflow.providers.common.compat.sdk import DAG, task

from airflow_octorpa.operators.octorpa import OctoRpaTriggerOperator
from airflow_octorpa.sensors.octorpa import OctoRpaRunSensor


def _start_and_wait(dag_id: str, **wait_kwargs: Any) -> DAG:
    with DAG(
        dag_id=dag_id,
        schedule=None,
        start_date=datetime(2026, 1, 1),
        catchup=False,
        default_args={"retries": 1, "retry_delay": timedelta(seconds=2)},  # the infrastructure's, as octorpa_wait's
    ) as dag:
        trigger = OctoRpaTriggerOperator(
            task_id="trigger", octorpa_conn_id="octorpa_callbacks", app_params={"订单号": "{{ run_id }}"}, callback=True
        )
        OctoRpaRunSensor(task_id="wait", started_run=trigger.output, timeout=300, retries=0, **wait_kwargs)
    return dag


deferred = _start_and_wait("octorpa_cancel", poll_interval=2)
with deferred:

    @task
    def keep_the_run_open() -> None:
        """The DAG run outlasts the wait: its end (which also asks the run to stop) cannot be why the app heard."""
        time.sleep(90)

    keep_the_run_open()

rescheduled = _start_and_wait("octorpa_cancel_reschedule", deferrable=False, poll_interval=5)
