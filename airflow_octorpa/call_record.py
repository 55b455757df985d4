"""The record of a task instance's webhook call, kept across its retries, a killed worker and a resume.

``sending`` is written before the request leaves, then ``started`` (with the run) or ``unknown``;
a call that certainly started nothing is ``refused`` (with the refusal, for the run's page), which a
retry reads as nothing sent. A retry reads it first and never resends what may
have started. Each record carries the task instance's generation (its ``max_tries`` and its DAG
run's ``clear_number``), so that a clear, and only a clear, is a new trigger. The rules, and why
each is needed on each Airflow version, are on the "Never twice" page (docs/pages/never-twice.md).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

from airflow_octorpa.storage import (
    RECORD_KEY,
    RecordStore,
    TaskStateRecords,
    VariableRecords,
)

if TYPE_CHECKING:
    from logging import Logger

    from airflow.sdk.types import Logger as TaskLogger

SENDING, STARTED, UNKNOWN = "sending", "started", "unknown"
REFUSED = "refused"  # the service refused the last call (nothing started): kept for the run's page
MAX_REFUSALS = 10  # the refusals a record keeps (a try resends a refused call a few times at most)


@dataclass(frozen=True)
class CallRecord:
    state: str
    generation: int
    sent_at: float  # Unix seconds when the request was about to leave
    webhook: str  # the webhook id (the URL's last path part), to find the call in the console
    robot: str | None
    result: dict[str, Any] | None = None
    # Absent in records written before 0.3: such a record is matched on ``generation`` alone.
    clear_number: int | None = None  # the DAG run's clear_number when the call was recorded
    dag_run_started: str | None = None  # the DAG run's start date (ISO): which run of this run_id
    cleared: bool = False  # the task was cleared while it ran (Airflow 2): the next try is a new trigger
    # For the run's page (absent in records written before 0.4):
    answered_at: float | None = None  # Unix seconds when the answer (or its loss) was known
    slot: dict[str, Any] | None = None  # where the pool slot was held: {"pool", "where", "seconds"}
    refusals: list[dict[str, Any]] | None = None  # this try's refused attempts: {"at", "status", "code", "request_id"}

    @property
    def sent_at_text(self) -> str:
        if self.sent_at <= 0:
            return "an unknown time"
        return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.sent_at))


def started_calls_of_dag_run(dag_run: Any, session: Any) -> dict[tuple[str, int], dict[str, Any]]:
    """The started runs that a DAG run's trigger tasks recorded, by (task id, map index).

    Runs in the scheduler when the DAG run ends (its records are still there): Variables before
    Airflow 3.3, the task state store from 3.3.
    """
    from sqlalchemy import select

    from airflow_octorpa.storage import call_records_of_run

    found: dict[tuple[str, int], dict[str, Any]] = {}
    for task_id, map_index, stored in call_records_of_run(dag_run.dag_id, dag_run.run_id, session):
        record = _parse(stored.get("record"))
        if record is not None and record.state == STARTED and record.result:
            found[(task_id, map_index)] = asdict(record)
    try:
        from airflow.models.task_state_store import TaskStateStoreModel  # Airflow 3.3+
    except ImportError:
        return found
    rows = session.scalars(
        select(TaskStateStoreModel).where(
            TaskStateStoreModel.dag_run_id == dag_run.id, TaskStateStoreModel.key == RECORD_KEY
        )
    )
    for row in rows:
        try:
            record = _parse(json.loads(row.value))
        except (TypeError, ValueError):
            continue
        if record is not None and record.state == STARTED and record.result:
            found[(row.task_id, row.map_index)] = asdict(record)
    return found


class CallLedger:
    """Reads and writes the task instance's :class:`CallRecord`.

    Outside a task instance (no ``ti`` in the context) it remembers nothing and says so; the
    operator then fails rather than resends whatever may have started a run.
    """

    def __init__(
        self,
        store: RecordStore | None,
        generation: int,
        log: Logger | TaskLogger,
        *,
        first_try: bool = False,
        clear_number: int | None = None,
        dag_run_started: str | None = None,
    ) -> None:
        self._store = store
        self._generation = generation
        self._clear_number = clear_number
        self._dag_run_started = dag_run_started
        self._log = log
        # A task instance's first try has no earlier try to read about. Not reading also keeps it
        # from taking a record left by a deleted DAG run of the same run_id for its own (the first
        # try overwrites it), and spares the Task SDK's "Variable not found" error line.
        self._first_try = first_try
        self.last: CallRecord | None = None  # the record last read or written (what the store now holds)
        if store is None:
            log.warning(
                "This call runs outside an Airflow task instance, so a retry cannot know whether an earlier "
                "try started a run. Calls whose outcome is unknown fail instead of being sent again."
            )

    @classmethod
    def from_context(cls, context: Any, log: Logger | TaskLogger) -> CallLedger:
        ti = context.get("ti")
        max_tries = getattr(ti, "max_tries", None)
        dag_run = context.get("dag_run")
        clear_number = getattr(dag_run, "clear_number", None)
        started = getattr(dag_run, "start_date", None)
        return cls(
            record_store(context),
            max_tries if isinstance(max_tries, int) else 0,
            log,
            first_try=getattr(ti, "try_number", None) == 1,
            clear_number=clear_number if isinstance(clear_number, int) else None,
            dag_run_started=started.isoformat() if started is not None and hasattr(started, "isoformat") else None,
        )

    def prior(self) -> CallRecord | None:
        """This generation's record, if an earlier try of this task instance left one."""
        if self._store is None or self._first_try:
            return None
        raw = self._read()
        if raw is None:
            return None
        record = _parse(raw)
        if record is not None and record.state == REFUSED:
            return None  # the service refused it: nothing started
        if record is None:
            # A record this version cannot read may still say a run started: never guess "nothing".
            self._log.warning("The task's call record is unreadable (%.200r); treating its call as unknown.", raw)
            return CallRecord(UNKNOWN, self._generation, 0.0, "unknown", None)
        if _differ(record.dag_run_started, self._dag_run_started):
            self._log.info(
                "The task's call record belongs to an earlier DAG run with this run_id (started %s, since "
                "deleted): this is a new trigger.",
                record.dag_run_started,
            )
            return None
        if record.cleared or record.generation != self._generation or _differ(record.clear_number, self._clear_number):
            self._log.info("The task was cleared since its last call: this is a new trigger.")
            return None
        self.last = record
        return record

    def _read(self) -> Any | None:
        from airflow_octorpa.exceptions import OctoRpaCallRecordError

        assert self._store is not None
        try:
            return self._store.read()
        except Exception as err:
            raise OctoRpaCallRecordError(
                f"Could not read this task's call record ({type(err).__name__}: {err}), so nothing was sent: an "
                "earlier try may have started a run. Check that Airflow's metadata database (and on Airflow 3 "
                "the API server) is reachable; the task's retries read it again."
            ) from err

    def sending(
        self,
        webhook: str,
        robot: str | None,
        slot: dict[str, Any] | None = None,
        refusals: list[dict[str, Any]] | None = None,
    ) -> CallRecord:
        """Record the call as about to leave; raises (and so nothing is sent) when it cannot."""
        from airflow_octorpa.exceptions import OctoRpaCallRecordError

        try:
            return self._write(
                CallRecord(
                    SENDING,
                    self._generation,
                    time.time(),
                    webhook,
                    robot,
                    clear_number=self._clear_number,
                    dag_run_started=self._dag_run_started,
                    slot=slot,
                    refusals=refusals[-MAX_REFUSALS:] if refusals else None,
                )
            )
        except Exception as err:
            raise OctoRpaCallRecordError(
                f"Could not record the Octopus RPA call before sending it ({type(err).__name__}: {err}), so it "
                "was not sent: without the record a retry could not tell whether it started a run. Check that "
                "Airflow's metadata database (and on Airflow 3 the API server) is reachable; the task's retries "
                "send it once it is."
            ) from err

    def started(self, record: CallRecord, result: dict[str, Any]) -> None:
        self._write(replace(record, state=STARTED, result=result, answered_at=time.time()))

    def unknown(self, record: CallRecord) -> None:
        self._write(replace(record, state=UNKNOWN, answered_at=time.time()))

    def refused(self, record: CallRecord, refusals: list[dict[str, Any]]) -> None:
        """The call started nothing: a retry may send it again. What refused it stays for the
        run's page (the request id to quote to the vendor)."""
        if self._store is not None:
            self._write(replace(record, state=REFUSED, answered_at=time.time(), refusals=refusals[-MAX_REFUSALS:]))

    def cleared(self) -> None:
        """The task instance was cleared while it ran: its next try is a new trigger."""
        raw = self._read() if self._store is not None else None
        record = _parse(raw) if raw is not None else None
        if record is not None:
            self._write(replace(record, cleared=True))

    def _write(self, record: CallRecord) -> CallRecord:
        if self._store is not None:
            self._store.write(asdict(record))
            self.last = record
        return record


def record_store(context: Any) -> RecordStore | None:
    """Where this task instance keeps its record: the task state store, else a Variable."""
    if (store := context.get("task_state_store")) is not None:
        return TaskStateRecords(store)
    ti = context.get("ti")
    if ti is None or not getattr(ti, "run_id", None):
        return None
    return VariableRecords(ti.dag_id, ti.run_id, ti.task_id, map_index_of(ti))


def map_index_of(ti: Any) -> int:
    """A task instance's map index (-1 when not mapped, or when the context gives none)."""
    map_index = getattr(ti, "map_index", -1)
    return map_index if isinstance(map_index, int) else -1


def _differ(recorded: Any, current: Any) -> bool:
    """Both are known and not equal (a record from before 0.3 knows neither)."""
    return recorded is not None and current is not None and recorded != current


def _parse(raw: Any) -> CallRecord | None:
    if not isinstance(raw, dict):
        return None
    try:
        record = CallRecord(**raw)
    except TypeError:
        return None
    ok = record.state in (SENDING, STARTED, UNKNOWN, REFUSED) and isinstance(record.generation, int)
    return record if ok else None
