"""The benchmarks' shared statistics."""

from __future__ import annotations


def p95(values: list[float]) -> float:
    """The 95th percentile (nearest rank); NaN for no values."""
    ordered = sorted(values)
    return ordered[max(0, round(0.95 * len(ordered)) - 1)] if ordered else float("nan")
