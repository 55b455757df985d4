"""How long a webhook call keeps its pool slot so that the account's rate limits always hold.

Every call runs inside the ``octorpa`` pool of ``slots`` slots, and keeps its slot until ``H``
seconds after its exchange ended. One slot therefore sends at most one call per ``H`` seconds,
and the pool at most ``slots`` calls in any ``H`` seconds. For a limit of ``amount`` calls per
``period`` seconds, ``H = slots * period / amount`` gives at most ``slots * period / H = amount``
calls in any ``period``: the limit holds whatever the number of workers, DAGs and retries.
"""

from __future__ import annotations

DEFAULT_POOL = "octorpa"
DEFAULT_POOL_SLOTS = 5


def hold_seconds(rate_limits: str, slots: int) -> float:
    """The slot hold ``H`` for ``rate_limits`` (the ``limits`` package's notation) and a pool of ``slots``.

    >>> hold_seconds("5/second;20/minute", 5)
    15.0
    """
    from limits import parse_many  # lazily: DAG files import the operator at every parse

    if slots < 1:
        raise ValueError(f"a pool has at least one slot, got {slots}")
    return max(slots * item.get_expiry() / item.amount for item in parse_many(rate_limits))
