"""Profiles built in Python: the same checks and messages as TOML, equal values, a TOML round trip, actions."""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loadgen import loads
from loadgen.errors import ProfileError
from loadgen.profile import Load, LoadSpec, Profile, Request, RequestSpec, Stage
from loadgen.profile_file import load_profile, parse_profile
from tests.strategies import profiles, shape_params

TARGET = "http://127.0.0.1:8080"


def toml(
    top: str = "", load: str = 'stages = [{ duration = "10s", rate = 5 }]', requests: str = 'path = "/"'
) -> str:
    """A TOML profile named checkout; ``requests`` holds ``[[requests]]`` bodies split by ``---``."""
    tables = "".join(f"\n[[requests]]\n{body.strip()}\n" for body in requests.split("---"))
    return f'name = "checkout"\ntarget = "{TARGET}"\n{top}\n[load]\n{load}\n{tables}'


def code(**changes: Any) -> Profile:
    """The profile of ``toml()`` built in Python, with ``changes``."""
    fields: dict[str, Any] = {
        "name": "checkout",
        "target": TARGET,
        "load": Load(stages=[("10s", 5)]),
        "requests": [Request("/")],
    }
    return Profile(**(fields | changes))


def toml_error(text: str, tmp_path: Path) -> ProfileError:
    path = tmp_path / "checkout.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ProfileError) as info:
        load_profile(path)
    return info.value


def code_error(build: Callable[[], object]) -> ProfileError:
    with pytest.raises(ProfileError) as info:
        build()
    return info.value


# The same mistake, written in TOML and in code: (id, TOML text, code).
MISTAKES: list[tuple[str, str, Callable[[], object]]] = [
    ("path without slash", toml(requests='path = "api"'), lambda: code(requests=[Request("api")])),
    ("path with space", toml(requests='path = "/a b"'), lambda: code(requests=[Request("/a b")])),
    (
        "lowercase method",
        toml(requests='path = "/"\nmethod = "get"'),
        lambda: code(requests=[Request(method="get")]),
    ),
    (
        "header outside Latin-1",
        toml(requests='path = "/"\nheaders = { x-sign = "€" }'),
        lambda: code(requests=[Request(headers={"x-sign": "€"})]),
    ),
    (
        "header with a line break",
        toml(requests='path = "/"\nheaders = { x = "a\\r\\nEvil: 1" }'),
        lambda: code(requests=[Request(headers=[("x", "a\r\nEvil: 1")])]),
    ),
    (
        "bad header name",
        toml(requests='path = "/"\nheaders = { "X:Y" = "v" }'),
        lambda: code(requests=[Request(headers={"X:Y": "v"})]),
    ),
    (
        "header twice",
        toml(requests='path = "/"\nheaders = { X-A = "1", x-a = "2" }'),
        lambda: code(requests=[Request(headers={"X-A": "1", "x-a": "2"})]),
    ),
    (
        "content-length off",
        toml(requests='path = "/"\nmethod = "POST"\nbody = "abc"\nheaders = { content-length = "5" }'),
        lambda: code(requests=[Request(method="POST", body="abc", headers={"content-length": "5"})]),
    ),
    (
        "transfer-encoding",
        toml(requests='path = "/"\nheaders = { transfer-encoding = "chunked" }'),
        lambda: code(requests=[Request(headers={"transfer-encoding": "chunked"})]),
    ),
    ("weight 0", toml(requests='path = "/"\nweight = 0'), lambda: code(requests=[Request(weight=0)])),
    ("negative cost", toml(requests='path = "/"\ncost = -1'), lambda: code(requests=[Request(cost=-1)])),
    (
        "empty request name",
        toml(requests='path = "/"\nname = " "'),
        lambda: code(requests=[Request(name=" ")]),
    ),
    (
        "duplicate names",
        toml(requests='path = "/"\nname = "a"\n---\npath = "/b"\nname = "a"'),
        lambda: code(requests=[Request(name="a"), Request("/b", name="a")]),
    ),
    (
        "duplicate default names",
        toml(requests='path = "/"\n---\npath = "/"'),
        lambda: code(requests=[Request("/"), Request()]),
    ),
    ("no requests", toml("requests = []").split("\n[[requests]]")[0], lambda: code(requests=[])),
    ("threshold grammar", toml('thresholds = ["p95 <"]'), lambda: code(thresholds=["p95 <"])),
    (
        "threshold scope",
        toml('thresholds = ["nope: p99 < 1s"]'),
        lambda: code(thresholds=["nope: p99 < 1s"]),
    ),
    ("thresholds not a list", toml('thresholds = "p95 < 1s"'), lambda: code(thresholds="p95 < 1s")),
    ("target scheme", toml().replace(TARGET, "ftp://x"), lambda: code(target="ftp://x")),
    ("target query", toml().replace(TARGET, "http://x/?a=1"), lambda: code(target="http://x/?a=1")),
    ("target credentials", toml().replace(TARGET, "http://u:p@x"), lambda: code(target="http://u:p@x")),
    ("empty name", toml().replace('name = "checkout"', 'name = ""'), lambda: code(name="")),
    ("abort_grace", toml('abort_grace = "soon"'), lambda: code(abort_grace="soon")),
    ("abort_on_fail", toml('abort_on_fail = "yes"'), lambda: code(abort_on_fail="yes")),
    ("budget", toml("budget = -1"), lambda: code(budget=-1)),
    ("empty stages", toml(load="stages = []"), lambda: code(load=Load(stages=[]))),
    (
        "negative rate",
        toml(load='stages = [{ duration = "10s", rate = 5 }, { duration = "1s", rate = -1 }]'),
        lambda: code(load=Load(stages=[("10s", 5), ("1s", -1)])),
    ),
    (
        "bad duration",
        toml(load='stages = [{ duration = "ten", rate = 5 }]'),
        lambda: code(load=Load(stages=[("ten", 5)])),
    ),
    (
        "no time at all",
        toml(load='stages = [{ duration = "0s", rate = 5 }]'),
        lambda: code(load=Load(stages=[Stage(0, 5)])),
    ),
    (
        "rate 0 throughout",
        toml(load='stages = [{ duration = "10s", rate = 0 }]'),
        lambda: code(load=Load(stages=[("10s", 0)])),
    ),
    (
        "arrival",
        toml(load='arrival = "poison"\nstages = [{ duration = "10s", rate = 5 }]'),
        lambda: code(load=Load(arrival="poison", stages=[("10s", 5)])),
    ),
    (
        "timeout 0",
        toml(load='timeout = "0s"\nstages = [{ duration = "10s", rate = 5 }]'),
        lambda: code(load=Load(timeout="0s", stages=[("10s", 5)])),
    ),
    (
        "timeout text",
        toml(load='timeout = "long"\nstages = [{ duration = "10s", rate = 5 }]'),
        lambda: code(load=Load(timeout="long", stages=[("10s", 5)])),
    ),
    (
        "max_in_flight 0",
        toml(load='max_in_flight = 0\nstages = [{ duration = "10s", rate = 5 }]'),
        lambda: code(load=Load(max_in_flight=0, stages=[("10s", 5)])),
    ),
    (
        "max_connections above max_in_flight",
        toml(load='max_in_flight = 5\nmax_connections = 6\nstages = [{ duration = "10s", rate = 5 }]'),
        lambda: code(load=Load(max_in_flight=5, max_connections=6, stages=[("10s", 5)])),
    ),
    # The shape functions check as they build: the same field and reason, "spike()" for the file.
    (
        "spike peak below base",
        toml(load="shape = { kind = 'spike', base = 100, peak = 50, spike = '10s' }"),
        lambda: loads.spike(base=100, peak=50, spike="10s"),
    ),
    (
        "spike without time",
        toml(load="shape = { kind = 'spike', base = 1, peak = 5, spike = 0 }"),
        lambda: loads.spike(base=1, peak=5, spike=0),
    ),
    (
        "step below 0",
        toml(load="shape = { kind = 'step', start = 10, step = -5, steps = 4, every = '1m' }"),
        lambda: loads.step(start=10, step=-5, steps=4, every="1m"),
    ),
    (
        "steps not whole",
        toml(load="shape = { kind = 'step', start = 10, step = 5, steps = 1.5, every = '1m' }"),
        lambda: loads.step(start=10, step=5, steps=1.5, every="1m"),  # type: ignore[arg-type]
    ),
    (
        "soak of no time",
        toml(load="shape = { kind = 'soak', rate = 10, duration = 0 }"),
        lambda: loads.soak(rate=10, duration=0),
    ),
    (
        "ramp of no time",
        toml(load="shape = { kind = 'ramp', to = 10, over = 0 }"),
        lambda: loads.ramp(to=10, over=0),
    ),
    (
        "ramp from a negative rate",
        toml(load="shape = { kind = 'ramp', from = -1, to = 10, over = '1m' }"),
        lambda: loads.ramp(from_=-1, to=10, over="1m"),
    ),
    (
        "shape rate 0",
        toml(load="shape = { kind = 'ramp', to = 0, over = '1m' }"),
        lambda: loads.ramp(to=0, over="1m"),
    ),
    (
        "shape duration text",
        toml(load="shape = { kind = 'ramp', to = 5, over = 'fast' }"),
        lambda: loads.ramp(to=5, over="fast"),
    ),
    (
        "shape arrival",
        toml(load="arrival = 'burst'\nshape = { kind = 'soak', rate = 10, duration = '1m' }"),
        lambda: loads.soak(rate=10, duration="1m", arrival="burst"),  # type: ignore[typeddict-item]
    ),
    (
        "shape max_connections",
        toml(
            load="max_in_flight = 2\nmax_connections = 3\nshape = { kind = 'soak', rate = 1, duration = 1 }"
        ),
        lambda: loads.soak(rate=1, duration=1, max_in_flight=2, max_connections=3),
    ),
    (
        "stages rate",
        toml(load="stages = [{ duration = 1, rate = 5 }, { duration = 2, rate = -3 }]"),
        lambda: loads.stages((1, 5), (2, -3)),
    ),
    ("stages empty", toml(load="stages = []"), loads.stages),
    (
        "stages start_rate",
        toml(load="start_rate = -2\nstages = [{ duration = 1, rate = 5 }]"),
        lambda: loads.stages((1, 5), start_rate=-2),
    ),
]


@pytest.mark.parametrize(("toml_text", "build"), [m[1:] for m in MISTAKES], ids=[m[0] for m in MISTAKES])
def test_a_mistake_in_code_is_refused_as_in_toml(
    toml_text: str, build: Callable[[], object], tmp_path: Path
) -> None:
    in_toml = toml_error(toml_text, tmp_path)
    in_code = code_error(build)
    assert (in_code.field, in_code.reason) == (in_toml.field, in_toml.reason)
    assert in_code.field  # every mistake here is a field's
    assert in_code.line is None


def test_the_error_says_the_profile_was_built_in_code() -> None:
    err = code_error(lambda: code(requests=[Request("api")]))
    assert str(err) == "profile 'checkout' (built in code): requests[0].path: must start with '/', got 'api'"


def test_a_shape_error_names_the_function() -> None:
    err = code_error(lambda: loads.spike(base=100, peak=50, spike="10s"))
    assert str(err) == "spike(): load.shape.peak: must be >= base (100), got 50"
    assert code_error(loads.stages).file == "stages()"


def test_code_only_mistakes_are_named_too() -> None:
    err = code_error(lambda: code(requests=[Request(headers=[("X-A", "1"), ("X-A", "2")])]))
    assert (err.field, err.reason) == (
        "requests[0].headers.X-A",
        "header given twice (also as 'X-A'); names ignore case",
    )
    err = code_error(lambda: code(requests=[Request(body="\ud800")]))
    assert (err.field, err.reason) == ("requests[0].body", "is not valid Unicode text")
    err = code_error(lambda: code(requests="/"))
    assert err.field == "requests"
    with pytest.raises(TypeError, match=r"spike\(\) got an unexpected keyword argument 'arival'"):
        loads.spike(base=1, peak=2, spike=1, arival="constant")  # type: ignore[call-arg]


# --- equal values -------------------------------------------------------------------------------------------


def test_code_and_toml_give_equal_profiles(tmp_path: Path) -> None:
    path = tmp_path / "checkout.toml"
    path.write_text(
        toml(
            'thresholds = ["p95 < 500ms", "search: p99 < 1s"]\nabort_on_fail = true\nabort_grace = "30s"\n'
            "budget = 12.5",
            load='arrival = "constant"\ntimeout = "2s"\nmax_in_flight = 50\nmax_connections = 20\n'
            "shape = { kind = 'spike', base = 50, peak = 300, before = '5s', spike = '6s', after = '10s' }",
            requests='path = "/"\nname = "home"\nweight = 3\n---\npath = "/search?q=x"\nname = "search"\n'
            'method = "POST"\nbody = "{\\"q\\": \\"é\\"}"\nheaders = { content-type = "application/json" }\n'
            "cost = 0.002",
        ),
        encoding="utf-8",
    )
    built = Profile(
        name="checkout",
        target=TARGET + "/",
        load=loads.spike(
            base=50,
            peak=300,
            before="5s",
            spike="6s",
            after=10,
            arrival="constant",
            timeout="2s",
            max_in_flight=50,
            max_connections=20,
        ),
        requests=(
            Request("/", name="home", weight=3),
            Request(
                "/search?q=x",
                name="search",
                method="POST",
                body='{"q": "é"}',
                headers=[("content-type", "application/json")],
                cost=0.002,
            ),
        ),
        thresholds=["p95 < 500ms", "search: p99 < 1s"],
        abort_on_fail=True,
        abort_grace="30s",
        budget=12.5,
    )
    loaded = load_profile(path)
    assert built == loaded
    assert built.to_wire() == loaded.to_wire()
    assert built.target == TARGET  # stored without its trailing slash, as TOML's
    assert built.source == "<code>"
    assert loaded.source == str(path)


def test_the_former_names_still_build() -> None:
    assert RequestSpec is Request and LoadSpec is Load
    assert Request("/x").name == "GET /x"
    assert Request(body="é").body == "é".encode()
    assert Request(headers={"a": "b"}) == Request(headers=[("a", "b")])
    assert Load(stages=[("1m", 5)]) == Load(stages=[Stage(60, 5)])


SHAPES = {"ramp": loads.ramp, "soak": loads.soak, "spike": loads.spike, "step": loads.step}


@settings(max_examples=40)
@given(st.sampled_from(sorted(SHAPES)).flatmap(lambda kind: st.tuples(st.just(kind), shape_params(kind))))
def test_a_shape_in_code_equals_the_same_shape_in_toml(
    drawn: tuple[str, tuple[dict[str, object], float]],
) -> None:
    kind, (params, seconds) = drawn
    doc = {"target": TARGET, "load": {"shape": {"kind": kind, **params}}, "requests": [{"path": "/"}]}
    keywords = {("from_" if k == "from" else k): v for k, v in params.items()}
    try:
        from_toml = parse_profile(doc, "p.toml").load
    except ProfileError as exc:  # a shape at rate 0 throughout: refused alike
        err = code_error(lambda: SHAPES[kind](**keywords))
        assert (err.field, err.reason) == (exc.field, exc.reason)
        return
    from_code = SHAPES[kind](**keywords)
    assert from_code == from_toml
    assert from_code.duration == pytest.approx(seconds)


def test_stages_in_code_equal_stages_in_toml() -> None:
    doc = {
        "target": TARGET,
        "load": {"start_rate": 5, "stages": [{"duration": "30s", "rate": 100}, {"duration": 0, "rate": 400}]},
        "requests": [{"path": "/"}],
    }
    assert loads.stages(("30s", 100), Stage(0, 400), start_rate=5) == parse_profile(doc, "p.toml").load


# --- TOML text ----------------------------------------------------------------------------------------------


@settings(max_examples=60)
@given(profiles())
def test_a_profile_built_in_code_reads_back_equal_from_its_toml(profile: Profile) -> None:
    text = profile.to_toml()
    back = parse_profile(tomllib.loads(text), "p.toml")
    assert back == profile
    assert back.to_wire() == profile.to_wire()


@settings(max_examples=60)
@given(profiles())
def test_code_built_from_the_fields_equals_toml_built(profile: Profile) -> None:
    rebuilt = Profile(
        name=profile.name,
        target=profile.target,
        load=Load(
            arrival=profile.load.arrival,
            start_rate=profile.load.start_rate,
            timeout=profile.load.timeout,
            max_in_flight=profile.load.max_in_flight,
            stages=[(s.duration, s.rate) for s in profile.load.stages],
            max_connections=profile.load.max_connections,
            http_version=profile.load.http_version,
            max_streams_per_connection=profile.load.max_streams_per_connection,
        ),
        requests=[
            Request(
                r.path,
                name=r.name,
                method=r.method,
                headers=dict(r.headers),
                body=r.body.decode("utf-8"),
                weight=r.weight,
                cost=r.cost,
            )
            for r in profile.requests
        ],
        thresholds=list(profile.thresholds),
    )
    assert rebuilt == parse_profile(profile.to_doc(), "p.toml")


def test_toml_text_reads_back_from_a_file(tmp_path: Path) -> None:
    profile = code(
        requests=[
            Request('/q?x="1"\\', name='say "hi" \\', body="line\nnext\x00\x7f é", headers={"X-Q": 'a"b'})
        ],
        load=loads.soak(rate=2.5, duration="1m30s", ramp=0.25, timeout=1.5e-05),
    )
    path = tmp_path / "out.toml"
    path.write_text(profile.to_toml(), encoding="utf-8")
    assert load_profile(path) == profile
    assert 'duration = "1m30s"' in profile.to_toml()


def test_a_body_that_is_not_utf8_cannot_be_written_to_toml() -> None:
    profile = code(requests=[Request("/", method="POST", body=b"\xff\x00")])
    assert profile.requests[0].body == b"\xff\x00"  # sent as it is
    with pytest.raises(
        ValueError, match=r"requests\[0\]\.body: 2 bytes that are not UTF-8 text cannot be written"
    ):
        profile.to_toml()


# --- actions ------------------------------------------------------------------------------------------------


def noop() -> None:
    pass


def test_at_returns_a_new_profile_with_the_action() -> None:
    profile = code()
    later = profile.at("5s", noop, name="fail over", on_error="stop")
    assert profile.actions == ()
    assert [(a.at, a.name, a.on_error, a.fn) for a in later.actions] == [(5.0, "fail over", "stop", noop)]
    assert later.at(1, noop).actions[-1].name == "noop"
    assert len(later.at(1, noop).actions) == 2


def test_actions_survive_with_target_and_replace() -> None:
    profile = code().at("5s", noop)
    moved = profile.with_target("http://127.0.0.2:9/")
    assert moved.target == "http://127.0.0.2:9"
    assert moved.actions == profile.actions
    assert dataclasses.replace(profile, name="other").actions == profile.actions


def test_actions_do_not_affect_equality_or_the_wire() -> None:
    profile = code()
    with_action = profile.at("1s", noop)
    assert with_action == profile
    assert hash(with_action) == hash(profile)
    assert with_action.to_wire() == profile.to_wire()
    assert with_action.to_doc() == profile.to_doc()
    assert "noop" not in with_action.to_toml()
    assert Profile.from_wire(with_action.to_wire()).actions == ()


def test_at_refuses_a_moment_outside_the_load() -> None:
    profile = code()  # 10 s
    with pytest.raises(ValueError, match=r"action 'noop' at 10 s is outside the profile, which lasts 10 s"):
        profile.at("10s", noop)
    with pytest.raises(TypeError, match="must be callable"):
        profile.at("1s", "noop")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="invalid duration"):
        profile.at("soon", noop)


def test_with_target_checks_the_target_as_an_override() -> None:
    with pytest.raises(ProfileError) as info:
        code().with_target("ftp://x")
    assert info.value.field == "target"
    assert info.value.reason.endswith("(in the target override)")
