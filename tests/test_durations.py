from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loadgen.durations import format_duration, parse_duration
from tests.strategies import durations


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("250ms", 0.25),
        ("1.5s", 1.5),
        ("30s", 30.0),
        ("1m", 60.0),
        ("1m30s", 90.0),
        ("1h30m", 5400.0),
        ("8h", 28800.0),
        ("2m15s500ms", 135.5),
        ("1h0m1s", 3601.0),
        (".5s", 0.5),
        ("0s", 0.0),
        ("0", 0.0),
        ("30", 30.0),
        ("2.5", 2.5),
        ("  10s ", 10.0),
        (0, 0.0),
        (10, 10.0),
        (2.5, 2.5),
    ],
)
def test_parse_accepts(text: str | int | float, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "empty duration"),
        ("   ", "empty duration"),
        ("-1s", "negative"),
        ("-5", "negative"),
        (-1, "negative"),
        (-0.5, "negative"),
        ("abc", "invalid duration 'abc'"),
        ("5x", "invalid duration '5x'"),
        ("ms", "invalid duration 'ms'"),
        ("10S", "invalid duration '10S'"),
        ("1 s", "invalid duration '1 s'"),
        ("1h-30m", "invalid duration"),
        ("1e3s", "invalid duration"),
        ("1m1h", "largest to smallest"),
        ("1s1s", "largest to smallest"),
        (math.nan, "not a finite number"),
        (math.inf, "not a finite number"),
        (True, "got a boolean"),
    ],
)
def test_parse_refuses(value: str | int | float, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        parse_duration(value)
    assert "\n" not in str(info.value)


def test_parse_refuses_other_types() -> None:
    with pytest.raises(ValueError, match="expected a duration"):
        parse_duration(None)  # type: ignore[arg-type]


def test_error_message_gives_examples() -> None:
    with pytest.raises(ValueError, match=r"e\.g\. '250ms', '1\.5s', '1m30s', '8h'"):
        parse_duration("soon")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.00025, "0.25ms"),
        (0.25, "250ms"),
        (0.9999996, "1s"),
        (1.5, "1.5s"),
        (30, "30s"),
        (59.9996, "1m"),
        (90, "1m30s"),
        (90.5, "1m30.5s"),
        (3600, "1h"),
        (5400, "1h30m"),
        (28800, "8h"),
        (29100, "8h5m"),
        (3601, "1h1s"),
    ],
)
def test_format(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize("seconds", [-1.0, math.nan, math.inf])
def test_format_refuses(seconds: float) -> None:
    with pytest.raises(ValueError):
        format_duration(seconds)


@given(durations(0.0, 10_000_000.0))
def test_format_then_parse_round_trips(seconds: float) -> None:
    resolution = 1e-6 if seconds < 0.9999995 else 1e-3
    assert abs(parse_duration(format_duration(seconds)) - seconds) <= resolution / 2 + seconds * 1e-12


@given(durations(0.0, 10_000_000.0))
def test_format_is_a_fixed_point(seconds: float) -> None:
    text = format_duration(seconds)
    assert format_duration(parse_duration(text)) == text


@given(st.integers(0, 99), st.integers(0, 59), st.integers(0, 59), st.integers(0, 999))
def test_parse_combined_units(h: int, m: int, s: int, ms: int) -> None:
    text = f"{h}h{m}m{s}s{ms}ms"
    assert parse_duration(text) == pytest.approx(h * 3600 + m * 60 + s + ms / 1000)
