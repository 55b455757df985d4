"""What differs between the Airflow versions this provider supports, in one place.

Everything else is imported through ``airflow.providers.common.compat``, as the official
providers do.
"""

from __future__ import annotations

from typing import Any

import airflow
from packaging.version import Version

AIRFLOW_V_3 = Version(Version(airflow.__version__).base_version) >= Version("3.0")


def execution_timeout_spans_deferral() -> bool:
    """Whether ``execution_timeout`` counts a deferred task's time in the triggerer.

    Airflow 2 gives the trigger the timeout ``start_date + execution_timeout`` and times
    ``execute_complete`` from the task's first start, so a deferred hold spends the timeout and
    its end cancels the trigger (freeing the slot early). Airflow 3 times each ``execute`` and
    ``execute_complete`` alone.
    """
    return not AIRFLOW_V_3


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


def cleared_while_running(ti: Any) -> bool:
    """Whether this running task instance is being stopped because it was cleared.

    Airflow marks a running task instance that is cleared ``restarting`` and terminates it. Its
    next try keeps ``max_tries`` (and before 3.2 its DAG run's ``clear_number``), so nothing else
    would tell a retry from that clear.
    """
    try:
        return ti is not None and task_instance_state(ti) == "restarting"
    except Exception:  # noqa: BLE001 - cannot tell: treat it as a retry, which never sends twice
        return False


def task_instance_state(ti: Any) -> str | None:
    """A task instance's state now (a running task's, or a trigger's ``task_instance``): Airflow 2
    reads the metadata database; Airflow 3 asks the execution API through the Task SDK. Raises
    when it cannot tell."""
    if not AIRFLOW_V_3:
        state = ti.current_state()  # the metadata database's row (a worker's and a trigger's are ORM objects)
        return None if state is None else str(state)
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

    map_index = getattr(ti, "map_index", -1)
    mapped = isinstance(map_index, int) and map_index >= 0
    states = RuntimeTaskInstance.get_task_states(
        dag_id=ti.dag_id, map_index=map_index if mapped else None, task_ids=[ti.task_id], run_ids=[ti.run_id]
    )
    of_run = states.get(ti.run_id) if isinstance(states, dict) else None
    found = (of_run or {}).get(f"{ti.task_id}_{map_index}" if mapped else ti.task_id)
    return None if found is None else str(found)


def airflow_base_url_setting() -> tuple[str, str]:
    """The setting that says where Airflow's UI and API are reached."""
    return ("api", "base_url") if AIRFLOW_V_3 else ("webserver", "base_url")


def get_variable(key: str) -> str | None:
    """A Variable's text, or None: through the Task SDK where a task or triggerer runs, else (Airflow
    3.0's ``dag.test()`` runs triggers in its own process, without the Task SDK's channel) from the
    metadata database."""
    from airflow.providers.common.compat.sdk import Variable

    try:
        return Variable.get(key, None)
    except ImportError:  # no SUPERVISOR_COMMS in this process
        from airflow.models.variable import Variable as VariableModel

        return VariableModel.get(key, default_var=None)


def read_xcoms(
    session: Any, dag_id: str, run_id: str, key: str, task_id: str | None = None
) -> dict[tuple[str, int], Any]:
    """A DAG run's XComs of ``key`` (of one task, or of all), by (task id, map index), from the
    metadata database (the web server): Airflow 3's ``XComModel.get_many`` builds a statement,
    Airflow 2's ``XCom.get_many`` is a query of rows that deserialize as they load."""
    if AIRFLOW_V_3:
        from airflow.models.xcom import XComModel

        rows = session.scalars(XComModel.get_many(key=key, run_id=run_id, dag_ids=dag_id, task_ids=task_id)).all()
        return {(row.task_id, row.map_index): XComModel.deserialize_value(row) for row in rows}
    from airflow.models.xcom import XCom

    rows = XCom.get_many(key=key, run_id=run_id, dag_ids=dag_id, task_ids=task_id, session=session).all()
    return {(row.task_id, row.map_index): row.value for row in rows}  # deserialized as it loads (init_on_load)


def dag_details(dag_id: str) -> Any:
    """What an Airflow 3 auth manager is asked about a DAG: its team too, from 3.1 (multi-team)."""
    from airflow.api_fastapi.auth.managers.models.resource_details import DagDetails
    from airflow.models.dag import DagModel

    get_team_name = getattr(DagModel, "get_team_name", None)  # Airflow 3.1+
    return DagDetails(id=dag_id, **({"team_name": get_team_name(dag_id)} if get_team_name else {}))


def task_page_path(dag_id: str, run_id: str, task_id: str, map_index: int) -> str:
    """The task instance's own page in Airflow's UI (path and query, under the base URL's path)."""
    from urllib.parse import quote, urlencode

    if AIRFLOW_V_3:
        path = f"/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}/tasks/{quote(task_id, safe='')}"
        return path + (f"/mapped/{map_index}" if map_index >= 0 else "")
    query = {"dag_run_id": run_id, "task_id": task_id, **({"map_index": map_index} if map_index >= 0 else {})}
    return f"/dags/{quote(dag_id, safe='')}/grid?{urlencode(query)}"
