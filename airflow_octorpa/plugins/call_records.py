"""The provider's Airflow plugin: removes a DAG run's call records (Variables) once the run ends.

Where Airflow has no task state store (before 3.3) each trigger task keeps its call record in a
Variable (see :mod:`airflow_octorpa.call_record`). Once its DAG run has ended no try of its tasks
can follow (a clear is a new trigger, with a new generation), so the records can go. The listener
runs in the scheduler, inside the transaction that ends the run.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from airflow.listeners import hookimpl
from airflow.plugins_manager import AirflowPlugin

log = logging.getLogger(__name__)


def _forget(dag_run: Any) -> None:
    from sqlalchemy.orm import object_session

    from airflow_octorpa.call_record import forget_dag_run

    try:
        session = object_session(dag_run)
        if session is None:
            from airflow.utils.session import create_session

            with create_session() as own_session:
                forgotten = forget_dag_run(dag_run.dag_id, dag_run.run_id, own_session)
        else:
            forgotten = forget_dag_run(dag_run.dag_id, dag_run.run_id, session)
    except Exception:  # Airflow 2 does not catch a listener's error: it would stop the scheduler's loop
        log.warning("Could not remove the Octopus RPA call records of %s.", dag_run, exc_info=True)
        return
    if forgotten:
        log.info("Removed %d Octopus RPA call record(s) of %s, which has ended.", forgotten, dag_run)


@hookimpl
def on_dag_run_success(dag_run: Any, msg: str) -> None:
    _forget(dag_run)


@hookimpl
def on_dag_run_failed(dag_run: Any, msg: str) -> None:
    _forget(dag_run)


class OctoRpaPlugin(AirflowPlugin):
    """Registers the listener that removes the call records of ended DAG runs."""

    name = "octorpa"
    listeners = [sys.modules[__name__]]  # this module's hookimpls
