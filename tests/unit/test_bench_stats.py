"""bench.stats: the nearest-rank percentile every benchmark reports."""

from __future__ import annotations

import pytest

from bench.stats import percentile


def test_percentile_is_the_nearest_rank() -> None:
    values = [float(v) for v in range(100, 0, -1)]  # order does not matter
    assert [percentile(values, p) for p in (1, 7, 50, 99, 100)] == [1.0, 7.0, 50.0, 99.0, 100.0]
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([1.0, 2.0], 50) == 1.0
    assert percentile([5.0], 99) == 5.0
    assert percentile([4.0, 2.0], 0) == 2.0


def test_percentile_of_nothing_is_an_error() -> None:
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)
