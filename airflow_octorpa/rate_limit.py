"""How long a webhook call keeps its pool slot so that the account's rate limits always hold.

Every call runs inside the ``octorpa`` pool of ``P`` slots and keeps its slot until ``H`` seconds
after its exchange ended, so the calls of one slot are at least ``H`` apart. A window of ``T``
seconds then holds at most ``ceil(T / H)`` calls of a slot, and at most ``P * ceil(T / H)`` in
all. For a limit of ``A`` calls per ``T`` seconds, ``H = T / floor(A / P)`` makes
``ceil(T / H) <= floor(A / P)``, so at most ``P * floor(A / P) <= A`` calls fall in any window:
every limit holds whatever the number of workers, DAGs and retries. With the vendor's limits and
5 slots: ``H = max(1 / floor(5 / 5), 60 / floor(20 / 5)) = max(1, 15) = 15`` seconds. A pool with
more slots than a limit's ``A`` could send more than ``A`` calls at once, so it is refused.
"""

from __future__ import annotations

DEFAULT_RATE_LIMITS = "5/second;20/minute"  # the vendor's published limits, per account
DEFAULT_POOL = "octorpa"
DEFAULT_POOL_SIZE = 5


def hold_seconds(rate_limits: str, slots: int) -> float:
    """The slot hold ``H`` for ``rate_limits`` (the ``limits`` package's notation) and a pool of ``slots``.

    >>> hold_seconds("5/second;20/minute", 5)
    15.0
    """
    from limits import parse_many  # lazily: DAG files import the operator at every parse

    holds = []
    for item in parse_many(rate_limits):
        calls_per_slot = item.amount // slots
        if calls_per_slot < 1:
            raise ValueError(
                f"a pool of {slots} slots can send {slots} calls at once, more than the limit {item}; "
                f"give the pool (and the connection's pool_size) at most {item.amount} slots"
            )
        holds.append(item.get_expiry() / calls_per_slot)
    return max(holds)


def pool_file(name: str = DEFAULT_POOL, size: int = DEFAULT_POOL_SIZE, rate_limits: str = DEFAULT_RATE_LIMITS) -> dict:
    """The pool as ``airflow pools import`` reads it; it must count deferred tasks (deferred holds)."""
    return {
        name: {
            "slots": size,
            "description": f"Octopus RPA webhook calls: one shared budget of {rate_limits} per account",
            "include_deferred": True,
        }
    }
