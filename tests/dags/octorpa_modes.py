"""The same tasks with the slot hold in the worker and deferred: both must end the same way.

``single`` feeds a downstream ``.expand()`` over its dict (which needs the mapped length its
success path records), ``silent`` pushes no XCom (``do_xcom_push=False``), ``mapped`` feeds a
downstream mapped over its results.
"""

from __future__ import annotations

from datetime import datetime

from airflow.providers.common.compat.sdk import DAG, task

from airflow_octorpa.operators.octorpa import OctoRpaTriggerOperator

for mode, deferrable in (("worker", False), ("deferred", True)):
    with DAG(dag_id=f"octorpa_modes_{mode}", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
        single = OctoRpaTriggerOperator(
            task_id="single", app_params={"订单号": f"{mode}-single"}, deferrable=deferrable
        )
        OctoRpaTriggerOperator(
            task_id="silent", app_params={"订单号": f"{mode}-silent"}, deferrable=deferrable, do_xcom_push=False
        )
        mapped = OctoRpaTriggerOperator.partial(task_id="mapped", deferrable=deferrable).expand(
            app_params=[{"订单号": f"{mode}-m0"}, {"订单号": f"{mode}-m1"}]
        )

        @task
        def field(item: list) -> str:
            """One mapped task per key of the result dict."""
            return str(item[0])

        @task
        def check(result: dict) -> str:
            if not isinstance(result, dict) or not result.get("flow_process_no"):
                raise TypeError(f"got {result!r} instead of a result dict")
            return result["flow_process_no"]

        field.expand(item=single.output)
        check.expand(result=mapped.output)
