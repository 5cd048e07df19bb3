"""The few statistics a swarm report shows, in one place (checks, worker samples and merged reports)."""

from __future__ import annotations

from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile, ``q`` in 0..1; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def r1(value: float | None) -> float | None:
    """Rounded to 0.1, as reports show figures (None stays None)."""
    return None if value is None else round(value, 1)


def percentile_r1(values: Sequence[float], q: float) -> float | None:
    return r1(percentile(values, q))
