"""``make bench`` ``run-end:``: what the end of a DAG run costs the provider's listener with 10,000
records of other runs present, against the same end with none (``ratio = with / without``).

A real DAG run (``dag.test()``, 20 mapped trigger-like tasks) in a private Airflow home on SQLite;
then its end's clean-up (:func:`airflow_octorpa.storage.forget_dag_run`, what the listener runs
in the scheduler's transaction) is timed, best of 21, before and after 10,000 Variables of other
runs are written: the call records, probes, reports and claims of 2,500 other task instances.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

HOME = Path(tempfile.mkdtemp(prefix="octorpa-bench-run-end-"))
os.environ.update(
    {
        "AIRFLOW_HOME": str(HOME),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{HOME / 'airflow.db'}",
        "AIRFLOW__OCTORPA__SWEEP_INTERVAL": "0",
    }
)
OTHER_RECORDS = 10_000
REPO = Path(__file__).resolve().parent.parent


def _end_seconds(dag_id: str, run_id: str) -> float:
    from airflow.utils.session import create_session

    from airflow_octorpa.storage import forget_dag_run

    best = float("inf")
    for _ in range(21):
        with create_session() as session:
            began = time.perf_counter()
            forget_dag_run(dag_id, run_id, session)
            best = min(best, time.perf_counter() - began)
            session.rollback()
    return best


def main() -> int:
    import datetime

    from airflow.models.variable import Variable
    from airflow.providers.common.compat.sdk import DAG, task
    from airflow.utils.session import create_session

    from airflow_octorpa.storage import ti_keys
    from tests.support.airflow_helpers import run_dag

    os.system(f"{Path(sys.executable).with_name('airflow')} db migrate > {HOME / 'migrate.log'} 2>&1")

    @task
    def step(i: int) -> int:
        return i

    with DAG("bench_run_end", schedule=None, start_date=datetime.datetime(2026, 1, 1)) as dag:
        step.expand(i=list(range(20)))
    dag_run = run_dag(dag)
    without = _end_seconds(dag_run.dag_id, dag_run.run_id)
    with create_session() as session:
        for n in range(OTHER_RECORDS // 4):
            names = json.dumps({"dag_id": "bench_run_end", "run_id": f"other_{n // 20}"})
            for key in ti_keys("bench_run_end", f"other_{n // 20}", "step", n % 20):
                session.add(Variable(key=key, val=names))
    with_records = _end_seconds(dag_run.dag_id, dag_run.run_id)
    print(
        f"run-end: records_of_other_runs={OTHER_RECORDS} without={without * 1000:.2f}ms "
        f"with={with_records * 1000:.2f}ms ratio={with_records / without:.2f} (deleted by key: no other run's "
        "record is read or decrypted; what grows is the index the keys are looked up in)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
