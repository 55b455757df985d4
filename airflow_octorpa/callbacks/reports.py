"""Where run reports are kept: one Airflow Variable per call, in Airflow's metadata database.

A trigger task that asks for a callback registers its call (``waiting``) before sending it, since
an app can report within milliseconds. The route (api-server or webserver, which have the
database) turns ``waiting`` into the report with a conditional update, so that of two
api-servers receiving contradicting reports at once exactly one wins; it never creates a row.
The waiting task and its trigger read the Variable through the Task SDK (Airflow 3's workers and
triggerers have no database). A failed or timed-out wait removes it; the provider's listener
removes the rest when their DAG run ends.

The Variable's key holds only the SHA-256 of the token (:mod:`airflow_octorpa.callbacks.token`):
whoever may read Variables learns no URL, but whoever may edit them can forge a report.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

REPORT_PREFIX = "octorpa_report."
WAITING, SUCCEEDED, FAILED = "waiting", "succeeded", "failed"
MAX_REPORT_BYTES = 64 * 1024
MAX_MESSAGE_CHARS = 1000
_DESCRIPTION = (
    "airflow-provider-octorpa: one RPA run's report, keyed by the SHA-256 of its callback token. Removed "
    "when its DAG run ends; do not edit."
)


@dataclass(frozen=True)
class RunReport:
    """What a run reported: its status, outputs and message."""

    status: str
    outputs: dict[str, Any] = field(default_factory=dict)
    message: str = ""

    def same_as(self, stored: dict[str, Any]) -> bool:
        """An identical repeat: same status, JSON-equal outputs, same message (robots retry)."""
        return (
            stored.get("status") == self.status
            and _canonical(stored.get("outputs") or {}) == _canonical(self.outputs)
            and (stored.get("message") or "") == self.message
        )


def report_variable(key: str) -> str:
    return REPORT_PREFIX + key


# -- the worker and the trigger (Task SDK) ------------------------------------------------------


def registration(dag_id: str, run_id: str, task_id: str, map_index: int) -> str:
    """The stored value of a call that awaits its report (it names its DAG run for the listener)."""
    return json.dumps(
        {
            "dag_id": dag_id,
            "run_id": run_id,
            "task_id": task_id,
            "map_index": map_index,
            "status": WAITING,
            "registered_at": time.time(),
        }
    )


def register(key: str, dag_id: str, run_id: str, task_id: str, map_index: int) -> None:
    """Record that the call keyed ``key`` awaits its report; raises when it did not land."""
    from airflow.providers.common.compat.sdk import Variable

    value = registration(dag_id, run_id, task_id, map_index)
    Variable.set(report_variable(key), value, description=_DESCRIPTION)
    if Variable.get(report_variable(key), None) != value:  # the Task SDK logs a failed write instead of raising
        raise RuntimeError(f"the Airflow Variable {report_variable(key)!r} could not be written")


def read(key: str) -> dict[str, Any] | None:
    """The stored record of ``key`` (``status`` is ``waiting`` until a report lands), or None."""
    from airflow_octorpa.version_compat import get_variable

    text = get_variable(report_variable(key))
    if text is None:
        return None
    try:
        stored = json.loads(text)
    except ValueError:
        return None
    return stored if isinstance(stored, dict) else None


def remove(key: str) -> None:
    from airflow.providers.common.compat.sdk import Variable

    Variable.delete(report_variable(key))


# -- the route (metadata database) --------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What the route answers: an HTTP status and a JSON body."""

    status: int
    body: dict[str, Any]


def record_report(key: str, report: RunReport, session: Any) -> Outcome:
    """Store ``report`` for the call keyed ``key``: committed before the answer is chosen.

    200 for the first report and an identical repeat, 409 for a contradiction (nothing changes),
    404 for a key that names no call (no row is created).
    """
    from airflow.models.variable import Variable
    from sqlalchemy import select, update

    table = Variable.__table__
    for _ in range(3):  # a lost race is re-read once; a third round cannot be needed
        row = session.execute(
            select(table.c.val, table.c.is_encrypted).where(table.c.key == report_variable(key))
        ).first()
        if row is None:
            return Outcome(404, {"accepted": False, "error": "No call awaits a report with this token."})
        stored = _decoded(row.val, row.is_encrypted)
        if stored is None:
            return Outcome(409, {"accepted": False, "error": "This call's record cannot be read; nothing changed."})
        if stored.get("status") != WAITING:
            if report.same_as(stored):
                return Outcome(200, {"accepted": True})
            return Outcome(409, {"accepted": False, "error": f"This run already reported {stored.get('status')!r}."})
        new_value, encrypted = _encoded(
            {
                **stored,
                "status": report.status,
                "outputs": report.outputs,
                "message": report.message,
                "reported_at": time.time(),
            }
        )
        # Conditional on the value read: of two reports at once, exactly one changes the row.
        result = session.execute(
            update(table)
            .where(table.c.key == report_variable(key), table.c.val == row.val)
            .values(val=new_value, is_encrypted=encrypted)
        )
        if result.rowcount == 1:
            session.commit()
            return Outcome(200, {"accepted": True})
        session.rollback()
    return Outcome(409, {"accepted": False, "error": "Another report changed this call at the same time."})


def forget_dag_run_reports(dag_id: str, run_id: str, session: Any) -> int:
    """Delete the reports of a DAG run's calls (the run has ended)."""
    from airflow_octorpa.call_record import run_variables

    rows = [row for row, _ in run_variables(REPORT_PREFIX, dag_id, run_id, session)]
    for row in rows:
        session.delete(row)
    return len(rows)


def _decoded(raw: str | None, encrypted: bool) -> dict[str, Any] | None:
    from airflow.models.crypto import get_fernet

    try:
        text = get_fernet().decrypt(raw.encode()).decode() if encrypted and raw else raw
        stored = json.loads(text or "")
    except Exception:  # noqa: BLE001 - an unreadable record: the caller refuses to change it
        return None
    return stored if isinstance(stored, dict) else None


def _encoded(value: dict[str, Any]) -> tuple[str, bool]:
    from airflow.models.crypto import get_fernet

    text = json.dumps(value, ensure_ascii=False)
    fernet = get_fernet()
    if getattr(fernet, "is_encrypted", False):
        return fernet.encrypt(text.encode()).decode(), True
    return text, False


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)
