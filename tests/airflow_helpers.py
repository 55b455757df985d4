"""Reading what a real ``dag.test()`` run left in the metadata database."""

from __future__ import annotations

import os
from typing import Any


def xcom_return_values(dag_run: Any, task_id: str) -> dict[int, Any]:
    """The return values of ``task_id`` in ``dag_run``, by map index (-1 when not mapped).

    The stored JSON is read as the Task SDK hands it to a downstream task; core's
    ``deserialize_value`` would json-decode a numeric string such as a flowProcessNo into an int.
    """
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

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

    ``dag.test()`` only finds DAGs that a DAG bundle's files define; a DAG made in a test
    function lives in no bundle file, so it is serialised here the way the DAG processor would.
    """
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db

    DagBundlesManager().sync_bundles_to_db()
    bag = DagBag(dag_folder=os.devnull, collect_dags=False)
    bag.bag_dag(dag)
    sync_bag_to_db(bag, "dags-folder", None)
    return dag.test()
