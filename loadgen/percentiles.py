"""Figures read off loadgen's HDR histograms (:mod:`loadgen.histogram`): percentiles, the mean, and the
summary in milliseconds that ``results.json`` carries, each exactly what hdrhistogram's own methods give, but
from one pass over the counters in C instead of a Python loop per figure (the coordinator reads them off
merged histograms every second and for every request name at the end).
"""

from __future__ import annotations

import functools
import itertools
import operator
from bisect import bisect_left
from collections.abc import Iterable

from hdrh.histogram import HdrHistogram

from loadgen.histogram import index_values

# the percentiles a summary reports, by their key in results.json
PERCENTILES: tuple[tuple[str, float], ...] = (
    ("p50", 50.0),
    ("p66", 66.0),
    ("p75", 75.0),
    ("p80", 80.0),
    ("p90", 90.0),
    ("p95", 95.0),
    ("p98", 98.0),
    ("p99", 99.0),
    ("p99.9", 99.9),
    ("p99.99", 99.99),
)


@functools.cache
def _index_tables() -> tuple[list[int], list[int]]:
    """Per counter index: the highest value it counts and its median value (hdrhistogram's figures)."""
    lowest, highest = index_values()
    return highest, [lo + ((hi - lo + 1) >> 1) for lo, hi in zip(lowest, highest, strict=True)]


def values_at_percentiles(h: HdrHistogram, percentiles: Iterable[float]) -> dict[float, int]:
    """``h.get_value_at_percentile(p)`` for each ``p`` > 0, exactly, from one pass over the counters in C
    instead of a Python loop per percentile (milliseconds instead of tens of them for a merged histogram).
    Empty histograms give 0, as hdrhistogram does."""
    highest, _ = _index_tables()
    total = h.total_count
    cumulative = list(itertools.accumulate(h.counts[:]))
    out: dict[float, int] = {}
    for p in percentiles:
        if p <= 0:
            raise ValueError("percentiles must be > 0")
        target = max(int((min(p, 100.0) * total / 100) + 0.5), 1)  # hdrhistogram's arithmetic, in its order
        i = bisect_left(cumulative, target)
        out[p] = highest[i] if total and i < len(cumulative) else 0
    return out


def mean_value(h: HdrHistogram) -> float:
    """``h.get_mean_value()``, exactly (each count at the median of its range), in one pass in C."""
    if not h.total_count:
        return 0.0
    _, medians = _index_tables()
    total: int = sum(map(operator.mul, h.counts[:], medians))
    count: int = h.total_count
    return float(total) / count


def summary_ms(h: HdrHistogram) -> dict[str, float | None]:
    """min, mean, percentiles and max in milliseconds; all None for an empty histogram. The same figures as
    hdrhistogram's ``get_mean_value`` and ``get_percentile_to_value_dict``, at the cost of two passes in C."""
    keys = ["min", "mean", *(k for k, _ in PERCENTILES), "max"]
    if h.get_total_count() == 0:
        return dict.fromkeys(keys)
    out: dict[str, float | None] = {"min": h.get_min_value() / 1000.0, "mean": mean_value(h) / 1000.0}
    values = values_at_percentiles(h, [p for _, p in PERCENTILES])
    for key, p in PERCENTILES:
        out[key] = values[p] / 1000.0
    out["max"] = h.get_max_value() / 1000.0
    return out


def percentiles_ms(h: HdrHistogram, *ps: float) -> list[float | None]:
    """Percentiles of ``h`` in ms (None for an empty histogram), from one pass over the counters."""
    if not h.get_total_count():
        return [None for _ in ps]
    values = values_at_percentiles(h, ps)
    return [values[p] / 1000.0 for p in ps]
