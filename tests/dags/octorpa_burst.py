"""A burst of triggers: the operator mapped over ``params["n"]`` orders, in worker and deferred mode."""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.providers.common.compat.sdk import DAG, task

from airflow_octorpa.operators.octorpa import OctoRpaTriggerOperator

for mode, deferrable in (("worker", False), ("deferred", True)):
    with DAG(
        dag_id=f"octorpa_burst_{mode}",
        schedule=None,
        start_date=datetime(2026, 1, 1),
        catchup=False,
        params={"n": 10, "tag": mode},
        max_active_tasks=64,
    ):

        @task
        def orders(params: dict) -> list[dict]:
            return [{"订单号": f"{params['tag']}-{i:03d}", "数量": i} for i in range(int(params["n"]))]

        triggered = OctoRpaTriggerOperator.partial(
            task_id="trigger",
            deferrable=deferrable,
            retries=2,
            retry_delay=timedelta(seconds=5),
        ).expand(app_params=orders())

        @task(trigger_rule="all_done")
        def received(results: list) -> int:
            """What a downstream task gets: one dict per started run, whichever mode held the slot."""
            runs = [r for r in results if r is not None]
            bad = [r for r in runs if not isinstance(r, dict) or not r.get("flow_process_no")]
            if bad:
                raise TypeError(f"downstream got {bad[:3]!r} instead of result dicts")
            return len(runs)

        received(triggered.output)
