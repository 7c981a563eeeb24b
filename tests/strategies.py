"""Hypothesis strategies for profiles and their parts, shared by every test module.

Everything drawn here is valid as :func:`loadgen.profile_file.parse_profile` sees it, and
:func:`profile_doc` turns a drawn :class:`Profile` back into the TOML document that describes it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from hypothesis import assume
from hypothesis import strategies as st

from coordinator.live_feed import Point
from loadgen.curve import RateCurve
from loadgen.profile import ARRIVAL_KINDS, HTTP_VERSIONS, LoadSpec, Profile, RequestSpec, Stage

MAX_RATE = 100_000.0
MAX_SECONDS = 48 * 3600.0


def rates(max_value: float = MAX_RATE) -> st.SearchStrategy[float]:
    """Requests/second: whole numbers mostly, fractions sometimes, 0 now and then."""
    return st.one_of(
        st.integers(0, int(max_value)).map(float),
        st.floats(0, max_value, allow_nan=False, allow_infinity=False, allow_subnormal=False),
    )


def durations(min_value: float = 0.0, max_value: float = MAX_SECONDS) -> st.SearchStrategy[float]:
    """Seconds, from sub-millisecond to ``max_value``."""
    return st.one_of(
        st.integers(int(min_value + 0.999999), int(max_value)).map(float),
        st.floats(min_value, max_value, allow_nan=False, allow_infinity=False, allow_subnormal=False),
    )


def stages(max_seconds: float = 3600.0) -> st.SearchStrategy[Stage]:
    """One stage; a quarter of them are zero-length jumps."""
    duration = st.one_of(
        st.just(0.0), durations(0.0, max_seconds), durations(0.0, max_seconds), durations(0.0, 60)
    )
    return st.builds(Stage, duration=duration, rate=rates())


def stage_lists(min_size: int = 1, max_size: int = 8) -> st.SearchStrategy[tuple[Stage, ...]]:
    """Stages whose total duration is above 0."""
    return (
        st.lists(stages(), min_size=min_size, max_size=max_size)
        .filter(lambda ss: sum(s.duration for s in ss) > 0)
        .map(tuple)
    )


def load_specs() -> st.SearchStrategy[LoadSpec]:
    """A load that sends something: the rate curve's integral is above 0."""
    return (
        st.integers(1, 1_000_000)
        .flatmap(
            lambda max_in_flight: st.builds(
                LoadSpec,
                arrival=st.sampled_from(ARRIVAL_KINDS),
                start_rate=rates(),
                timeout=durations(0.001, 600.0),
                max_in_flight=st.just(max_in_flight),
                stages=stage_lists(),
                max_connections=st.none() | st.integers(1, max_in_flight),
                http_version=st.sampled_from(HTTP_VERSIONS),
            )
        )
        .flatmap(
            lambda load: st.builds(
                dataclasses.replace,
                st.just(load),
                max_streams_per_connection=st.none()
                if load.http_version == "1.1"
                else st.none() | st.integers(1, 1000),
            )
        )
        .filter(lambda load: RateCurve(load.start_rate, load.stages).total > 0)
    )


_PATH_CHARS = st.characters(codec="ascii", categories=("L", "N"), include_characters="/-._~?=&%")
_HEADER_NAMES = st.text(
    st.characters(codec="ascii", categories=("L", "N"), include_characters="-_"), min_size=1
)
_TEXT = st.text(st.characters(codec="utf-8"), max_size=40)
# A header value HTTP/1.1 can carry: Latin-1 without controls, no space or tab at either end.
_HEADER_VALUES = st.text(st.characters(codec="latin-1", exclude_categories=("Cc",)), max_size=40).map(
    lambda v: v.strip(" \t")
)
_ONE_LINE = st.text(st.characters(codec="utf-8", categories=("L", "N", "P", "S")), min_size=1, max_size=30)


_FRAMING = ("content-length", "transfer-encoding")  # the engines set these from the body


def request_specs(name: st.SearchStrategy[str] = _ONE_LINE) -> st.SearchStrategy[RequestSpec]:
    """One request as the loader builds it (an explicit name, printable and one line)."""
    return st.builds(
        RequestSpec,
        name=name,
        method=st.sampled_from(("GET", "POST", "PUT", "DELETE", "HEAD", "PATCH", "OPTIONS")),
        path=st.text(_PATH_CHARS, max_size=30).map(lambda p: "/" + p),
        headers=st.lists(
            st.tuples(_HEADER_NAMES.filter(lambda n: n.lower() not in _FRAMING), _HEADER_VALUES),
            max_size=3,
            unique_by=lambda h: h[0].lower(),
        ).map(tuple),
        body=_TEXT.map(lambda b: b.encode("utf-8")),
        weight=st.floats(0.001, 1000, allow_nan=False),
    )


def profiles() -> st.SearchStrategy[Profile]:
    """A valid profile with 1 to 5 uniquely named requests."""
    names = st.lists(_ONE_LINE.filter(str.strip), min_size=1, max_size=5, unique=True)
    requests = names.flatmap(lambda ns: st.tuples(*(request_specs(st.just(n)) for n in ns)))
    return st.builds(
        Profile,
        name=_ONE_LINE.filter(str.strip),
        target=st.sampled_from(("http://127.0.0.1:8080", "https://example.com", "http://[::1]:9000/api")),
        load=load_specs(),
        requests=requests,
        thresholds=st.lists(st.sampled_from(("p95 < 500ms", "error_rate < 1%", "p99.9 < 2s"))).map(tuple),
    )


def profile_doc(profile: Profile) -> dict[str, Any]:
    """The TOML document (as tomllib would return it) that describes ``profile``."""
    load = profile.load
    return {
        "name": profile.name,
        "target": profile.target,
        "thresholds": list(profile.thresholds),
        "load": {
            "arrival": load.arrival,
            "start_rate": load.start_rate,
            "timeout": load.timeout,
            "max_in_flight": load.max_in_flight,
            **({} if load.max_connections is None else {"max_connections": load.max_connections}),
            **({} if load.http_version == "1.1" else {"http_version": load.http_version}),
            **(
                {}
                if load.max_streams_per_connection is None
                else {"max_streams_per_connection": load.max_streams_per_connection}
            ),
            "stages": [{"duration": s.duration, "rate": s.rate} for s in load.stages],
        },
        "requests": [
            {
                "name": r.name,
                "method": r.method,
                "path": r.path,
                "weight": r.weight,
                "headers": dict(r.headers),
                "body": r.body.decode("utf-8"),
            }
            for r in profile.requests
        ],
    }


@st.composite
def shape_params(draw: st.DrawFn, kind: str) -> tuple[dict[str, object], float]:
    """Valid parameters for shape ``kind`` and the total duration they describe (seconds)."""
    seconds = durations(0.0, 3600.0)
    positive = durations(0.001, 3600.0)

    def dur(strategy: st.SearchStrategy[float]) -> tuple[object, float]:
        """A duration as a number or, when its repr has no exponent, as text like "12.5s"."""
        value = draw(strategy)
        forms: list[object] = [value] if "e" in repr(value) else [value, f"{value!r}s"]
        return draw(st.sampled_from(forms)), value

    if kind == "ramp":
        (over, over_s), (hold, hold_s) = dur(positive), dur(seconds)
        return {"from": draw(rates()), "to": draw(rates()), "over": over, "hold": hold}, over_s + hold_s
    if kind == "soak":
        (ramp, ramp_s), (length, length_s) = dur(seconds), dur(positive)
        return {"rate": draw(rates()), "ramp": ramp, "duration": length}, ramp_s + length_s
    if kind == "spike":
        base = draw(rates(MAX_RATE / 2))
        peak = base + draw(rates(MAX_RATE / 2))
        (before, b), (ramp, r), (spike, s), (after, a) = (
            dur(seconds),
            dur(seconds),
            dur(positive),
            dur(seconds),
        )
        params = {"base": base, "peak": peak, "before": before, "ramp": ramp, "spike": spike, "after": after}
        return params, b + 2 * r + s + a
    assert kind == "step"
    start = draw(rates(1000))
    steps = draw(st.integers(1, 20))
    step = draw(st.floats(-start / max(steps - 1, 1), 1000, allow_nan=False, allow_subnormal=False))
    assume(start + (steps - 1) * step >= 0)  # rounding at the lowest step
    (every, every_s), (ramp, ramp_s) = dur(positive), dur(seconds)
    params = {"start": start, "step": step, "steps": steps, "every": every, "ramp": ramp}
    return params, steps * every_s + (steps - 1) * ramp_s


# --- the agent's outbox (agents.outbox) ----------------------------------------------------------------------

OutboxOp = tuple[str, int, bool]
"""("add", gap to the next index, _), ("ack", index, finished) or ("finish", _, _)."""


def outbox_ops(max_size: int = 60) -> st.SearchStrategy[list[OutboxOp]]:
    """What an agent's outbox lives through: intervals added with rising indexes (gaps now and then),
    acknowledgements of any index (behind, ahead, or of nothing yet), and the Finished."""
    add = st.tuples(st.just("add"), st.sampled_from([1, 1, 1, 2, 5]), st.just(False))
    ack = st.tuples(st.just("ack"), st.integers(-1, 80), st.booleans())
    finish = st.tuples(st.just("finish"), st.just(0), st.just(False))
    return st.lists(st.one_of(add, add, ack, finish), max_size=max_size)


# --- the live page's curve (coordinator.live_feed) -----------------------------------------------------------


@st.composite
def live_seconds(draw: st.DrawFn, max_size: int = 300) -> list[Point]:
    """Closed seconds as the live page's History gets them: rising indexes, now and then a gap (a resumed
    run), figures that may be missing (no response, no target yet)."""
    gaps = draw(st.lists(st.sampled_from([1, 1, 1, 1, 2, 7]), max_size=max_size))
    ms = st.one_of(st.none(), st.floats(0.001, 60_000, allow_nan=False))
    out, t = [], -1
    for gap in gaps:
        t += gap
        p50, p90, p99 = sorted(draw(st.tuples(ms, ms, ms)), key=lambda v: (v is not None, v or 0.0))
        errors = draw(
            st.dictionaries(st.sampled_from(["timeout", "status 503", "connect"]), st.integers(1, 50))
        )
        out.append(
            Point(
                t,
                1,
                draw(st.one_of(st.none(), st.floats(0, 10_000, allow_nan=False))),
                float(draw(st.integers(0, 10_000))),
                (p50, p90, p99),
                errors,
                draw(st.booleans()),
            )
        )
    return out
