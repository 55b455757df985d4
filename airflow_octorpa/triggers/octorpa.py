"""Trigger that keeps a deferred trigger task (and so its pool slot) until its slot hold ends."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
_TIME_NAMESPACE = "/proc/self/ns/time"


def monotonic_clock_id() -> str | None:
    """Name the monotonic clock ``time.monotonic()`` reads here, or ``None`` if it cannot be told.

    On Linux every process of one kernel boot and one time namespace reads one and the same
    ``CLOCK_MONOTONIC``. The boot id changes at each boot; a time namespace (which may offset the
    clock, as a restored container's does) has its own inode. Equal names mean one clock, never
    two clocks compared; anything else (another host, another OS) gives no name.
    """
    if sys.platform != "linux" or time.get_clock_info("monotonic").implementation != "clock_gettime(CLOCK_MONOTONIC)":
        return None
    try:
        boot = _BOOT_ID.read_text().strip()
    except OSError:
        return None
    try:
        namespace = os.readlink(_TIME_NAMESPACE)
    except FileNotFoundError:
        # No time namespaces on this kernel (before 5.6, or built without them): one clock a boot.
        namespace = "time:[none]"
    except OSError:
        return None
    return f"{boot}/{namespace}" if boot else None


class OctoRpaSlotHoldTrigger(BaseTrigger):
    """
    Wait out the rest of a slot hold, then hand the task's result back to it on a worker.

    The hold never compares two clocks. On the worker's host (``clock`` matches) it ends at the
    worker's own ``monotonic_deadline``, and not before ``wall_deadline`` (a matching clock name
    on another host must not end it early); anywhere else it lasts ``hold_seconds`` from the
    trigger's start. A restart never shortens it. It only sleeps, so running it twice starts
    nothing; the "Rate limits" page says why each case is safe.

    :param hold_seconds: How much longer the task keeps its pool slot, as of the deferral.
    :param result: The started run (``flow_process_no``, ``flow_id``, ``enterprise_id``).
    :param clock: ``monotonic_clock_id()`` where ``monotonic_deadline`` was read.
    :param monotonic_deadline: When the hold ends, on that clock.
    :param wall_deadline: When the hold ends, on the worker's wall clock (Unix seconds).
    """

    def __init__(
        self,
        hold_seconds: float,
        result: dict[str, Any],
        clock: str | None = None,
        monotonic_deadline: float | None = None,
        wall_deadline: float | None = None,
    ) -> None:
        super().__init__()
        self.hold_seconds = float(hold_seconds)
        self.result = result
        self.clock = clock
        self.monotonic_deadline = monotonic_deadline
        self.wall_deadline = wall_deadline

    @classmethod
    def until(cls, monotonic_deadline: float, result: dict[str, Any]) -> OctoRpaSlotHoldTrigger:
        """A hold that ends at ``monotonic_deadline`` on this process's ``time.monotonic()``."""
        rest = max(0.0, monotonic_deadline - time.monotonic())
        return cls(
            hold_seconds=rest,
            result=result,
            clock=monotonic_clock_id(),
            monotonic_deadline=monotonic_deadline,
            wall_deadline=time.time() + rest,
        )

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "hold_seconds": self.hold_seconds,
                "result": self.result,
                "clock": self.clock,
                "monotonic_deadline": self.monotonic_deadline,
                "wall_deadline": self.wall_deadline,
            },
        )

    def shares_the_workers_clock(self) -> bool:
        """Whether ``monotonic_deadline`` was read on the clock this process reads."""
        if self.monotonic_deadline is None or self.clock is None or self.clock != monotonic_clock_id():
            return False
        # A clock that reads earlier than the deferral is not the worker's, whatever /proc says
        # (a sandbox may make up its boot id): then the rest is timed here.
        return time.monotonic() >= self.monotonic_deadline - self.hold_seconds

    def deadline(self) -> float:
        """When the hold ends on this process's monotonic clock."""
        return self._deadline(self.shares_the_workers_clock())

    def _deadline(self, shares_the_workers_clock: bool) -> float:
        now = time.monotonic()
        timed_here = now + self.hold_seconds
        if not shares_the_workers_clock or self.monotonic_deadline is None:
            return timed_here
        # The latest end any clock read here gives: a clock that runs ahead cannot cut the hold.
        # Never past the whole rest timed from here: a clock that runs behind cannot lengthen it.
        ends = [self.monotonic_deadline]
        if self.wall_deadline is not None:
            ends.append(now + (self.wall_deadline - time.time()))
        return min(max(ends), timed_here)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        shared = self.shares_the_workers_clock()
        deadline = self._deadline(shared)
        self.log.info(
            "Keeping the pool slot for %.1f s more, %s.",
            max(0.0, deadline - time.monotonic()),
            "to the end of the hold the worker began (one clock: this host's)"
            if shared
            else "timed from here (the worker's clock is not this host's)",
        )
        # Sleep to the moment itself (not in whole-second steps): every late second is a second
        # the slot stays idle. asyncio's loop sleeps on the monotonic clock.
        while (remaining := deadline - time.monotonic()) > 0:
            await asyncio.sleep(remaining)
        yield TriggerEvent({"status": "held", "result": self.result})
