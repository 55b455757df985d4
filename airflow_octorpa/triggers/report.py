"""Trigger that waits in the triggerer for an RPA run's report (see :mod:`airflow_octorpa.callbacks`)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

# Airflow's own waiting triggers poll every few seconds (the human-in-the-loop trigger: 5 s).
DEFAULT_POLL_INTERVAL = 5.0
# How long a report's record must stay unreadable before the wait is given up as "missing".
MISSING_GRACE_SECONDS = 60.0


class OctoRpaReportTrigger(BaseTrigger):
    """
    Poll the run's report until it lands or ``timeout_at`` (Unix seconds) passes.

    One Variable read per poll, through the Task SDK on Airflow 3 (the triggerer has no database).
    Yields ``{"status": "succeeded" | "failed", "report": {...}}``, ``{"status": "timeout"}``, or
    ``{"status": "missing"}`` when no call awaits a report under ``report_key`` (removed, or never
    registered).

    :param report_key: The SHA-256 of the call's callback token (the trigger task's XCom).
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

        from airflow_octorpa.callbacks.reports import WAITING, read

        missing_since: float | None = None
        while True:
            try:
                stored = await sync_to_async(read)(self.report_key)
            except Exception as err:  # noqa: BLE001 - the API server restarting: read again next poll
                self.log.warning("Could not read the run's report (%s); reading it again.", type(err).__name__)
                stored = {"status": WAITING}
            if stored is None:
                # Airflow answers "not found" for a read that failed too: only a record missing for a
                # while is gone.
                missing_since = missing_since or time.monotonic()
                if time.monotonic() - missing_since >= MISSING_GRACE_SECONDS:
                    yield TriggerEvent({"status": "missing"})
                    return
                stored = {"status": WAITING}
            else:
                missing_since = None
            if stored.get("status") != WAITING:
                yield TriggerEvent({"status": stored.get("status"), "report": stored})
                return
            left = None if self.timeout_at is None else self.timeout_at - time.time()
            if left is not None and left <= 0:
                yield TriggerEvent({"status": "timeout"})
                return
            await asyncio.sleep(self.poll_interval if left is None else min(self.poll_interval, left))
