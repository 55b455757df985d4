"""One trigger whose slot hold (20 s) leaves time to kill its worker after the run started."""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG

from airflow_octorpa.operators.octorpa import OctoRpaTriggerOperator

with DAG(dag_id="octorpa_crash", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
    OctoRpaTriggerOperator(
        task_id="trigger",
        octorpa_conn_id="octorpa_slow",
        app_params={"订单号": "{{ run_id }}"},
        deferrable=False,
        retries=1,
        retry_delay=timedelta(seconds=1),
    )
