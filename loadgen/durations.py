"""Durations as people write them: ``250ms``, ``1.5s``, ``1m30s``, ``8h``, or a bare number of seconds.

Units are ``h``, ``m``, ``s`` and ``ms``; a duration may combine them, largest first and each at most once
(``1h30m``, ``2m15s500ms``). Every parsed duration is a non-negative number of seconds (float).
:func:`format_duration` writes the compact form back, so ``parse_duration(format_duration(x))`` is ``x``
to the millisecond (to the microsecond below one second).
"""

from __future__ import annotations

import math
import re

_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
_ORDER = ("h", "m", "s", "ms")
_NUMBER = r"(?:\d+(?:\.\d+)?|\.\d+)"
_BARE = re.compile(_NUMBER)
_PART = re.compile(rf"({_NUMBER})(ms|h|m|s)")
_EXAMPLES = "e.g. '250ms', '1.5s', '1m30s', '8h' or a number of seconds"


def parse_duration(value: str | int | float) -> float:
    """Seconds in ``value``. Raises ValueError naming the problem for negatives, empty text and garbage."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        got = "a boolean" if isinstance(value, bool) else type(value).__name__
        raise ValueError(f"expected a duration ({_EXAMPLES}), got {got}")
    if not isinstance(value, str):
        try:
            return _seconds(float(value), value)
        except OverflowError:
            raise ValueError(f"duration {value!r} is too large") from None
    text = value.strip()
    if not text:
        raise ValueError(f"empty duration; expected {_EXAMPLES}")
    if text.startswith("-"):
        raise ValueError(f"duration {value!r} is negative")
    if _BARE.fullmatch(text):
        return _seconds(float(text), value)
    total = 0.0
    last = -1
    pos = 0
    for match in _PART.finditer(text):
        if match.start() != pos:
            break
        rank = _ORDER.index(match.group(2))
        if rank <= last:
            raise ValueError(f"invalid duration {value!r}: units must go from largest to smallest, each once")
        last = rank
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text):
        raise ValueError(f"invalid duration {value!r}; expected {_EXAMPLES}")
    return _seconds(total, value)


def _seconds(seconds: float, original: object) -> float:
    if math.isnan(seconds) or math.isinf(seconds):
        raise ValueError(f"duration {original!r} is not a finite number")
    if seconds < 0:
        raise ValueError(f"duration {original!r} is negative")
    return seconds


def format_duration(seconds: float) -> str:
    """The compact form of ``seconds``: ``8h``, ``1m30s``, ``1.5s``, ``250ms``, ``0s``.

    Resolution is one millisecond from one second up, one microsecond below. Raises ValueError for negative
    or non-finite input.
    """
    _seconds(seconds, seconds)
    micros = round(seconds * 1_000_000)
    if micros < 1_000_000:
        return "0s" if micros == 0 else f"{_trim(micros / 1000, 3)}ms"
    millis = round(seconds * 1000)
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    parts = []
    if hours:
        parts.append(f"{hours}h")
    if minutes:
        parts.append(f"{minutes}m")
    if rest:
        parts.append(f"{_trim(rest / 1000, 3)}s")
    return "".join(parts)


def _trim(value: float, decimals: int) -> str:
    """``value`` with at most ``decimals`` decimals and no trailing zeros (``1.5``, ``30``)."""
    text = f"{value:.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text
