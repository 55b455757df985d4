"""
The seed's e-commerce case: a new order's number and address flow through XCom into the
"订单处理" (order processing) RPA app, which starts on a robot through its webhook trigger.

Needs a connection ``octorpa_default`` (type "Octopus RPA") pointing at the app's webhook, and
the ``octorpa`` pool (see the README). ``make demo`` runs this DAG against the bundled emulator.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.providers.common.compat.sdk import dag, task

from airflow_octorpa.operators.octorpa import OctoRpaTriggerOperator


# --8<-- [start:dag]
@dag(
    dag_id="example_octorpa_order",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["example", "octorpa"],
    # Retries for refusals a retry can fix (a robot briefly offline); the operator itself resends
    # rate-limited calls, and never resends one that may have started a run.
    default_args={"retries": 2, "retry_delay": timedelta(seconds=20)},
)
def example_octorpa_order():
    @task(multiple_outputs=True)
    def extract_order() -> dict:
        """Stands in for reading the new order from the shop's system."""
        return {"order_no": "SO-1001", "address": "上海市浦东新区世纪大道100号", "quantity": 10}

    order = extract_order()

    # The app's input variables (订单号, 收货地址, 数量) are filled from the order.
    process_order = OctoRpaTriggerOperator(
        task_id="process_order",
        octorpa_conn_id="octorpa_default",
        app_params={
            "订单号": order["order_no"],  # an XComArg: resolves to the native value
            "数量": order["quantity"],  # stays the number 10
            # a Jinja string renders to a string
            "收货地址": "{{ ti.xcom_pull(task_ids='extract_order', key='address') }}",
        },
    )

    @task
    def report(run: dict) -> str:
        print(f"Order SO-1001 is being processed by Octopus RPA run {run['flow_process_no']}")
        return run["flow_process_no"]

    report(process_order.output)


example_octorpa_order()
# --8<-- [end:dag]
