"""The provider's Airflow plugin: removes a DAG run's records (Variables: call records, run
reports) once the run ends, sweeps what earlier ends left (:mod:`airflow_octorpa.run_records`),
and publishes which pools count deferred tasks for Airflow 3's workers (:mod:`airflow_octorpa.pool_facts`).

Once a DAG run has ended no try of its tasks can follow (a clear is a new trigger, with a new
generation), so its records can go. The listener runs in the scheduler as the run ends; its
chores run in a transaction of their own, so that a failure of theirs never aborts the scheduler's.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any

from airflow.listeners import hookimpl
from airflow.plugins_manager import AirflowPlugin

log = logging.getLogger(__name__)


def _in_own_transaction(model: Any, work: Callable[[Any], None], what: str) -> None:
    """Run ``work`` so that its failure never touches the scheduler's transaction, and log it.

    A transaction of its own, on a new session: on PostgreSQL a failed statement would abort the
    scheduler's whole transaction, and a savepoint there trips Airflow's guard against commits in
    the scheduler ("UNEXPECTED COMMIT"). On SQLite a second connection would wait on the scheduler's
    own write lock (stalling it up to the busy timeout), so there it runs on this thread's own
    connection, as before: SQLite undoes a failed statement alone.
    """
    from sqlalchemy.orm import Session, object_session

    try:
        from airflow import settings

        session = object_session(model)
        bind: Any = session.get_bind() if session is not None else settings.engine
        if bind.dialect.name == "sqlite":
            if session is not None:
                work(session)
                return
            from airflow.utils.session import create_session

            with create_session() as scoped:  # this thread's own connection, never a second one
                work(scoped)
            return
        # Not create_session(): in the scheduler's thread that is the scheduler's own scoped session.
        with Session(bind=bind) as own, own.begin():
            work(own)
    except Exception:  # Airflow 2 does not catch a listener's error: it would stop the scheduler's loop
        log.warning("Could not %s for %s.", what, model, exc_info=True)


def _forget(dag_run: Any, ended: str) -> None:
    """Remove the run's records; a run still awaited is asked to stop, and its report record kept
    (until the sweep) so that its app hears it."""
    from airflow_octorpa.callbacks.cancel import cancel_awaited_runs
    from airflow_octorpa.run_records import sweep_soon
    from airflow_octorpa.storage import forget_dag_run

    def forget(session: Any) -> None:
        reason = f"its DAG run ended {ended}"
        if awaited := cancel_awaited_runs(session, dag_run.dag_id, dag_run.run_id, reason):
            log.info("Asked %d Octopus RPA run(s) of %s to stop: %s.", len(awaited), dag_run, reason)
        if forgotten := forget_dag_run(dag_run.dag_id, dag_run.run_id, session, awaited):
            log.info("Removed %d Octopus RPA record(s) of %s, which has ended.", forgotten, dag_run)

    _in_own_transaction(dag_run, forget, "remove the Octopus RPA records")
    try:
        sweep_soon()
    except Exception:  # noqa: BLE001 - a sweep is a background chore; the next run's end tries again
        log.warning("Could not start the Octopus RPA records sweep.", exc_info=True)


def _user_ended(previous_state: Any, task_instance: Any, state: str) -> None:
    """A user marked a task instance (Airflow 3's api-server tells listeners, with no previous
    state): the runs it started or awaits are asked to stop. A task's own end is not a user's."""
    if previous_state is not None:  # a task's own end, on its worker
        return
    from airflow.models.taskinstance import TaskInstance

    if not isinstance(task_instance, TaskInstance):
        return
    from airflow_octorpa.callbacks.cancel import cancel_runs_of_task_instance

    ti = task_instance

    def ask(session: Any) -> None:
        reason = f"a user marked {ti.task_id} {state}"
        if cancel_runs_of_task_instance(session, ti.dag_id, ti.run_id, ti.task_id, ti.map_index, reason):
            log.info("Asked the Octopus RPA run of %s to stop: %s.", ti, reason)

    _in_own_transaction(ti, ask, "ask the Octopus RPA run to stop")


def _publish_pools(dag_run: Any) -> None:
    from airflow_octorpa.pool_facts import publish_pool_facts

    def publish(session: Any) -> None:
        if publish_pool_facts(session):
            log.info("Published which pools count deferred tasks, for the Octopus RPA provider's tasks.")

    _in_own_transaction(dag_run, publish, "publish the pools for the Octopus RPA provider")


def _note_started_runs(dag_run: Any) -> None:
    """A DAG run that ended while trigger tasks held their slots (``dagrun_timeout`` skips them, a
    run marked failed fails them) leaves tasks whose runs started: a note on each says so. The
    records are read apart; the notes join the scheduler's own write of those task instances."""
    from sqlalchemy.orm import object_session

    from airflow_octorpa.call_record import started_calls_of_dag_run

    started: dict[tuple[str, int], dict[str, Any]] = {}
    _in_own_transaction(
        dag_run, lambda own: started.update(started_calls_of_dag_run(dag_run, own)), "read the Octopus RPA calls"
    )
    if not started:
        return
    session = object_session(dag_run)
    if session is None:
        _in_own_transaction(
            dag_run, lambda own: _write_notes(dag_run, started, own), "note the Octopus RPA runs that started"
        )
        return
    try:
        _write_notes(dag_run, started, session)
    except Exception:  # noqa: BLE001 - Airflow 2 does not catch a listener's error
        log.warning("Could not note the Octopus RPA runs that started for %s.", dag_run, exc_info=True)


def _write_notes(dag_run: Any, started: dict[tuple[str, int], dict[str, Any]], session: Any) -> None:
    from airflow.models.taskinstance import TaskInstance
    from sqlalchemy import select

    tis = session.scalars(
        select(TaskInstance).where(TaskInstance.dag_id == dag_run.dag_id, TaskInstance.run_id == dag_run.run_id)
    )
    for ti in tis:
        record = started.get((ti.task_id, ti.map_index))
        if record is None or ti.state == "success":
            continue
        text = _started_note(record, str(ti.state))
        ti.note = f"{ti.note}\n\n{text}" if ti.note else text
        log.warning("%s (%s)", text, ti)


def _started_note(record: dict[str, Any], state: str) -> str:
    from airflow_octorpa.call_record import CallRecord

    sent_at = CallRecord(**record).sent_at_text
    return (
        f"Octopus RPA run flowProcessNo={record['result'].get('flow_process_no')} STARTED (called at {sent_at}) "
        f"before this task ended {state}: its DAG run ended first (dagrun_timeout, "
        "or marked failed) while the task held its rate-limit slot. Clearing the task starts the app again."
    )


@hookimpl
def on_dag_run_running(dag_run: Any, msg: str) -> None:
    _publish_pools(dag_run)


@hookimpl
def on_dag_run_success(dag_run: Any, msg: str) -> None:
    _forget(dag_run, "success")
    _publish_pools(dag_run)


@hookimpl
def on_dag_run_failed(dag_run: Any, msg: str) -> None:
    _note_started_runs(dag_run)
    _forget(dag_run, "failed")
    _publish_pools(dag_run)


@hookimpl
def on_task_instance_success(previous_state: Any, task_instance: Any) -> None:
    _user_ended(previous_state, task_instance, "success")


@hookimpl
def on_task_instance_failed(previous_state: Any, task_instance: Any, error: Any) -> None:
    _user_ended(previous_state, task_instance, "failed")


def _route() -> dict[str, Any]:
    """How the report route and the run's page are served: a FastAPI app on Airflow 3's api-server,
    a Flask blueprint on Airflow 2's webserver (never a blueprint on Airflow 3)."""
    from airflow_octorpa.version_compat import AIRFLOW_V_3

    try:
        from airflow_octorpa.callbacks.token import ROUTE_PREFIX
        from airflow_octorpa.plugins.report_route import fastapi_app, flask_blueprint
        from airflow_octorpa.plugins.run_page import add_fastapi_route, add_flask_route

        if AIRFLOW_V_3:
            served = fastapi_app()
            add_fastapi_route(served)
            app = {"app": served, "url_prefix": ROUTE_PREFIX, "name": "Octopus RPA run reports and pages"}
            return {"fastapi_apps": [app]}
        blueprint = flask_blueprint()
        add_flask_route(blueprint)
        return {"flask_blueprints": [blueprint]}
    except ImportError:  # a component without the web framework (a worker image): it serves no route
        return {}


def _listeners() -> list[Any]:
    """This module's hookimpls and, on Airflow 3 (asset watchers), the inbox's."""
    from airflow_octorpa.version_compat import AIRFLOW_V_3

    if not AIRFLOW_V_3:
        return [sys.modules[__name__]]
    from airflow_octorpa.plugins import inbox_events

    return [sys.modules[__name__], inbox_events]


class OctoRpaPlugin(AirflowPlugin):
    """Registers the listener (call records, run reports, pools), the route runs report to, and the
    run's page."""

    name = "octorpa"
    listeners = _listeners()
    _served = _route()
    fastapi_apps = _served.get("fastapi_apps", [])
    flask_blueprints = _served.get("flask_blueprints", [])
