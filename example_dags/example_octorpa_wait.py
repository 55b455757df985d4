"""
Start the "订单处理" (order processing) app and wait until the robot reports that it finished, then
use what the app produced (its outputs) downstream.

The app's last step requests the callback URL it is given in its input variable
``airflow_callback_url`` (see the README, "Waiting for a run"). Needs ``[octorpa]
callback_base_url`` set to the address robots reach Airflow at. ``make demo`` runs this DAG against
the bundled emulator, whose order app reports back like a real one.
"""

from __future__ import annotations

from datetime import datetime

from airflow.providers.common.compat.sdk import dag, task

from airflow_octorpa.operators.octorpa import OctoRpaTriggerOperator
from airflow_octorpa.sensors.octorpa import OctoRpaRunSensor, start_and_wait


# --8<-- [start:dag]
@dag(
    dag_id="example_octorpa_wait",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["example", "octorpa"],
)
def example_octorpa_wait():
    # One line: the trigger task (callback=True) and its sensor, which waits in the triggerer.
    start, wait = start_and_wait(
        "process_order", app_params={"订单号": "SO-3001", "数量": 2}, wait_kwargs={"timeout": 3600}
    )

    @task
    def ship(report: dict) -> str:
        """The app's outputs (here its waybill number) reach the next task."""
        return report["outputs"]["运单号"]

    ship(wait.output)

    # Mapped: one run per order, one wait per run.
    @task
    def orders() -> list[dict]:
        return [{"订单号": "SO-3002", "数量": 1}, {"订单号": "SO-3003", "数量": 5}]

    started = OctoRpaTriggerOperator.partial(task_id="process_orders", callback=True).expand(app_params=orders())
    OctoRpaRunSensor.partial(task_id="wait_orders", timeout=3600).expand(started_run=started.output)


example_octorpa_wait()
# --8<-- [end:dag]
