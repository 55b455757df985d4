"""A DAG scheduled by an Octopus RPA inbox's reports (Airflow 3: asset watchers); its task returns the
reports that scheduled its run, as [sequence, outputs] pairs, oldest first."""

from __future__ import annotations

from airflow_octorpa.version_compat import AIRFLOW_V_3

if AIRFLOW_V_3:  # this folder is the Airflow 2.11 cluster's too, which has no asset watchers
    from airflow.sdk import DAG, task

    from airflow_octorpa.callbacks.inbox import reports_of
    from airflow_octorpa.triggers.inbox import inbox_asset

    with DAG(dag_id="octorpa_inbox_consumer", schedule=[inbox_asset("test-orders")], catchup=False):

        @task
        def load(triggering_asset_events=None) -> list:
            return [[report["sequence"], report["outputs"]] for report in reports_of(triggering_asset_events)]

        load()
