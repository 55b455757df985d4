"""What the run's page shows, and the link to it: one Octopus RPA run, from its call to its report.

The page is about the call of a trigger task instance. From the waiting task's link it finds that
call through the wait's rendered ``started_run`` (the report key names the trigger task's digest).
While the DAG run lasts it reads the live records (the call record, the report record, the cancel
marker); once the run's end removed them, the copies the tasks kept as XComs (``octorpa_call``,
``octorpa_report``). Neither holds the token, the secret or a signature.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

from airflow.providers.common.compat.sdk import BaseOperatorLink

from airflow_octorpa import storage
from airflow_octorpa.callbacks.reports import REPORT_PREFIX
from airflow_octorpa.callbacks.token import ROUTE_PREFIX
from airflow_octorpa.storage import CANCEL_SUFFIX, RECORD_KEY, ti_digest, variable_key

RUN_PAGE_PATH = "/v1/run"  # under ROUTE_PREFIX; the task instance in the query (a run id may hold "/")
CALL_XCOM = "octorpa_call"  # the trigger task's copy of its call record
REPORT_XCOM = "octorpa_report"  # the wait's copy of the run's report record and its cancel
LINK_NAME = "Octopus RPA run"
# What of a report record the page and the wait's XCom keep (never the token's SHA-256).
_REPORT_FIELDS = ("status", "message", "outputs", "reported_at", "registered_at", "expired_at", "progress",
                  "history", "cancel_heard_at", "after_end")  # fmt: skip


def run_page_path(dag_id: str, run_id: str, task_id: str, map_index: int) -> str:
    """The page's path on Airflow's web server (without its base URL's path)."""
    query = urlencode({"dag_id": dag_id, "run_id": run_id, "task_id": task_id, "map_index": map_index})
    return f"{ROUTE_PREFIX}{RUN_PAGE_PATH}?{query}"


class OctoRpaRunLink(BaseOperatorLink):
    """The "Octopus RPA run" link of a trigger task and of a wait: the run's page, behind Airflow's
    login. Built from the task instance alone (no XCom read, no record: it never fails), on the
    path of Airflow's base URL, so that it opens on whichever host the user reached Airflow at."""

    name = LINK_NAME

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        from airflow.providers.common.compat.sdk import conf

        from airflow_octorpa.version_compat import airflow_base_url_setting

        base = conf.get(*airflow_base_url_setting(), fallback="") or ""
        prefix = urlsplit(base.strip()).path.rstrip("/")
        map_index = getattr(ti_key, "map_index", -1)
        return prefix + run_page_path(ti_key.dag_id, ti_key.run_id, ti_key.task_id, map_index)


@dataclass
class RunFacts:
    """One call and its run, as the page shows them; ``trigger`` names the trigger task instance."""

    dag_id: str
    run_id: str
    trigger: tuple[str, int]
    asked_from: tuple[str, int]
    call: dict[str, Any] | None = None  # the call record (state, sent_at, answered_at, slot, refusals...)
    result: dict[str, Any] | None = None  # flow_process_no, flow_id, enterprise_id
    report: dict[str, Any] | None = None  # the report record's fields (_REPORT_FIELDS)
    cancel: dict[str, Any] | None = None  # requested_at, reason
    sources: list[str] = field(default_factory=list)  # where each part came from, for the page's footer

    @property
    def found(self) -> bool:
        return any((self.call, self.result, self.report))


def _report_fields(stored: dict[str, Any]) -> dict[str, Any]:
    return {name: stored[name] for name in _REPORT_FIELDS if name in stored}


def report_snapshot(stored: dict[str, Any], cancel: dict[str, Any] | None, trigger: tuple[str, int]) -> dict[str, Any]:
    """The wait's XCom copy of the run's report record (the page reads it once the record is gone)."""
    return {**_report_fields(stored), "cancel": cancel, "trigger_task_id": trigger[0], "trigger_map_index": trigger[1]}


def call_snapshot(record: dict[str, Any]) -> dict[str, Any]:
    """The trigger task's XCom copy of its call record."""
    return {name: value for name, value in record.items() if name not in ("generation", "clear_number", "cleared")}


def gather(session: Any, dag_id: str, run_id: str, task_id: str, map_index: int) -> RunFacts:
    """The facts of the call that the task instance made (a trigger task) or awaits (a wait)."""
    trigger = _trigger_of(session, dag_id, run_id, task_id, map_index)
    facts = RunFacts(dag_id, run_id, trigger, (task_id, map_index))
    call_variable = variable_key(dag_id, run_id, *trigger)
    report_variable = REPORT_PREFIX + ti_digest(dag_id, run_id, *trigger)
    rows = storage.rows_of(session, [call_variable, report_variable, report_variable + CANCEL_SUFFIX])
    stored_call = rows.get(call_variable) or _task_state_record(session, dag_id, run_id, trigger)
    if stored_call:
        facts.call = call_snapshot(stored_call.get("record", stored_call))
        facts.sources.append("call record")
    elif isinstance(copy := _xcoms(session, dag_id, run_id, CALL_XCOM, trigger[0]).get(trigger), dict):
        facts.call = copy
        facts.sources.append(f"{trigger[0]}'s XCom {CALL_XCOM}")
    facts.result = (facts.call or {}).get("result")
    if not isinstance(facts.result, dict) and isinstance(
        returned := _xcoms(session, dag_id, run_id, "return_value", trigger[0]).get(trigger), dict
    ):
        facts.result = returned
    if (stored := rows.get(report_variable)) is not None:
        facts.report = _report_fields(stored)
        facts.cancel = rows.get(report_variable + CANCEL_SUFFIX)
        facts.sources.append("report record")
    elif (copy := _report_copy(session, dag_id, run_id, trigger, (task_id, map_index))) is not None:
        facts.report = _report_fields(copy)
        facts.cancel = copy.get("cancel")
        facts.sources.append(f"the wait's XCom {REPORT_XCOM}")
    return facts


def _trigger_of(session: Any, dag_id: str, run_id: str, task_id: str, map_index: int) -> tuple[str, int]:
    """The trigger task instance whose call the task instance made or awaits (itself when it names none)."""
    from airflow_octorpa.callbacks.cancel import awaited_digests

    digests = awaited_digests(session, dag_id, run_id, task_id, map_index)
    if not digests:
        return task_id, map_index
    for ti in storage.task_instances(dag_id, run_id, session):
        if ti_digest(dag_id, run_id, *ti) in digests:
            return ti
    return task_id, map_index


def _task_state_record(session: Any, dag_id: str, run_id: str, ti: tuple[str, int]) -> dict[str, Any] | None:
    """The call record in Airflow 3.3's task state store (None before 3.3, or when there is none)."""
    try:
        from airflow.models.task_state_store import TaskStateStoreModel
    except ImportError:
        return None
    from sqlalchemy import select

    value = session.scalar(
        select(TaskStateStoreModel.value).where(
            TaskStateStoreModel.dag_id == dag_id, TaskStateStoreModel.run_id == run_id,
            TaskStateStoreModel.task_id == ti[0], TaskStateStoreModel.map_index == ti[1],
            TaskStateStoreModel.key == RECORD_KEY,
        )
    )  # fmt: skip
    return storage.json_object(value)


def _xcoms(session: Any, dag_id: str, run_id: str, key: str, task_id: str | None = None) -> dict[tuple[str, int], Any]:
    from airflow_octorpa.version_compat import read_xcoms

    try:
        return read_xcoms(session, dag_id, run_id, key, task_id)
    except Exception:  # noqa: BLE001 - an XCom this server cannot read (a custom backend): the page says less
        return {}


def _report_copy(
    session: Any, dag_id: str, run_id: str, trigger: tuple[str, int], asked_from: tuple[str, int]
) -> dict[str, Any] | None:
    """The wait's copy of the report: the asking wait's, else any wait's of this call."""
    copies = _xcoms(session, dag_id, run_id, REPORT_XCOM)
    if isinstance(copy := copies.get(asked_from), dict):
        return copy
    for copy in copies.values():
        if isinstance(copy, dict) and (copy.get("trigger_task_id"), copy.get("trigger_map_index")) == trigger:
            return copy
    return None
