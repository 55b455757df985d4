"""Running DAGs with a real ``dag.test()`` and reading what they left in the metadata database,
on every Airflow version the provider supports."""

from __future__ import annotations

import os
from typing import Any

import airflow
import pytest
from packaging.version import Version

AIRFLOW_VERSION = Version(Version(airflow.__version__).base_version)
AIRFLOW_V_3 = AIRFLOW_VERSION >= Version("3.0")
HAS_TASK_STATE_STORE = AIRFLOW_VERSION >= Version("3.3")
requires_airflow_3_3 = pytest.mark.skipif(
    not HAS_TASK_STATE_STORE, reason=f"needs Airflow 3.3 (this is {AIRFLOW_VERSION})"
)


def xcom_return_values(dag_run: Any, task_id: str) -> dict[int, Any]:
    """The return values of ``task_id`` in ``dag_run``, by map index (-1 when not mapped).

    The stored JSON is read as the Task SDK hands it to a downstream task; core's
    ``deserialize_value`` would json-decode a numeric string such as a flowProcessNo into an int.
    """
    from airflow.utils.session import create_session

    if not AIRFLOW_V_3:
        from airflow.models.xcom import XCom

        with create_session() as session:
            rows = XCom.get_many(
                run_id=dag_run.run_id, dag_ids=dag_run.dag_id, task_ids=task_id, key="return_value", session=session
            ).all()
            return {row.map_index: row.value for row in rows}  # deserialised when loaded
    from airflow.models.xcom import XComModel

    with create_session() as session:
        rows = session.scalars(
            XComModel.get_many(run_id=dag_run.run_id, dag_ids=dag_run.dag_id, task_ids=task_id, key="return_value")
        ).all()
        return {row.map_index: row.value for row in rows}


def task_states(dag_run: Any) -> dict[tuple[str, int], str]:
    """The final state of every task instance of ``dag_run``."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.execute(
            select(TaskInstance.task_id, TaskInstance.map_index, TaskInstance.state).where(
                TaskInstance.dag_id == dag_run.dag_id, TaskInstance.run_id == dag_run.run_id
            )
        ).all()
        return {(task_id, map_index): str(state) for task_id, map_index, state in rows}


def rendered_fields(dag_run: Any, task_id: str, map_index: int = -1) -> dict[str, Any]:
    """The rendered template fields Airflow stored for a task instance."""
    from airflow.models.renderedtifields import RenderedTaskInstanceFields as RTIF
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        row = session.scalars(
            select(RTIF).where(
                RTIF.dag_id == dag_run.dag_id,
                RTIF.run_id == dag_run.run_id,
                RTIF.task_id == task_id,
                RTIF.map_index == map_index,
            )
        ).one()
        return dict(row.rendered_fields)


def run_dag(dag: Any) -> Any:
    """``dag.test()`` for a DAG built inside a test: it is written to the metadata DB first.

    On Airflow 3 ``dag.test()`` only finds DAGs that a DAG bundle's files define; a DAG made in a
    test function lives in no bundle file, so it is serialised here the way the DAG processor would.
    Airflow 2's ``dag.test()`` writes the DAG itself.
    """
    if not AIRFLOW_V_3:
        return dag.test()
    from airflow.dag_processing.bundles.manager import DagBundlesManager

    DagBundlesManager().sync_bundles_to_db()
    if getattr(dag, "relative_fileloc", None) is None:  # Airflow 3.0 writes it, and sets it only when parsing
        dag.relative_fileloc = os.path.basename(dag.fileloc)
    bag = dag_bag(os.devnull)
    bag.bag_dag(dag)
    sync_bag(bag)
    return dag.test()


def dag_bag(folder: Any) -> Any:
    """The DAGs of ``folder`` (none for ``os.devnull``), parsed as the DAG processor would."""
    try:
        from airflow.dag_processing.dagbag import DagBag  # Airflow 3.2+
    except ImportError:
        from airflow.models.dagbag import DagBag  # type: ignore[no-redef]
    return DagBag(dag_folder=folder, collect_dags=folder != os.devnull)


def sync_bag(bag: Any) -> None:
    try:
        from airflow.dag_processing.dagbag import sync_bag_to_db  # Airflow 3.2+
    except ImportError:
        try:
            from airflow.models.dagbag import sync_bag_to_db  # type: ignore[no-redef]  # Airflow 3.1
        except ImportError:  # Airflow 3.0
            bag.sync_to_db("dags-folder", None)
            return
    sync_bag_to_db(bag, "dags-folder", None)


class MemoryRecords:
    """A record store in memory, for the ledger's own rules (the real stores are used by every DAG test)."""

    def __init__(self, value=None):
        self.value = value

    def read(self):
        return self.value

    def write(self, value):
        self.value = value
