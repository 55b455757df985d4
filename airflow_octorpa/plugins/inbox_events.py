"""The listener that stores an inbox's report in exactly one asset event (Airflow 3), and, on
SQLite, queues again an event that the scheduler's run creation stranded.

``Trigger.submit_event`` stores an asset watcher's event in the triggerer's scoped session and
tells listeners before it commits; this joins that transaction (see
:func:`airflow_octorpa.callbacks.inbox.deliver_in_session`). Elsewhere (the api-server's asset
events, a task's outlets) the thread has no scoped session holding an inbox's event: nothing to do.
"""

from __future__ import annotations

import logging
from typing import Any

from airflow.listeners import hookimpl

log = logging.getLogger(__name__)


@hookimpl
def on_asset_changed(asset: Any) -> None:
    from airflow import settings

    scoped: Any = getattr(settings, "Session", None)
    registry = getattr(scoped, "registry", None)
    if scoped is None or registry is None or not registry.has():
        return  # this thread has no scoped session, so no event of a trigger
    from airflow_octorpa.callbacks.inbox import deliver_in_session

    try:
        deliver_in_session(scoped())
    except Exception:  # a listener's error must not stop the triggerer; the event is checked again
        log.warning(
            "Could not check the Octopus RPA inbox events of asset %s.", getattr(asset, "uri", asset), exc_info=True
        )


@hookimpl
def on_dag_run_running(dag_run: Any, msg: str) -> None:
    from airflow.utils.types import DagRunType
    from sqlalchemy.orm import object_session

    session = object_session(dag_run)
    if session is None or session.get_bind().dialect.name != "sqlite" or dag_run.run_type != DagRunType.ASSET_TRIGGERED:
        return  # PostgreSQL and MySQL lock the queue entry: the event's write waits, then queues a run
    from airflow_octorpa.callbacks.inbox import requeue_stranded

    try:  # the scheduler's own transaction: on SQLite a failed statement undoes itself alone
        if requeued := requeue_stranded(session, dag_run):
            log.info("Queued %d Octopus RPA inbox event(s) of %s's assets again: a run had passed them.",
                     requeued, dag_run.dag_id)  # fmt: skip
    except Exception:  # a listener's error must not stop the scheduler
        log.warning("Could not check for Octopus RPA inbox events that %s passed.", dag_run, exc_info=True)
