"""HDR histograms as loadgen uses them: microseconds from 1 µs to 1 hour at 3 significant digits.

Agents record into these and ship them encoded (the standard HdrHistogram compressed form); the coordinator
decodes and adds them, which is exact: a merged histogram equals one histogram of all the samples.
"""

from __future__ import annotations

from hdrh.histogram import HdrHistogram

LOWEST_US = 1
HIGHEST_US = 3_600_000_000  # one hour
SIGNIFICANT_DIGITS = 3

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


def new_histogram() -> HdrHistogram:
    return HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)


def clamp_us(seconds: float) -> int:
    """A duration in seconds as whole microseconds inside the histogram's range."""
    us = int(seconds * 1_000_000.0)
    if us < LOWEST_US:
        return LOWEST_US
    if us > HIGHEST_US:
        return HIGHEST_US
    return us


def encode(h: HdrHistogram) -> bytes:
    """The compressed form, or empty bytes for an empty histogram (the common case for quiet names)."""
    if h.get_total_count() == 0:
        return b""
    data: bytes = h.encode()
    return data


def decode(data: bytes) -> HdrHistogram | None:
    if not data:
        return None
    h: HdrHistogram = HdrHistogram.decode(data)
    return h


def add_encoded(into: HdrHistogram, data: bytes) -> HdrHistogram | None:
    """Decode ``data`` and add it into ``into``; return the decoded histogram (None if empty)."""
    h = decode(data)
    if h is not None:
        into.add(h)
    return h


def summary_ms(h: HdrHistogram) -> dict[str, float | None]:
    """min, mean, percentiles and max in milliseconds; all None for an empty histogram."""
    keys = ["min", "mean", *(k for k, _ in PERCENTILES), "max"]
    if h.get_total_count() == 0:
        return dict.fromkeys(keys)
    out: dict[str, float | None] = {"min": h.get_min_value() / 1000.0, "mean": h.get_mean_value() / 1000.0}
    values = h.get_percentile_to_value_dict([p for _, p in PERCENTILES])
    for key, p in PERCENTILES:
        out[key] = values[p] / 1000.0
    out["max"] = h.get_max_value() / 1000.0
    return out
