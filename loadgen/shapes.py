"""Named load shapes: a ``[load.shape]`` table that expands to stages, for the common cases.

A profile gives either ``stages`` or a shape. Rates are requests/second (numbers >= 0); durations take the
forms of :mod:`loadgen.durations` (``"30s"``, ``"1m30s"``, a number of seconds). A shape starts from rate 0;
when its first rate is not 0 the expansion begins with a zero-length stage, an instant jump to that rate.

``kind = "ramp"``: go linearly from one rate to another, then optionally hold.
    ``to``    rate to reach (required)
    ``over``  how long the ramp takes (required)
    ``from``  rate at the start (default 0)
    ``hold``  how long to stay at ``to`` afterwards (default 0s)
    Total duration: ``over + hold``.

``kind = "soak"``: a steady rate for a long time, after an optional ramp-up from 0.
    ``rate``      the steady rate (required)
    ``duration``  how long to hold ``rate``, after the ramp-up (required, > 0)
    ``ramp``      ramp-up time from 0 to ``rate`` (default 0s: start at ``rate`` at once)
    Total duration: ``ramp + duration``.

``kind = "spike"``: a base rate, a burst to a peak, and back.
    ``base``    the rate around the spike (required)
    ``peak``    the rate during the spike (required, >= ``base``)
    ``spike``   how long the peak lasts (required, > 0)
    ``before``  time at ``base`` before the spike (default 0s)
    ``after``   time at ``base`` after the spike (default 0s)
    ``ramp``    time to go from ``base`` to ``peak``, and again back down (default 0s: a jump each way)
    Total duration: ``before + ramp + spike + ramp + after``.

``kind = "step"``: a staircase of ``steps`` levels ``start, start + step, start + 2*step, ...``.
    ``start``  rate of the first level (required)
    ``step``   rate added at each level (required; negative steps down, and no level may go below 0)
    ``steps``  number of levels, including the first (required, integer 1..10000)
    ``every``  how long each level lasts (required, > 0)
    ``ramp``   time to move from one level to the next (default 0s: a jump)
    Total duration: ``steps * every + (steps - 1) * ramp``.

:func:`expand_shape` raises :class:`ShapeError` (a ValueError) naming the parameter at fault; the profile
loader reports it as field ``load.shape.<param>``.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

from loadgen.durations import parse_duration
from loadgen.profile import Stage

MAX_STEPS = 10_000


class ShapeError(ValueError):
    """A shape parameter is missing, unknown or invalid. ``param`` names it (``kind`` for the shape kind)."""

    def __init__(self, param: str, reason: str) -> None:
        self.param = param
        self.reason = reason
        super().__init__(f"{param}: {reason}")


def parse_rate(value: object) -> float:
    """A rate in requests/second: a finite number >= 0 (booleans are not numbers). Raises ValueError."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"expected a rate in requests/second (a number >= 0), got {describe(value)}")
    if not math.isfinite(value):
        raise ValueError(f"rate must be a finite number, got {value}")
    if value < 0:
        raise ValueError(f"rate must be >= 0, got {value}")
    return float(value)


def describe(value: object) -> str:
    """A short, one-line description of a TOML value for error messages: ``boolean true``, ``string 'x'``."""
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, str):
        text = value if len(value) <= 40 else value[:37] + "..."
        return f"string {text!r}"
    if isinstance(value, int | float):
        return f"number {value}"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return f"a {type(value).__name__}"


def suggestion(word: str, known: tuple[str, ...]) -> str:
    """`` (did you mean 'x'?)`` for the nearest known word, else the list of known words."""
    close = difflib.get_close_matches(word, known, n=1, cutoff=0.6)
    if close:
        return f" (did you mean {close[0]!r}?)"
    return f" (expected one of: {', '.join(known)})"


_Type = Literal["rate", "delta", "duration", "count"]


@dataclass(frozen=True)
class _Param:
    type: _Type
    default: float | None = None  # None: required


def _read(kind: str, name: str, params: Mapping[str, object]) -> float:
    specs = _SHAPES[kind][0]
    spec = specs[name]
    if name not in params:
        if spec.default is None:
            needed = ", ".join(n for n, s in specs.items() if s.default is None)
            raise ShapeError(name, f"missing; a {kind} shape needs {needed}")
        return spec.default
    value = params[name]
    try:
        if spec.type == "rate":
            return parse_rate(value)
        if spec.type == "duration":
            if isinstance(value, bool) or not isinstance(value, str | int | float):
                raise ValueError(f"expected a duration such as '30s' or '1m30s', got {describe(value)}")
            return parse_duration(value)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ValueError(f"expected a number, got {describe(value)}")
        if spec.type == "count" and (not isinstance(value, int) or not 1 <= value <= MAX_STEPS):
            raise ValueError(f"expected a whole number from 1 to {MAX_STEPS}, got {value}")
        return float(value)
    except ValueError as exc:
        raise ShapeError(name, str(exc)) from None


def _lead_in(rate: float) -> list[Stage]:
    """Shapes start from 0: jump to the first rate at once when it is not 0."""
    return [Stage(0.0, rate)] if rate > 0 else []


def _hold(duration: float, rate: float) -> list[Stage]:
    return [Stage(duration, rate)] if duration > 0 else []


def _ramp(p: Mapping[str, float]) -> list[Stage]:
    if p["over"] + p["hold"] <= 0:
        raise ShapeError("over", "over and hold are both 0s; the shape would take no time")
    return [*_lead_in(p["from"]), Stage(p["over"], p["to"]), *_hold(p["hold"], p["to"])]


def _soak(p: Mapping[str, float]) -> list[Stage]:
    if p["duration"] <= 0:
        raise ShapeError("duration", "must be longer than 0s")
    if p["ramp"] > 0:
        return [Stage(p["ramp"], p["rate"]), Stage(p["duration"], p["rate"])]
    return [*_lead_in(p["rate"]), Stage(p["duration"], p["rate"])]


def _spike(p: Mapping[str, float]) -> list[Stage]:
    base, peak = p["base"], p["peak"]
    if peak < base:
        raise ShapeError("peak", f"must be >= base ({base:g}), got {peak:g}")
    if p["spike"] <= 0:
        raise ShapeError("spike", "must be longer than 0s")
    return [
        *_lead_in(base),
        *_hold(p["before"], base),
        Stage(p["ramp"], peak),
        Stage(p["spike"], peak),
        Stage(p["ramp"], base),
        *_hold(p["after"], base),
    ]


def _step(p: Mapping[str, float]) -> list[Stage]:
    start, step, steps = p["start"], p["step"], int(p["steps"])
    last = start + (steps - 1) * step
    if last < 0:
        raise ShapeError("step", f"the last level would be {last:g} requests/s; rates cannot go below 0")
    if p["every"] <= 0:
        raise ShapeError("every", "must be longer than 0s")
    stages = [*_lead_in(start), Stage(p["every"], start)]
    for i in range(1, steps):
        level = start + i * step
        stages += [Stage(p["ramp"], level), Stage(p["every"], level)]
    return stages


_SHAPES: dict[str, tuple[dict[str, _Param], Callable[[Mapping[str, float]], list[Stage]]]] = {
    "ramp": (
        {
            "from": _Param("rate", 0.0),
            "to": _Param("rate"),
            "over": _Param("duration"),
            "hold": _Param("duration", 0.0),
        },
        _ramp,
    ),
    "soak": (
        {"rate": _Param("rate"), "duration": _Param("duration"), "ramp": _Param("duration", 0.0)},
        _soak,
    ),
    "spike": (
        {
            "base": _Param("rate"),
            "peak": _Param("rate"),
            "spike": _Param("duration"),
            "before": _Param("duration", 0.0),
            "after": _Param("duration", 0.0),
            "ramp": _Param("duration", 0.0),
        },
        _spike,
    ),
    "step": (
        {
            "start": _Param("rate"),
            "step": _Param("delta"),
            "steps": _Param("count"),
            "every": _Param("duration"),
            "ramp": _Param("duration", 0.0),
        },
        _step,
    ),
}

SHAPE_KINDS: tuple[str, ...] = tuple(_SHAPES)


def shape_params(kind: str) -> tuple[str, ...]:
    """The parameter names of shape ``kind`` (without ``kind`` itself). Raises ShapeError if unknown."""
    if kind not in _SHAPES:
        raise ShapeError("kind", f"unknown shape {kind!r}" + suggestion(kind, SHAPE_KINDS))
    return tuple(_SHAPES[kind][0])


def expand_shape(kind: str, params: Mapping[str, object]) -> tuple[Stage, ...]:
    """The stages of shape ``kind`` with ``params`` (the ``[load.shape]`` table without ``kind``).

    Raises :class:`ShapeError` for an unknown kind, an unknown, missing or invalid parameter.
    """
    known = shape_params(kind)
    specs, build = _SHAPES[kind]
    for name in params:
        if name not in specs:
            raise ShapeError(name, f"unknown parameter for a {kind} shape" + suggestion(name, known))
    values = {name: _read(kind, name, params) for name in specs}
    return tuple(build(values))
