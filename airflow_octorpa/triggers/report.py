"""Trigger that waits in the triggerer for an RPA run's report (see :mod:`airflow_octorpa.callbacks`)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

# Airflow's own waiting triggers poll every few seconds (the human-in-the-loop trigger: 5 s).
DEFAULT_POLL_INTERVAL = 5.0
# How long a report's record must stay missing or unreadable before the wait hands it to the task.
MISSING_GRACE_SECONDS = 60.0
# A waiting task in one of these no longer waits, nor will a next try of it (a clear resets it).
_ENDED_STATES = frozenset({"success", "failed", "skipped", "upstream_failed", "removed"})


class OctoRpaReportTrigger(BaseTrigger):
    """
    Poll the run's report until it lands or ``timeout_at`` (Unix seconds) passes.

    One Variable read per poll, through the Task SDK on Airflow 3 (the triggerer has no database).
    The event names only the outcome and the key: ``{"status": "succeeded" | "failed" | "expired",
    "report_key": ...}``, ``{"status": "timeout"}``, or ``{"status": "missing" | "unreadable"}``
    when the record could not be found or read for ``MISSING_GRACE_SECONDS``. The task reads the
    report itself, so a report's content never passes through the triggerer's event or its log.

    Each poll logs the app's new progress reports (on Airflow 3 the trigger's lines are in the task's
    log). When a user or Airflow ends the deferred task (marks it failed or success, or its DAG run),
    the run is asked to stop (:mod:`airflow_octorpa.callbacks.cancel`): the cancelled trigger reads
    its task's state (so a triggerer restart or a clear, whose next try waits on, is no cancel),
    also from ``on_kill`` where Airflow 3.3 calls it.

    :param report_key: The trigger task's XCom ``report_key``.
    :param timeout_at: When to stop waiting (Unix seconds), or None to wait until the task's own timeout.
    :param poll_interval: Seconds between reads (at least 1).
    :param flow_process_no: The run's flowProcessNo, for the log.
    """

    def __init__(
        self,
        report_key: str,
        timeout_at: float | None = None,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        flow_process_no: str = "",
    ):
        super().__init__()
        self.report_key = report_key
        self.timeout_at = timeout_at
        self.poll_interval = max(1.0, float(poll_interval))
        self.flow_process_no = flow_process_no
        self._progress_logged = 0  # the seq of the last progress report logged

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {"report_key": self.report_key, "timeout_at": self.timeout_at, "poll_interval": self.poll_interval,
             "flow_process_no": self.flow_process_no},
        )  # fmt: skip

    async def run(self) -> AsyncIterator[TriggerEvent]:
        try:
            async for event in self._wait():
                yield event
                return
        except asyncio.CancelledError:
            # Every version (3.3 also calls on_kill; asking twice is harmless). Shielded: the
            # triggerer may cancel a trigger again before it is gone, which must not cut the ask short.
            await asyncio.shield(self._ask_cancel_if_ended())
            raise

    async def on_kill(self) -> None:
        """Airflow 3.3: a user acted on the deferred task (marked it, or cleared it)."""
        await asyncio.shield(self._ask_cancel_if_ended())

    async def _ask_cancel_if_ended(self) -> None:
        """Ask the run to stop if a user or Airflow ended the waiting task (marked it failed or
        success, or its DAG run). Not after a triggerer restart or a move to another triggerer
        (the task stays deferred), nor after a clear: the wait's next try waits for the same run."""
        from asgiref.sync import sync_to_async

        from airflow_octorpa.version_compat import task_instance_state

        ti = getattr(self, "task_instance", None)
        if ti is None:
            return
        try:
            state = await sync_to_async(task_instance_state)(ti)
        except Exception as err:  # noqa: BLE001 - cannot tell: asking the app to stop would be a guess
            self.log.warning(
                "Could not read the waiting task's state (%s); not asking the run to stop.", type(err).__name__
            )
            return
        if state in _ENDED_STATES:
            await self._ask_cancel(ti, f"the waiting task was set to {state}")

    async def _ask_cancel(self, ti: Any, reason: str) -> None:
        from asgiref.sync import sync_to_async

        from airflow_octorpa.callbacks.cancel import request_cancel
        from airflow_octorpa.callbacks.reports import ReportKey

        key = ReportKey.parse(self.report_key)
        if key is None:
            return
        try:
            await sync_to_async(request_cancel)(key.variable, ti.dag_id, ti.run_id, reason)
        except Exception as err:  # noqa: BLE001 - the app runs on; the task's log says so
            self.log.warning(
                "Could not ask Octopus RPA run flowProcessNo=%s to stop (%s).", self.flow_process_no, type(err).__name__
            )
            return
        self.log.info(
            "Asked Octopus RPA run flowProcessNo=%s to stop (%s): its app hears it at its next request to Airflow.",
            self.flow_process_no, reason,
        )  # fmt: skip

    def _log_progress(self, stored: dict[str, Any]) -> None:
        from airflow_octorpa.callbacks.progress import log_progress

        self._progress_logged = log_progress(self.log, self.flow_process_no, stored, self._progress_logged)

    async def _wait(self) -> AsyncIterator[TriggerEvent]:
        from asgiref.sync import sync_to_async

        from airflow_octorpa.callbacks.reports import WAITING, RecordUnreadable, ReportKey, read

        key = ReportKey.parse(self.report_key)
        if key is None:
            yield TriggerEvent({"status": "missing", "report_key": self.report_key})
            return
        trouble_since: float | None = None
        while True:
            trouble = None
            try:
                stored = await sync_to_async(read)(key)
            except RecordUnreadable:
                stored, trouble = None, "unreadable"
            except Exception as err:  # noqa: BLE001 - the API server restarting: read again next poll
                self.log.warning("Could not read the run's report (%s); reading it again.", type(err).__name__)
                stored = {"status": WAITING}
            if stored is None:
                # Airflow answers "not found" for a failed read too: the task tells them apart.
                trouble_since = trouble_since or time.monotonic()
                if time.monotonic() - trouble_since >= MISSING_GRACE_SECONDS:
                    yield TriggerEvent({"status": trouble or "missing", "report_key": self.report_key})
                    return
                stored = {"status": WAITING}
            else:
                trouble_since = None
                self._log_progress(stored)
            if stored.get("status") != WAITING:
                # The task logs the progress reports that came after the last one logged here.
                event = {"status": stored.get("status"), "report_key": self.report_key}
                yield TriggerEvent({**event, "progress_logged": self._progress_logged})
                return
            left = None if self.timeout_at is None else self.timeout_at - time.time()
            if left is not None and left <= 0:
                yield TriggerEvent({"status": "timeout", "report_key": self.report_key})
                return
            await asyncio.sleep(self.poll_interval if left is None else min(self.poll_interval, left))
