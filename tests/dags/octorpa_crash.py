"""One trigger whose slot hold (20 s) leaves time to kill its worker after the run started.

Its ``retries`` are read from ``$AIRFLOW_HOME/octorpa_crash_retries`` when the file exists, as a
DAG might read them from a Variable: the test changes them between the tries, so the worker's
``retries`` differ from what the scheduler set ``max_tries`` from.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path

from airflow.providers.common.compat.sdk import DAG

from airflow_octorpa.operators.octorpa import OctoRpaTriggerOperator

_RETRIES_FILE = Path(os.environ.get("AIRFLOW_HOME", "."), "octorpa_crash_retries")

# octorpa_running_clear: the same task, cleared while it runs (its own DAG, so that clearing it
# touches no other test's run).
for dag_id in ("octorpa_crash", "octorpa_running_clear"):
    with DAG(dag_id=dag_id, schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
        OctoRpaTriggerOperator(
            task_id="trigger",
            octorpa_conn_id="octorpa_slow",
            app_params={"订单号": "{{ run_id }}"},
            deferrable=False,
            retries=int(_RETRIES_FILE.read_text()) if _RETRIES_FILE.exists() else 1,
            retry_delay=timedelta(seconds=1),
        )
