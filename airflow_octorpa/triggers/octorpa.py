"""Trigger that keeps a deferred trigger task (and so its pool slot) until its slot hold ends."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent


class OctoRpaSlotHoldTrigger(BaseTrigger):
    """
    Sleep ``hold_seconds``, then hand the task's result back to it on a worker.

    The hold is a duration timed on the triggerer's own monotonic clock, not a moment on the
    worker's wall clock: the two machines' clocks may disagree, and a wall clock may step. A
    triggerer that restarts runs the trigger again from its serialized arguments and so sleeps
    the whole hold again: a restart can lengthen a hold, never shorten it.

    It only sleeps: it never calls the webhook, so running it twice cannot start a second run.
    The task resumes in ``execute_complete`` and ends there as it would in worker mode (XCom,
    listeners, mapped lengths), with ``result`` from the event.

    :param hold_seconds: How much longer the task keeps its pool slot.
    :param result: The started run (``flow_process_no``, ``flow_id``, ``enterprise_id``).
    """

    def __init__(self, hold_seconds: float, result: dict[str, Any]) -> None:
        super().__init__()
        self.hold_seconds = float(hold_seconds)
        self.result = result

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {"hold_seconds": self.hold_seconds, "result": self.result},
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        # Sleep to the moment itself (not in whole-second steps): every late second is a second
        # the slot stays idle. asyncio's loop sleeps on the monotonic clock.
        deadline = time.monotonic() + self.hold_seconds
        while (remaining := deadline - time.monotonic()) > 0:
            await asyncio.sleep(remaining)
        yield TriggerEvent({"status": "held", "result": self.result})
