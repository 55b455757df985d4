"""Reading the limits off what the emulator received: the least time the limits allow for ``n``
calls, and the most calls any moving window ever held."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

# The vendor's windows scaled down (a minute becomes 28 s), in the emulator and the connections of
# tests through real components: the slot hold is max(1 / 1, 28 / 4) = 7 s instead of 15 s, still
# long enough to be deferred (holds under 6 s are kept in the worker).
SCALED_LIMITS = "5/second;20/28 seconds"


@contextlib.contextmanager
def scaled_emulator(limits: str = SCALED_LIMITS) -> Iterator[Any]:
    """The emulator with the built-in account, enforcing ``limits``."""
    from airflow_octorpa.emulator import OctoRpaEmulator, default_config

    config = default_config()
    config.rate_limits = limits
    with OctoRpaEmulator(config) as emulator:
        yield emulator


def ideal_seconds(n: int, limits: str) -> float:
    """The earliest the n-th call can be sent when every call goes out as soon as the windows allow."""
    from limits import parse_many

    items = [(item.amount, item.get_expiry()) for item in parse_many(limits)]
    sent: list[float] = []
    for i in range(n):
        earliest = sent[-1] if sent else 0.0
        for amount, period in items:
            if i >= amount:
                earliest = max(earliest, sent[i - amount] + period)
        sent.append(earliest)
    return sent[-1] - sent[0] if sent else 0.0


def worst_windows(arrivals: list[float], limits: str) -> dict[str, tuple[int, int]]:
    """For each limit, ``(the most calls one moving window held, the limit's amount)``."""
    from limits import parse_many

    return {
        str(item): (
            max((sum(1 for t in arrivals if start <= t < start + item.get_expiry()) for start in arrivals), default=0),
            item.amount,
        )
        for item in parse_many(limits)
    }


def within(arrivals: list[float], limits: str) -> bool:
    return all(worst <= amount for worst, amount in worst_windows(arrivals, limits).values())


def gaps_apart(arrivals: list[float], slots: int) -> list[float]:
    """The time from each call to the ``slots``-th after it, in the order of the calls."""
    ordered = sorted(arrivals)
    return [b - a for a, b in zip(ordered, ordered[slots:], strict=False)]


def min_gap(arrivals: list[float], slots: int) -> float:
    """The least time between a call and the ``slots``-th after it. Each slot is kept for the whole
    hold after its call: when a call is made, one of the ``slots`` before it has ended its hold, so
    this is never under the hold."""
    return min(gaps_apart(arrivals, slots))
