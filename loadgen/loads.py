"""Loads in code: the named shapes of :mod:`loadgen.shapes` as functions that return a checked :class:`Load`.

    spike(base=50, peak=400, before="10s", spike="30s", after="1m", arrival="constant")

is the load of a TOML profile's ``[load.shape]`` table with ``kind = "spike"`` and the same parameters, and
equals it. Each function checks its values with the rules of the TOML loader and raises
:class:`~loadgen.errors.ProfileError` naming the field as TOML does, with the function in front::

    spike(): load.shape.peak: must be >= base (400), got 300

Rates are requests/second; durations are :data:`~loadgen.profile.Duration` values (``"30s"``, ``"1m30s"``
or seconds). Every function also takes the settings of a ``[load]`` table, keyword-only (:class:`Settings`):
``arrival`` (``"poisson"`` or ``"constant"``), ``timeout`` (per request), ``max_in_flight`` and
``max_connections`` (per agent), ``http_version`` and ``max_streams_per_connection``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, TypedDict, Unpack

from loadgen.profile import Duration, Load, Stage
from loadgen.profile_file import parse_load

__all__ = ["Settings", "ramp", "soak", "spike", "stages", "step"]


class Settings(TypedDict, total=False):
    """The settings of a ``[load]`` table besides its rates; each defaults as in TOML."""

    arrival: Literal["poisson", "constant"]  # default "poisson"
    timeout: Duration  # per request, default "10s"
    max_in_flight: int  # per agent, default 10000
    max_connections: int | None  # per agent, 1..max_in_flight; default None: no cap
    http_version: Literal["1.1", "2", "auto"]  # default "1.1"
    max_streams_per_connection: int | None  # HTTP/2; default None: what the server allows


_SETTINGS = frozenset(Settings.__annotations__)


def ramp(
    *, to: float, over: Duration, from_: float = 0, hold: Duration = 0, **settings: Unpack[Settings]
) -> Load:
    """Go linearly from ``from_`` to ``to`` requests/s over ``over``, then stay at ``to`` for ``hold``.

    ``from_`` is the TOML shape's ``from`` (and errors call it that).
    """
    return _shape("ramp", {"from": from_, "to": to, "over": over, "hold": hold}, settings)


def soak(*, rate: float, duration: Duration, ramp: Duration = 0, **settings: Unpack[Settings]) -> Load:
    """Hold ``rate`` for ``duration`` (> 0) after a ramp-up from 0 lasting ``ramp`` (0: start at ``rate``)."""
    return _shape("soak", {"rate": rate, "duration": duration, "ramp": ramp}, settings)


def spike(
    *,
    base: float,
    peak: float,
    spike: Duration,
    before: Duration = 0,
    after: Duration = 0,
    ramp: Duration = 0,
    **settings: Unpack[Settings],
) -> Load:
    """``base`` for ``before``, then ``peak`` (>= ``base``) for ``spike`` (> 0), then ``base`` for ``after``;
    ``ramp`` is the time to go up to the peak and again back down (0: a jump each way)."""
    params = {"base": base, "peak": peak, "spike": spike, "before": before, "after": after, "ramp": ramp}
    return _shape("spike", params, settings)


def step(
    *,
    start: float,
    step: float,
    steps: int,
    every: Duration,
    ramp: Duration = 0,
    **settings: Unpack[Settings],
) -> Load:
    """A staircase of ``steps`` levels (1..10000), ``start``, ``start + step``, ..., each lasting ``every``
    (> 0), with ``ramp`` to move from one level to the next (0: a jump). A negative ``step`` steps down."""
    params = {"start": start, "step": step, "steps": steps, "every": every, "ramp": ramp}
    return _shape("step", params, settings)


def stages(
    *pairs: tuple[Duration, float] | Stage, start_rate: float = 0, **settings: Unpack[Settings]
) -> Load:
    """Piecewise linear stages, as a TOML ``stages`` array: each ``(duration, rate)`` ramps from the rate
    before it (``start_rate`` at first) to ``rate`` over ``duration``; a 0 duration is an instant jump.

    ``stages(("30s", 100), ("5m", 100), (0, 400), ("1m", 400))``
    """
    table: dict[str, object] = {"start_rate": start_rate, **_settings("stages", settings)}
    table["stages"] = [_stage_table(p) for p in pairs]
    return parse_load(table, "stages()")


def _shape(kind: str, params: Mapping[str, object], settings: Settings) -> Load:
    table: dict[str, object] = {**_settings(kind, settings), "shape": {"kind": kind, **params}}
    return parse_load(table, f"{kind}()")


def _settings(function: str, settings: Settings) -> dict[str, object]:
    """The settings as ``[load]`` keys; an unknown keyword is refused as Python refuses one."""
    for key in settings:
        if key not in _SETTINGS:
            raise TypeError(f"{function}() got an unexpected keyword argument {key!r}")
    optional = ("max_connections", "max_streams_per_connection")
    return {k: v for k, v in settings.items() if not (k in optional and v is None)}


def _stage_table(pair: object) -> object:
    if isinstance(pair, Stage):
        return {"duration": pair.duration, "rate": pair.rate}
    if isinstance(pair, tuple | list) and len(pair) == 2:
        return {"duration": pair[0], "rate": pair[1]}
    return pair  # refused by the validator: "expected a table like ..."
