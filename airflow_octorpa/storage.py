"""What the provider keeps in Airflow, in one place: the names of its Variables, the task state
store (Airflow 3.3) and Variables (before) as record stores that read back what they write, and the
per-run lookup that finds a DAG run's records by exact key."""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Iterator
from typing import Any, Protocol

RECORD_KEY = "octorpa_call"
# Variables holding records (Airflow before 3.3): "octorpa_call.<dag_id>.<hash of run, task, map index>".
VARIABLE_PREFIX = RECORD_KEY + "."
_MAX_DAG_ID_IN_KEY = 180  # Airflow limits a Variable's key to 250 characters

REPORT_PREFIX = "octorpa_report."  # a run's report: "octorpa_report.<ti digest>"
CLAIM_SUFFIX = ".end"  # beside it, the claim of the wait's end
CANCEL_SUFFIX = ".cancel"  # and Airflow's request that the run stop
LOGGED_SUFFIX = ".logged"  # and the last progress report a reschedule wait's poke logged
_IN_CHUNK = 500  # keys per IN (...): well under every database's bound on parameters


class RecordStore(Protocol):
    """Where a task instance's record lives; ``write`` raises when the record could not be kept."""

    def read(self) -> Any | None: ...

    def write(self, value: dict[str, Any]) -> None: ...


class TaskStateRecords:
    """The record in Airflow 3.3's task state store."""

    def __init__(self, store: Any) -> None:
        self._store = store

    def read(self) -> Any | None:
        return self._store.get(RECORD_KEY)

    def write(self, value: dict[str, Any]) -> None:
        from airflow.sdk.execution_time.context import NEVER_EXPIRE

        # Never expire: a record that vanished would let a late retry trigger a second run.
        self._store.set(RECORD_KEY, value, retention=NEVER_EXPIRE)


class VariableRecords:
    """The record in an Airflow Variable, where no task state store exists (Airflow 2.11 to 3.2).

    The Variable also names its DAG run, so that a sweep (:mod:`airflow_octorpa.run_records`) can
    tell when its run has ended. The Task SDK's ``Variable.set`` logs a failed write instead of
    raising, so every write is read back: a record that did not land must stop the call before it
    is sent.
    """

    def __init__(self, dag_id: str, run_id: str, task_id: str, map_index: int) -> None:
        self._run = {"dag_id": dag_id, "run_id": run_id, "task_id": task_id, "map_index": map_index}
        self.key = variable_key(dag_id, run_id, task_id, map_index)

    def read(self) -> Any | None:
        """The record, or None once its absence is confirmed; raises when it cannot tell.

        ``Variable.get`` gives None for a failed read too. So a None is confirmed: a probe Variable
        written and read back proves that the path to the metadata database answers right now,
        and a second read then speaks for the record. A failed probe raises: nothing may be sent.
        """
        text = self._get(self.key)
        if text is None:
            self._probe()
            text = self._get(self.key)
        if text is None:
            return None
        try:
            stored = json.loads(text)
        except (TypeError, ValueError):
            return text  # unreadable: the ledger treats it as an unknown outcome
        return stored.get("record", stored) if isinstance(stored, dict) else stored

    @staticmethod
    def _get(key: str) -> str | None:
        return get_text(key)

    def _probe(self) -> None:
        confirm_variables_answer(self.key + PROBE_SUFFIX, self._run, self.key)

    def write(self, value: dict[str, Any]) -> None:
        from airflow.providers.common.compat.sdk import Variable

        Variable.set(self.key, json.dumps({**self._run, "record": value}), description=_VARIABLE_DESCRIPTION)
        if self.read() != value:
            raise RuntimeError(f"the Airflow Variable {self.key!r} could not be written")


PROBE_SUFFIX = ".probe"


def confirm_variables_answer(probe_key: str, names_run: dict[str, Any], about: str) -> None:
    """Raise :class:`RecordUnreadableError` unless a probe Variable written now reads back: then a
    read that found nothing (``about``) speaks for the record. The probe names its DAG run, so that
    the run's clean-up removes it if it stays."""
    from airflow.providers.common.compat.sdk import Variable

    value = json.dumps({**names_run, "probe": secrets.token_hex(16)})
    Variable.set(probe_key, value, description=_VARIABLE_DESCRIPTION)
    answered = Variable.get(probe_key, None)
    try:
        Variable.delete(probe_key)
    except Exception:  # noqa: BLE001 - a probe left behind is removed with its run
        pass
    if answered != value:
        raise RecordUnreadableError(
            f"the Airflow Variable {about!r} read as missing, and a probe Variable written beside it did not "
            "read back, so the metadata database (or on Airflow 3 the API server) is not answering"
        )


class RecordUnreadableError(RuntimeError):
    """Whether a record exists could not be told."""


_VARIABLE_DESCRIPTION = (
    "airflow-provider-octorpa: the state of one task's webhook call, so that its retries never start "
    "the app twice. Removed when its DAG run ends; do not edit."
)


def variable_key(dag_id: str, run_id: str, task_id: str, map_index: int) -> str:
    """The Variable holding a task instance's record.

    Airflow 3.0's execution API takes no ``/`` in a Variable's key, and a run id may hold any
    character, so the run, task and map index are hashed; the DAG id (letters, digits, ``.-_``)
    is kept so that the Variables list shows whose records they are. The value names them all.
    """
    return f"{VARIABLE_PREFIX}{dag_id[:_MAX_DAG_ID_IN_KEY]}.{ti_digest(dag_id, run_id, task_id, map_index)}"


def ti_digest(dag_id: str, run_id: str, task_id: str, map_index: int) -> str:
    """A task instance's short digest, for Variable keys (no ``/``, which a run id may hold)."""
    return hashlib.sha256(json.dumps([dag_id, run_id, task_id, map_index]).encode()).hexdigest()[:32]


def ti_keys(dag_id: str, run_id: str, task_id: str, map_index: int) -> list[str]:
    """The Variables a task instance may keep."""
    call = variable_key(dag_id, run_id, task_id, map_index)
    report = REPORT_PREFIX + ti_digest(dag_id, run_id, task_id, map_index)
    return [
        call,
        call + PROBE_SUFFIX,
        report,
        *(report + suffix for suffix in (CLAIM_SUFFIX, CANCEL_SUFFIX, LOGGED_SUFFIX)),
    ]


def task_instances(dag_id: str, run_id: str, session: Any) -> list[tuple[str, int]]:
    """A DAG run's task instances, as (task id, map index)."""
    from airflow.models.taskinstance import TaskInstance
    from sqlalchemy import select

    query = select(TaskInstance.task_id, TaskInstance.map_index).where(
        TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id
    )
    return [(task_id, map_index) for task_id, map_index in session.execute(query)]


def chunks(keys: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(keys), _IN_CHUNK):
        yield keys[start : start + _IN_CHUNK]


def forget_dag_run(dag_id: str, run_id: str, session: Any, keep_reports: frozenset[str] = frozenset()) -> int:
    """Delete the Variables of a DAG run's task instances (the run has ended), but the reports in
    ``keep_reports`` with their claims and cancels (the sweep removes them later); how many were deleted."""
    from airflow.models.variable import Variable
    from sqlalchemy import delete

    table = Variable.__table__
    keep = {report + suffix for report in keep_reports for suffix in ("", CLAIM_SUFFIX, CANCEL_SUFFIX)}
    keys = [key for ti in task_instances(dag_id, run_id, session) for key in ti_keys(dag_id, run_id, *ti)]
    keys = [key for key in keys if key not in keep]
    return sum(session.execute(delete(table).where(table.c.key.in_(chunk))).rowcount or 0 for chunk in chunks(keys))


def call_records_of_run(dag_id: str, run_id: str, session: Any) -> list[tuple[str, int, dict[str, Any]]]:
    """The call records (Variables) of a DAG run's task instances, as (task id, map index, value)."""
    from airflow.models.variable import Variable
    from sqlalchemy import select

    by_key = {variable_key(dag_id, run_id, *ti): ti for ti in task_instances(dag_id, run_id, session)}
    found = []
    for chunk in chunks(list(by_key)):
        for row in session.scalars(select(Variable).where(Variable.key.in_(chunk))):
            stored = json_object(row.val)
            if stored is not None:
                found.append((*by_key[row.key], stored))
    return found


def value_or_none(row: Any) -> str | None:
    try:
        return row.val  # decrypted by Airflow
    except Exception:  # noqa: BLE001 - another Fernet key: unreadable here
        return None


def json_object(text: str | None) -> dict[str, Any] | None:
    try:
        stored = json.loads(text or "")
    except (TypeError, ValueError):
        return None
    return stored if isinstance(stored, dict) else None


# -- Variables through the Task SDK (a task, the triggerer) ----------------------------------------


def get_text(key: str) -> str | None:
    """A Variable's text, or None (which a failed read also gives: see :func:`confirm_variables_answer`)."""
    from airflow_octorpa import version_compat

    return version_compat.get_variable(key)


def set_checked(key: str, value: str, description: str) -> None:
    """Write a Variable and read it back: the Task SDK logs a failed write instead of raising."""
    from airflow.providers.common.compat.sdk import Variable

    Variable.set(key, value, description=description)
    if get_text(key) != value:
        raise RuntimeError(f"the Airflow Variable {key!r} could not be written")


def delete_checked(key: str) -> None:
    """Delete a Variable, if there is one, and make sure it is gone."""
    from airflow.providers.common.compat.sdk import Variable

    if get_text(key) is None:
        return
    Variable.delete(key)
    if get_text(key) is not None:
        raise RuntimeError(f"the Airflow Variable {key!r} could not be removed")


# -- Variables in the metadata database (the route, the scheduler) -------------------------------


def read_row(session: Any, key: str, lock: bool = False) -> tuple[str | None, dict[str, Any] | None] | None:
    """A Variable's stored value (as is, for :func:`replace_if_unchanged`) and its JSON object (None
    when it cannot be read: another Fernet key, not JSON); None when there is no such Variable.

    ``lock``: hold the row until the transaction ends where the database locks rows (Airflow's
    ``with_row_locks``: PostgreSQL, MySQL), so writers of one hot row queue instead of retrying."""
    from airflow.models.variable import Variable
    from sqlalchemy import select

    table = Variable.__table__
    query = select(table.c.val, table.c.is_encrypted).where(table.c.key == key)
    if lock:
        from airflow.utils.sqlalchemy import with_row_locks

        query = with_row_locks(query, session=session)
    row = session.execute(query).first()
    if row is None:
        return None
    return row.val, _decoded(row.val, row.is_encrypted)


def rows_of(session: Any, keys: list[str]) -> dict[str, dict[str, Any] | None]:
    """The JSON objects of the Variables among ``keys`` that exist (None: unreadable), by key."""
    from airflow.models.variable import Variable
    from sqlalchemy import select

    table = Variable.__table__
    found: dict[str, dict[str, Any] | None] = {}
    for chunk in chunks(keys):
        query = select(table.c.key, table.c.val, table.c.is_encrypted).where(table.c.key.in_(chunk))
        found.update((row.key, _decoded(row.val, row.is_encrypted)) for row in session.execute(query))
    return found


def rendered_fields(session: Any, dag_id: str, run_id: str, task_id: str, map_index: int) -> dict[str, Any]:
    """A task instance's rendered template fields as Airflow stored them (empty: none yet)."""
    from airflow.models.renderedtifields import RenderedTaskInstanceFields as Rendered
    from sqlalchemy import select

    found = session.scalar(
        select(Rendered.rendered_fields).where(
            Rendered.dag_id == dag_id, Rendered.run_id == run_id, Rendered.task_id == task_id,
            Rendered.map_index == map_index,
        )
    )  # fmt: skip
    return found if isinstance(found, dict) else {}


def replace_if_unchanged(session: Any, key: str, stored: str | None, value: dict[str, Any]) -> bool:
    """Write ``value`` only if the Variable still holds ``stored``: of two writers, one wins."""
    from airflow.models.variable import Variable
    from sqlalchemy import update

    table = Variable.__table__
    text, encrypted = _encoded(value)
    result = session.execute(
        update(table).where(table.c.key == key, table.c.val == stored).values(val=text, is_encrypted=encrypted)
    )
    return result.rowcount == 1


def insert_new(session: Any, key: str, value: dict[str, Any], description: str) -> bool:
    """Create a Variable; False when one of that key exists (the caller rolls back)."""
    from airflow.models.variable import Variable
    from sqlalchemy import insert
    from sqlalchemy.exc import IntegrityError

    table = Variable.__table__
    text, encrypted = _encoded(value)
    try:
        session.execute(insert(table).values(key=key, val=text, is_encrypted=encrypted, description=description))
    except IntegrityError:
        return False
    return True


def put_text(session: Any, key: str, text: str, description: str) -> bool:
    """Create or update a Variable in ``session``; True when its value changed."""
    from airflow.models.variable import Variable
    from sqlalchemy import select

    row = session.scalar(select(Variable).where(Variable.key == key))
    if row is None:
        session.add(Variable(key=key, val=text, description=description))
    elif row.val != text:
        row.set_val(text)
    else:
        return False
    session.flush()
    return True


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
