"""A deferred slot hold (20 s) that the DAG run's ``dagrun_timeout`` (8 s) cuts short: the scheduler
skips the task although its run started, and the provider's listener notes the run on it."""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.providers.common.compat.sdk import DAG

from airflow_octorpa.operators.octorpa import OctoRpaTriggerOperator

with DAG(
    dag_id="octorpa_dagrun_timeout",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    dagrun_timeout=timedelta(seconds=8),
):
    OctoRpaTriggerOperator(
        task_id="trigger",
        octorpa_conn_id="octorpa_slow",
        app_params={"订单号": "{{ run_id }}"},
        deferrable=True,
    )
