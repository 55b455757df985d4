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


class OctoRpaReportTrigger(BaseTrigger):
    """
    Poll the run's report until it lands or ``timeout_at`` (Unix seconds) passes.

    One Variable read per poll, through the Task SDK on Airflow 3 (the triggerer has no database).
    The event names only the outcome and the key: ``{"status": "succeeded" | "failed" | "expired",
    "report_key": ...}``, ``{"status": "timeout"}``, or ``{"status": "missing" | "unreadable"}``
    when the record could not be found or read for ``MISSING_GRACE_SECONDS``. The task reads the
    report itself, so a report's content never passes through the triggerer's event or its log.

    :param report_key: The trigger task's XCom ``report_key``.
    :param timeout_at: When to stop waiting (Unix seconds), or None to wait until the task's own timeout.
    :param poll_interval: Seconds between reads (at least 1).
    """

    def __init__(self, report_key: str, timeout_at: float | None = None, poll_interval: float = DEFAULT_POLL_INTERVAL):
        super().__init__()
        self.report_key = report_key
        self.timeout_at = timeout_at
        self.poll_interval = max(1.0, float(poll_interval))

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {"report_key": self.report_key, "timeout_at": self.timeout_at, "poll_interval": self.poll_interval},
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
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
            if stored.get("status") != WAITING:
                yield TriggerEvent({"status": stored.get("status"), "report_key": self.report_key})
                return
            left = None if self.timeout_at is None else self.timeout_at - time.time()
            if left is not None and left <= 0:
                yield TriggerEvent({"status": "timeout", "report_key": self.report_key})
                return
            await asyncio.sleep(self.poll_interval if left is None else min(self.poll_interval, left))
