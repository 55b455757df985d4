"""
Runs whoever started the app: each report the "订单处理" (order processing) app sends to the
inbox ``orders`` when it ends, started by the Octopus RPA console's own schedule, a file trigger or
by hand, schedules one run of this DAG with the app's outputs.

Needs Airflow 3 (asset watchers) and the inbox: ``octorpa inbox create orders`` prints the URL the
app's last step requests. See the docs' Inbox page.
"""

from __future__ import annotations

from airflow_octorpa.version_compat import AIRFLOW_V_3

if AIRFLOW_V_3:  # Airflow 2.11 has no asset watchers: this file defines no DAG there
    # --8<-- [start:dag]
    from airflow.sdk import dag, task

    from airflow_octorpa.callbacks.inbox import reports_of
    from airflow_octorpa.triggers.inbox import inbox_asset

    orders = inbox_asset("orders")  # the asset octorpa://inbox/orders, watched by the inbox's trigger

    @dag(schedule=[orders], catchup=False, tags=["example", "octorpa"])
    def example_octorpa_inbox():
        @task
        def load_orders(triggering_asset_events=None) -> list[dict]:
            """Airflow may fold several events into one run: take every report, oldest first."""
            reports = reports_of(triggering_asset_events)
            for report in reports:
                print(f"Report {report['report_id']} ({report['status']}): {report['outputs']}")
            return [report["outputs"] for report in reports if report["status"] == "succeeded"]

        load_orders()

    example_octorpa_inbox()
    # --8<-- [end:dag]
