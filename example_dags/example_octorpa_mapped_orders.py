"""
Start the "订单处理" app once per new order: the operator is mapped over a list of orders, and
every mapped task sits in the ``octorpa`` pool so the account's rate limit is shared.

Each order is its own trigger (its own map index), and the XCom of each mapped task holds that
order's ``flow_process_no``.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.providers.common.compat.sdk import dag, task

from airflow_octorpa.operators.octorpa import OctoRpaTriggerOperator


@dag(
    dag_id="example_octorpa_mapped_orders",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["example", "octorpa"],
)
def example_octorpa_mapped_orders():
    @task
    def fetch_new_orders() -> list[dict]:
        """Stands in for querying the shop for orders that arrived since the last run."""
        return [{"订单号": f"SO-20{i:02d}", "收货地址": f"杭州市西湖区文三路{i}号", "数量": i} for i in range(1, 4)]

    processed = OctoRpaTriggerOperator.partial(
        task_id="process_order",
        octorpa_conn_id="octorpa_default",
        pool="octorpa",
        retries=2,
        retry_delay=timedelta(seconds=20),
    ).expand(app_params=fetch_new_orders())

    @task
    def summarise(runs: list[dict]) -> list[str]:
        numbers = [run["flow_process_no"] for run in runs]
        print(f"Started {len(numbers)} Octopus RPA runs: {numbers}")
        return numbers

    summarise(processed.output)


example_octorpa_mapped_orders()
