"""The record of a task instance's webhook call, kept across retries in Airflow's task state store.

A call is recorded as ``sending`` before its request leaves, and becomes ``started`` (with the
run's ``flowProcessNo``) or ``unknown`` once its outcome is known; a call that certainly started
nothing is erased. A retry of the same task instance reads the record first: ``started`` returns
that run instead of triggering again, ``sending`` or ``unknown`` means a run may have started.
Writing ``sending`` first closes the gap between a request and the write of its result: a worker
killed in between leaves ``sending``, never nothing.

The task state store (Airflow 3.3) is scoped to the DAG run, task and map index, and survives
retries and clearing alike. A clear is a deliberate new trigger, so each record carries the task
instance's *generation*: its ``max_tries`` as the scheduler set it. Retries leave ``max_tries``
alone; a clear sets it to ``try_number + retries``, which is past every earlier value while
``retries`` stays put. The worker's own ``self.retries`` is never used: it may differ from the
scheduler's (a DAG edited between tries, retries read from a Variable).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from logging import Logger

    from airflow.sdk.types import Logger as TaskLogger

RECORD_KEY = "octorpa_call"

SENDING, STARTED, UNKNOWN = "sending", "started", "unknown"


@dataclass(frozen=True)
class CallRecord:
    state: str
    generation: int
    sent_at: float  # Unix seconds when the request was about to leave
    webhook: str  # the webhook id (the URL's last path part), to find the call in the console
    robot: str | None
    result: dict[str, Any] | None = None

    @property
    def sent_at_text(self) -> str:
        if self.sent_at <= 0:
            return "an unknown time"
        return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.sent_at))


class CallLedger:
    """Reads and writes the task instance's :class:`CallRecord`.

    Without a task state store (Airflow before 3.3, or outside a task) it remembers nothing and
    says so once; the operator then fails rather than resends whatever may have started a run.
    """

    def __init__(self, store: Any | None, generation: int, log: Logger | TaskLogger) -> None:
        self._store = store
        self._generation = generation
        self._log = log
        if store is None:
            log.warning(
                "Airflow's task state store is not available (it needs Airflow 3.3), so a retry of this "
                "task cannot know whether an earlier try started a run. Calls whose outcome is unknown "
                "fail the task without retrying instead."
            )

    @classmethod
    def from_context(cls, context: Any, log: Logger | TaskLogger) -> CallLedger:
        max_tries = getattr(context.get("ti"), "max_tries", None)
        return cls(context.get("task_state_store"), max_tries if isinstance(max_tries, int) else 0, log)

    def prior(self) -> CallRecord | None:
        """This generation's record, if an earlier try of this task instance left one."""
        if self._store is None:
            return None
        raw = self._store.get(RECORD_KEY)
        if raw is None:
            return None
        record = _parse(raw)
        if record is None:
            # A record this version cannot read may still say a run started: never guess "nothing".
            self._log.warning("The task's call record is unreadable (%.200r); treating its call as unknown.", raw)
            return CallRecord(UNKNOWN, self._generation, 0.0, "unknown", None)
        if record.generation != self._generation:
            self._log.info("The task was cleared since its last call: this is a new trigger.")
            return None
        return record

    def sending(self, webhook: str, robot: str | None) -> CallRecord:
        return self._write(CallRecord(SENDING, self._generation, time.time(), webhook, robot))

    def started(self, record: CallRecord, result: dict[str, Any]) -> None:
        self._write(CallRecord(STARTED, record.generation, record.sent_at, record.webhook, record.robot, result))

    def unknown(self, record: CallRecord) -> None:
        self._write(CallRecord(UNKNOWN, record.generation, record.sent_at, record.webhook, record.robot))

    def not_started(self) -> None:
        if self._store is not None:
            self._store.delete(RECORD_KEY)

    def _write(self, record: CallRecord) -> CallRecord:
        if self._store is not None:
            from airflow.sdk.execution_time.context import NEVER_EXPIRE

            # Never expire: a record that vanished would let a late retry trigger a second run.
            self._store.set(RECORD_KEY, asdict(record), retention=NEVER_EXPIRE)
        return record


def _parse(raw: Any) -> CallRecord | None:
    if not isinstance(raw, dict):
        return None
    try:
        record = CallRecord(**raw)
    except TypeError:
        return None
    ok = record.state in (SENDING, STARTED, UNKNOWN) and isinstance(record.generation, int)
    return record if ok else None
