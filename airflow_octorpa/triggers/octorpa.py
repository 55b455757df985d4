"""Trigger that keeps a deferred trigger task (and so its pool slot) until its slot hold ends."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent


class OctoRpaSlotHoldTrigger(BaseTrigger):
    """
    Wait until ``hold_until`` (Unix seconds), then hand ``result`` back to the task.

    It only waits: it never calls the webhook, so a triggerer that restarts and runs it again
    cannot start a second RPA run.

    :param hold_until: When the task may release its pool slot, as a Unix timestamp.
    :param result: The trigger result to return from the task (its XCom), JSON-serialisable.
    """

    def __init__(self, hold_until: float, result: dict[str, Any]) -> None:
        super().__init__()
        self.hold_until = hold_until
        self.result = result

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (f"{type(self).__module__}.{type(self).__qualname__}", {"hold_until": self.hold_until, "result": self.result})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        # Sleep to the moment itself (not in whole-second steps): every late second is a second
        # the slot stays idle.
        while (remaining := self.hold_until - time.time()) > 0:
            await asyncio.sleep(remaining)
        yield TriggerEvent({"status": "held", "result": self.result})
