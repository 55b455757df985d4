"""Trigger that keeps a deferred trigger task (and so its pool slot) until its slot hold ends."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TaskSuccessEvent, TriggerEvent


class OctoRpaSlotHoldTrigger(BaseTrigger):
    """
    Wait until ``hold_until`` (Unix seconds), then end the task successfully.

    The task pushed its result (XCom) before deferring. Ending the task here, rather than
    resuming it on a worker, frees the pool slot as soon as the hold is over. (The result does
    not travel in the event: XComs that a trigger pushes reach downstream tasks JSON-encoded
    twice in Airflow 3.3.) It only waits: it never calls the webhook, so a triggerer that
    restarts and runs it again cannot start a second RPA run.

    :param hold_until: When the task may release its pool slot, as a Unix timestamp.
    """

    def __init__(self, hold_until: float) -> None:
        super().__init__()
        self.hold_until = hold_until

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (f"{type(self).__module__}.{type(self).__qualname__}", {"hold_until": self.hold_until})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        # Sleep to the moment itself (not in whole-second steps): every late second is a second
        # the slot stays idle.
        while (remaining := self.hold_until - time.time()) > 0:
            await asyncio.sleep(remaining)
        yield TaskSuccessEvent()
