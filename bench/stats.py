"""Statistics the benchmarks share."""

from __future__ import annotations

import math


def percentile(values: list[float], pct: float) -> float:
    """The `pct`-th percentile (0-100) of `values` by nearest rank: a value that was measured,
    never an interpolation. Raises ValueError for no values."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(pct * len(ordered) / 100)))
    return ordered[rank - 1]
