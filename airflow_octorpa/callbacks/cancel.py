"""A cooperative cancel: Airflow asks the run to stop, and the app hears it when it next calls.

Octopus RPA has no stop API, so the request waits beside the run's report record, in a Variable of
its own (``octorpa_report.<digest>.cancel``): whoever gives up on the run (a wait that times out,
a trigger a user killed, the end of the DAG run) writes it with a plain write, and never touches the
record, which only the route changes, conditionally. So a cancel can never overwrite a report. The
route reads it with the record and answers every request of the app ``"cancel": true`` from then on.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

from airflow_octorpa import storage
from airflow_octorpa.callbacks.reports import EXPIRED, WAITING
from airflow_octorpa.storage import CANCEL_SUFFIX, REPORT_PREFIX, ti_digest

# A report key as a wait's rendered ``started_run`` shows it, whatever form Airflow rendered it in.
_REPORT_KEY_IN_TEXT = re.compile(r"\b([0-9a-f]{32})\.[0-9a-f]{64}\b")

_DESCRIPTION = (
    "airflow-provider-octorpa: Airflow asked this RPA run to stop (its app hears it at its next call). "
    "Removed with the run's report; do not edit."
)


def cancel_value(dag_id: str, run_id: str, reason: str) -> dict[str, Any]:
    """The marker: it names its DAG run (for the clean-up), when and why the cancel was asked."""
    return {"dag_id": dag_id, "run_id": run_id, "requested_at": time.time(), "reason": reason}


def request_cancel(report_variable: str, dag_id: str, run_id: str, reason: str) -> None:
    """Ask the run to stop, through the Task SDK (a worker, the triggerer). A cancel already asked
    keeps its first time and reason; raises when the marker did not land."""
    key = report_variable + CANCEL_SUFFIX
    if storage.get_text(key) is not None:
        return
    storage.set_checked(key, json.dumps(cancel_value(dag_id, run_id, reason)), _DESCRIPTION)


def request_cancel_in(session: Any, report_variable: str, dag_id: str, run_id: str, reason: str) -> bool:
    """Ask the run to stop, in the metadata database (the scheduler, the api-server); whether this
    call asked it (False: it was asked before). A savepoint: a lost race leaves the caller's
    transaction usable (PostgreSQL aborts a whole transaction on a failed insert)."""
    key = report_variable + CANCEL_SUFFIX
    if storage.read_row(session, key) is not None:
        return False
    with session.begin_nested() as savepoint:
        if not storage.insert_new(session, key, cancel_value(dag_id, run_id, reason), _DESCRIPTION):
            savepoint.rollback()
            return False
    return True


def may_still_run(stored: dict[str, Any]) -> bool:
    """Whether the record's app may still be running and not yet told to stop: no report, and no
    request of it since its wait ended."""
    return stored.get("status") == WAITING or (stored.get("status") == EXPIRED and not stored.get("cancel_heard_at"))


def cancel_awaited_runs(session: Any, dag_id: str, run_id: str, reason: str) -> frozenset[str]:
    """Ask every run that a task instance of this DAG run still awaits to stop (its DAG run has
    ended); their report Variables, which are kept (the sweep removes them later) so that the app
    still hears it."""
    reports = [
        REPORT_PREFIX + ti_digest(dag_id, run_id, task_id, map_index)
        for task_id, map_index in storage.task_instances(dag_id, run_id, session)
    ]
    awaited: set[str] = set()
    for variable, stored in storage.rows_of(session, reports).items():
        if stored is None or not may_still_run(stored):
            continue
        if stored.get("status") == WAITING:
            request_cancel_in(session, variable, dag_id, run_id, reason)
        awaited.add(variable)
    return frozenset(awaited)


def cancel_runs_of_task_instance(
    session: Any, dag_id: str, run_id: str, task_id: str, map_index: int, reason: str
) -> int:
    """Ask the runs a task instance started (a trigger task) or awaits (a wait: its rendered
    ``started_run`` names the report) to stop, where still awaited; how many were asked."""
    digests = {ti_digest(dag_id, run_id, task_id, map_index)} | awaited_digests(
        session, dag_id, run_id, task_id, map_index
    )
    asked = 0
    for variable, stored in storage.rows_of(session, [REPORT_PREFIX + digest for digest in digests]).items():
        if stored is not None and stored.get("status") == WAITING:
            asked += request_cancel_in(session, variable, dag_id, run_id, reason)
    return asked


def awaited_digests(session: Any, dag_id: str, run_id: str, task_id: str, map_index: int) -> set[str]:
    """The digests of the trigger task instances whose runs a wait awaits: its rendered ``started_run``
    names their report keys (none for a task that is no wait)."""
    rendered = json.dumps(storage.rendered_fields(session, dag_id, run_id, task_id, map_index).get("started_run"))
    return set(_REPORT_KEY_IN_TEXT.findall(rendered))
