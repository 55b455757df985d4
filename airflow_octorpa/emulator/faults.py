"""Fault injection: what can go wrong between a client and the webhook service, on demand.

Faults are queued per webhook and taken one per call, or drawn at random from a seeded generator
for load tests. Each says whether the run was started before things went wrong, which is what
a client cannot know and the provider must survive:

- ``drop_before_read``: the connection is reset before the request is read; nothing starts.
- ``rate_limit``: HTTP 429 with ``Retry-After``; nothing starts.
- ``status_before_start`` (``status``, default 503): an error answer; nothing starts.
- ``html`` (``status``, default 502): a gateway's HTML page; nothing starts.
- ``delay_after_start`` (``seconds``): the run starts, the answer comes ``seconds`` late.
- ``reset_after_start``: the run starts, the connection is reset instead of answering.
- ``status_after_start`` (``status``, default 502): the run starts, an error is answered.
"""

from __future__ import annotations

import random
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

BEFORE_START = frozenset({"drop_before_read", "rate_limit", "status_before_start", "html"})
AFTER_START = frozenset({"delay_after_start", "reset_after_start", "status_after_start"})


@dataclass(frozen=True)
class Fault:
    kind: str
    status: int | None = None
    seconds: float = 0.0

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Fault:
        kind = str(data["kind"])
        if kind not in BEFORE_START | AFTER_START:
            raise ValueError(f"unknown fault kind {kind!r}; one of {sorted(BEFORE_START | AFTER_START)}")
        default_status = {"rate_limit": 429, "status_before_start": 503, "html": 502, "status_after_start": 502}
        status = data.get("status", default_status.get(kind))
        return cls(kind=kind, status=None if status is None else int(status), seconds=float(data.get("seconds", 0)))

    @property
    def starts_run(self) -> bool:
        return self.kind in AFTER_START


class FaultPlan:
    """Queued faults per webhook, then seeded random ones; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queued: dict[str, deque[Fault]] = {}
        self._random: dict[str, Any] | None = None
        self._rng = random.Random(0)

    def queue(self, webhook_id: str, faults: list[dict[str, Any]]) -> None:
        """Queue faults for the next calls to ``webhook_id``; ``{"count": N}`` repeats one N times."""
        parsed = [Fault.from_dict(f) for f in faults for _ in range(int(f.get("count", 1)))]
        with self._lock:
            self._queued.setdefault(webhook_id, deque()).extend(parsed)

    def set_random(self, spec: dict[str, Any] | None) -> None:
        """Draw faults at random for every call: ``{"seed", "rate_limit", "unknown",
        "status_before_start", "delay"}``, the three rates as probabilities."""
        with self._lock:
            self._random = dict(spec) if spec else None
            self._rng = random.Random((spec or {}).get("seed", 0))

    def put_back(self, webhook_id: str, fault: Fault | None) -> None:
        """Return a fault taken for a request that was refused before it was read."""
        if fault is not None:
            with self._lock:
                self._queued.setdefault(webhook_id, deque()).appendleft(fault)

    def clear(self) -> None:
        with self._lock:
            self._queued.clear()
            self._random = None

    def take(self, webhook_id: str) -> Fault | None:
        with self._lock:
            queued = self._queued.get(webhook_id)
            if queued:
                return queued.popleft()
            return self._draw() if self._random else None

    def _draw(self) -> Fault | None:
        spec, roll = self._random or {}, self._rng.random()
        for kind, rate in (
            ("rate_limit", "rate_limit"),
            ("unknown", "unknown"),
            ("status_before_start", "status_before_start"),
        ):
            threshold = float(spec.get(rate, 0))
            if roll < threshold:
                if kind == "unknown":
                    return self._rng.choice(
                        [
                            Fault("delay_after_start", seconds=float(spec.get("delay", 5))),
                            Fault("reset_after_start"),
                            Fault("status_after_start", status=502),
                        ]
                    )
                return Fault.from_dict({"kind": kind})
            roll -= threshold
        return None
