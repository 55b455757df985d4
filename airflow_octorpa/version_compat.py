"""What differs between the Airflow versions this provider supports, in one place.

Everything else is imported through ``airflow.providers.common.compat``, as the official
providers do.
"""

from __future__ import annotations

from typing import Any


def current_dag_and_group(dag: Any = None, group: Any = None) -> tuple[Any, Any]:
    """The DAG and task group that a task defined here would join (the ``with DAG(...)`` blocks)."""
    try:
        from airflow.sdk.definitions._internal.contextmanager import DagContext, TaskGroupContext
    except ImportError:  # Airflow 2
        from airflow.models.dag import DagContext  # type: ignore[no-redef]
        from airflow.utils.task_group import TaskGroupContext  # type: ignore[no-redef]

        dag = dag or DagContext.get_current_dag()
        if group is None and dag is not None:
            group = TaskGroupContext.get_current_task_group(dag)  # type: ignore[attr-defined]
        return dag, group
    dag = dag or DagContext.get_current()
    if group is None and dag is not None:
        group = TaskGroupContext.get_current(dag)
    return dag, group
