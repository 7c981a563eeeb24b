from __future__ import annotations

import copy
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loadgen.errors import ProfileError
from loadgen.profile import Load, Profile, Request, Stage
from loadgen.profile_file import load_profile, parse_profile
from tests.strategies import profile_doc, profiles

PROFILES = sorted((Path(__file__).parent.parent / "profiles").glob("*.toml"))

MINIMAL = """\
target = "http://127.0.0.1:8080"

[load]
stages = [{ duration = "10s", rate = 5 }]

[[requests]]
path = "/"
"""


def doc() -> dict[str, Any]:
    return {
        "name": "t",
        "target": "http://127.0.0.1:8080",
        "load": {"stages": [{"duration": "10s", "rate": 5}, {"duration": "5s", "rate": 10}]},
        "requests": [{"name": "home", "path": "/"}, {"name": "slow", "path": "/delay?ms=5", "weight": 2}],
    }


def refused(d: dict[str, Any], target: str | None = None) -> ProfileError:
    with pytest.raises(ProfileError) as info:
        parse_profile(d, "p.toml", target)
    err = info.value
    assert err.file == "p.toml"
    assert "\n" not in str(err)
    return err


# --- reading files ------------------------------------------------------------------------------------------


def write(tmp_path: Path, text: str, name: str = "checkout.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_minimal_file_and_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL)
    profile = load_profile(path)
    assert profile == Profile(
        name="checkout",
        target="http://127.0.0.1:8080",
        load=Load(stages=[Stage(10.0, 5.0)]),
        requests=[Request("/")],
    )
    assert profile.source == str(path)


@pytest.mark.parametrize("path", PROFILES, ids=lambda p: p.name)
def test_every_example_profile_loads(path: Path) -> None:
    profile = load_profile(path)
    assert profile.target == "http://127.0.0.1:8080"
    assert profile.load.duration > 0
    assert profile.name == path.stem


def test_the_examples_are_all_there() -> None:
    assert {p.stem for p in PROFILES} >= {"smoke", "ramp", "soak-8h", "spike", "step", "demo"}


def test_demo_profile_is_the_documented_showcase() -> None:
    profile = load_profile(Path(__file__).parent.parent / "profiles" / "demo.toml")
    assert profile.load.duration == 30
    assert max(s.rate for s in profile.load.stages) == 800
    assert [(r.path, r.weight) for r in profile.requests] == [
        ("/", 6),
        ("/delay?ms=20", 3),
        ("/flaky?p=0.02", 1),
    ]
    assert profile.thresholds == ("p99 < 500ms", "error_rate < 5%")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ProfileError) as info:
        load_profile(tmp_path / "nope.toml")
    assert info.value.reason == "no such file"
    assert str(info.value) == f"{tmp_path / 'nope.toml'}: no such file"


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="is a directory"):
        load_profile(tmp_path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL)
    path.chmod(0)
    with pytest.raises(ProfileError, match="cannot read: Permission denied"):
        load_profile(path)


def test_other_read_errors(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL)
    with pytest.raises(ProfileError) as info:
        load_profile(path / "inner.toml")
    assert info.value.reason == "cannot read: Not a directory"


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_bytes(b'name = "x"\ntarget = "\xff"\n')
    with pytest.raises(ProfileError) as info:
        load_profile(path)
    assert info.value.reason == "not UTF-8 text"
    assert info.value.line == 2


def test_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "bom.toml"
    path.write_bytes(b"\xef\xbb\xbf" + MINIMAL.encode())
    assert load_profile(path).target == "http://127.0.0.1:8080"


def test_toml_syntax_error_has_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL.replace('path = "/"', 'path = "/'))
    with pytest.raises(ProfileError) as info:
        load_profile(path)
    assert info.value.line == 7
    assert info.value.reason.startswith("invalid TOML: illegal character")
    assert str(info.value).startswith(f"{path}:7: invalid TOML")


def test_toml_error_at_end_of_file(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "weight =")
    with pytest.raises(ProfileError) as info:
        load_profile(path)
    assert info.value.line == 8
    assert info.value.reason == "invalid TOML: invalid value at end of file"


def test_file_errors_carry_the_field(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL.replace("rate = 5", "rate = true"))
    with pytest.raises(ProfileError) as info:
        load_profile(path)
    assert info.value.field == "load.stages[0].rate"
    assert str(info.value) == (
        f"{path}: load.stages[0].rate: expected a rate in requests/second (a number >= 0), got boolean true"
    )


# --- targets ------------------------------------------------------------------------------------------------


def test_target_override_replaces_the_file_target() -> None:
    profile = parse_profile(doc(), "p.toml", target="https://other.example:8443/base/")
    assert profile.target == "https://other.example:8443/base"


def test_target_override_allows_a_file_without_target() -> None:
    d = doc()
    del d["target"]
    assert parse_profile(d, "p.toml", target="http://10.0.0.1").target == "http://10.0.0.1"


def test_missing_target() -> None:
    d = doc()
    del d["target"]
    err = refused(d)
    assert err.field == "target"
    assert err.reason.startswith("missing; set target =")


def test_bad_target_override() -> None:
    err = refused(doc(), target="ftp://x")
    assert err.field == "target"
    assert err.reason == "must start with http:// or https://, got 'ftp://x' (in the target override)"


@pytest.mark.parametrize(
    ("target", "stored"),
    [
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("http://127.0.0.1:8080/", "http://127.0.0.1:8080"),
        ("https://example.com/api/v1/", "https://example.com/api/v1"),
        ("http://[::1]:9000", "http://[::1]:9000"),
        ("HTTP://Example.com", "HTTP://Example.com"),
    ],
)
def test_good_targets(target: str, stored: str) -> None:
    d = doc()
    d["target"] = target
    assert parse_profile(d, "p.toml").target == stored


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("ftp://example.com", "must start with http:// or https://, got 'ftp://example.com'"),
        ("localhost:8080", "must start with http:// or https://"),
        ("127.0.0.1:8080", "must start with http:// or https://"),
        ("http:/x", "must start with http:// or https://"),
        ("http://", "has no host"),
        ("http://:8080", "has no host"),
        ("http://host:99999", "invalid URL 'http://host:99999': Port out of range 0-65535"),
        ("http://host:abc", "invalid URL 'http://host:abc'"),
        ("http://host:0", "invalid port in 'http://host:0'; expected 1 to 65535"),
        ("http://host:", "invalid port"),
        ("http://[::1", "invalid URL"),
        ("http://user:pw@host", "must not contain credentials"),
        ("http://host/?a=1", "must not have a query or fragment"),
        ("http://host/#top", "must not have a query or fragment"),
        ("http://ho st", "without spaces"),
        ("", "must be a URL like 'http://host:8080'"),
        (8080, "expected a string, got number 8080"),
    ],
)
def test_bad_targets(target: object, reason: str) -> None:
    d = doc()
    d["target"] = target
    err = refused(d)
    assert err.field == "target"
    assert reason in err.reason


# --- field validation ---------------------------------------------------------------------------------------

Edit = Callable[[dict[str, Any]], None]


def put(path: str, value: object) -> Edit:
    """An edit that sets ``path`` (``load.stages[1].rate``) in the document to ``value``."""

    def edit(d: dict[str, Any]) -> None:
        *parents, last = _steps(path)
        node: Any = d
        for step in parents:
            node = node[step]
        node[last] = value

    return edit


def drop(path: str) -> Edit:
    def edit(d: dict[str, Any]) -> None:
        *parents, last = _steps(path)
        node: Any = d
        for step in parents:
            node = node[step]
        del node[last]

    return edit


def _steps(path: str) -> list[str | int]:
    steps: list[str | int] = []
    for part in path.split("."):
        name, _, index = part.partition("[")
        steps.append(name)
        if index:
            steps.append(int(index.rstrip("]")))
    return steps


CASES: list[tuple[str, Edit, str, str]] = [
    # (case id, edit, field, reason or part of it)
    ("unknown top key", put("tresholds", []), "tresholds", "unknown key (did you mean 'thresholds'?)"),
    ("unknown key far off", put("colour", 1), "colour", "unknown key (expected one of: name, target"),
    ("unknown load key", put("load.max_inflight", 5), "load.max_inflight", "did you mean 'max_in_flight'?"),
    ("unknown stage key", put("load.stages[1].rates", 5), "load.stages[1].rates", "did you mean 'rate'?"),
    ("unknown request key", put("requests[1].wieght", 2), "requests[1].wieght", "did you mean 'weight'?"),
    ("quoted unknown key", put("load.start rate", 2), 'load."start rate"', "did you mean 'start_rate'?"),
    ("name not string", put("name", 5), "name", "expected a string, got number 5"),
    ("empty name", put("name", " "), "name", "must not be empty"),
    ("name two lines", put("name", "a\nb"), "name", "must be one line"),
    ("thresholds not list", put("thresholds", "p95 < 1s"), "thresholds", "expected an array of strings"),
    ("threshold not string", put("thresholds", ["p95 < 1s", 5]), "thresholds[1]", "expected a string"),
    ("no load", drop("load"), "load", "missing; add a [load] table"),
    ("load not table", put("load", [1]), "load", "expected a table, got an array"),
    ("unknown arrival", put("load.arrival", "poison"), "load.arrival", "unknown arrival kind 'poison'"),
    ("arrival suggestion", put("load.arrival", "poison"), "load.arrival", "(did you mean 'poisson'?)"),
    ("arrival not string", put("load.arrival", 1), "load.arrival", "expected a string"),
    ("negative start", put("load.start_rate", -1), "load.start_rate", "rate must be >= 0, got -1"),
    ("start as text", put("load.start_rate", "5"), "load.start_rate", "got string '5'"),
    ("start true", put("load.start_rate", True), "load.start_rate", "got boolean true"),
    ("bad timeout", put("load.timeout", "10 seconds"), "load.timeout", "invalid duration '10 seconds'"),
    ("zero timeout", put("load.timeout", "0s"), "load.timeout", "must be longer than 0s"),
    ("timeout bool", put("load.timeout", True), "load.timeout", "got boolean true"),
    ("in flight 0", put("load.max_in_flight", 0), "load.max_in_flight", "whole number >= 1, got number 0"),
    ("in flight float", put("load.max_in_flight", 5.5), "load.max_in_flight", "whole number >= 1"),
    ("in flight bool", put("load.max_in_flight", True), "load.max_in_flight", "got boolean true"),
    (
        "connections 0",
        put("load.max_connections", 0),
        "load.max_connections",
        "whole number >= 1, got number 0",
    ),
    ("connections text", put("load.max_connections", "4"), "load.max_connections", "got string '4'"),
    (
        "connections over in flight",
        put("load.max_connections", 20_000),
        "load.max_connections",
        "20000 is more than load.max_in_flight (10000)",
    ),
    ("no stages", drop("load.stages"), "load.stages", "missing; give stages = [{ duration"),
    ("both", put("load.shape", {"kind": "soak"}), "load.shape", "give either stages or a shape, not both"),
    ("stages not list", put("load.stages", {"duration": 1}), "load.stages", "expected an array of tables"),
    ("stages empty", put("load.stages", []), "load.stages", "empty; give at least one stage"),
    ("stage not table", put("load.stages[1]", 5), "load.stages[1]", "expected a table like { duration"),
    ("stage no rate", drop("load.stages[1].rate"), "load.stages[1].rate", "missing"),
    ("stage no duration", drop("load.stages[0].duration"), "load.stages[0].duration", "missing"),
    ("negative rate", put("load.stages[1].rate", -5), "load.stages[1].rate", "rate must be >= 0, got -5"),
    ("rate as text", put("load.stages[1].rate", "fast"), "load.stages[1].rate", "got string 'fast'"),
    ("rate bool", put("load.stages[0].rate", True), "load.stages[0].rate", "got boolean true"),
    ("rate nan", put("load.stages[0].rate", float("nan")), "load.stages[0].rate", "finite"),
    ("bad duration", put("load.stages[1].duration", "5 min"), "load.stages[1].duration", "invalid duration"),
    ("negative duration", put("load.stages[0].duration", "-5s"), "load.stages[0].duration", "negative"),
    ("duration array", put("load.stages[0].duration", [5]), "load.stages[0].duration", "got an array"),
    (
        "zero duration",
        put("load.stages", [{"duration": "0s", "rate": 100}]),
        "load.stages",
        "total duration is 0s",
    ),
    (
        "zero rate",
        put("load.stages", [{"duration": "10s", "rate": 0}]),
        "load.stages",
        "the rate is 0 throughout",
    ),
    ("no requests", drop("requests"), "requests", "missing; add at least one [[requests]] table"),
    ("requests empty", put("requests", []), "requests", "empty"),
    ("requests table", put("requests", {"path": "/"}), "requests", "expected an array of tables"),
    ("request not table", put("requests[0]", "/"), "requests[0]", "expected a table, got string '/'"),
    ("weight 0", put("requests[1].weight", 0), "requests[1].weight", "expected a number > 0, got number 0"),
    ("weight negative", put("requests[1].weight", -1), "requests[1].weight", "expected a number > 0"),
    ("weight bool", put("requests[1].weight", True), "requests[1].weight", "got boolean true"),
    ("weight text", put("requests[1].weight", "2"), "requests[1].weight", "got string '2'"),
    ("weight inf", put("requests[1].weight", float("inf")), "requests[1].weight", "expected a number > 0"),
    ("lowercase method", put("requests[0].method", "get"), "requests[0].method", "uppercase HTTP method"),
    ("bad method", put("requests[0].method", "GE T"), "requests[0].method", "got 'GE T'"),
    ("empty method", put("requests[0].method", ""), "requests[0].method", "uppercase HTTP method"),
    ("no path", drop("requests[0].path"), "requests[0].path", 'missing; e.g. path = "/"'),
    ("relative path", put("requests[0].path", "api"), "requests[0].path", "must start with '/', got 'api'"),
    ("full URL path", put("requests[0].path", "http://x/"), "requests[0].path", "must start with '/'"),
    ("path with space", put("requests[0].path", "/a b"), "requests[0].path", "must not contain spaces"),
    ("path fragment", put("requests[0].path", "/a#b"), "requests[0].path", "'#'"),
    ("path not string", put("requests[0].path", 1), "requests[0].path", "expected a string"),
    ("headers not table", put("requests[0].headers", ["a"]), "requests[0].headers", "expected a table like"),
    (
        "header not string",
        put("requests[0].headers", {"x-n": 1}),
        "requests[0].headers.x-n",
        "expected a string",
    ),
    (
        "bad header name",
        put("requests[0].headers", {"a b": "1"}),
        'requests[0].headers."a b"',
        "invalid header",
    ),
    (
        "header newline",
        put("requests[0].headers", {"x": "a\r\nb: c"}),
        "requests[0].headers.x",
        "line breaks",
    ),
    (
        "header not Latin-1",
        put("requests[0].headers", {"X-Test": "héllo ✓"}),
        "requests[0].headers.X-Test",
        "sent as Latin-1 and '✓' (U+2713) is not Latin-1",
    ),
    (
        "header control",
        put("requests[0].headers", {"x": "a\x01b"}),
        "requests[0].headers.x",
        "control characters",
    ),
    (
        "header DEL",
        put("requests[0].headers", {"x": "a\x7fb"}),
        "requests[0].headers.x",
        "control characters",
    ),
    (
        "header vtab",
        put("requests[0].headers", {"x": "a\x0bb"}),
        "requests[0].headers.x",
        "control characters",
    ),
    (
        "header edge space",
        put("requests[0].headers", {"x": " a"}),
        "requests[0].headers.x",
        "must not begin or end with spaces",
    ),
    (
        "header non-ASCII name",
        put("requests[0].headers", {"x-é": "1"}),
        'requests[0].headers."x-é"',
        "invalid header name",
    ),
    (
        "header twice",
        put("requests[0].headers", {"Host": "a", "host": "b"}),
        "requests[0].headers.host",
        "header given twice (also as 'Host')",
    ),
    (
        "transfer-encoding",
        put("requests[0].headers", {"Transfer-Encoding": "chunked"}),
        "requests[0].headers.Transfer-Encoding",
        "not supported",
    ),
    (
        "content-length off",
        put("requests[0].headers", {"Content-Length": "5"}),
        "requests[0].headers.Content-Length",
        "'5' does not match the body (0 bytes",
    ),
    (
        "content-length not a number",
        put("requests[0].headers", {"content-length": "abc"}),
        "requests[0].headers.content-length",
        "does not match the body",
    ),
    ("non-ASCII host", put("target", "http://bücher.example"), "target", "'xn--bcher-kva.example'"),
    ("unknown threshold scope", put("thresholds", ["nosuch: p99 < 1s"]), "thresholds[0]", "no request named"),
    (
        "body not string",
        put("requests[0].body", {"q": 1}),
        "requests[0].body",
        "expected a string, got a table",
    ),
    (
        "dup name",
        put("requests[1].name", "home"),
        "requests[1].name",
        "duplicate name 'home' (also requests[0])",
    ),
    ("request name empty", put("requests[1].name", ""), "requests[1].name", "must not be empty"),
]


@pytest.mark.parametrize(("edit", "field", "reason"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_refuses(edit: Edit, field: str, reason: str) -> None:
    d = copy.deepcopy(doc())
    edit(d)
    err = refused(d)
    assert err.field == field
    assert reason in err.reason
    assert str(err) == f"p.toml: {field}: {err.reason}"


def test_duplicate_default_names_are_refused() -> None:
    d = doc()
    d["requests"] = [{"path": "/"}, {"path": "/", "method": "GET", "body": "x"}]
    err = refused(d)
    assert (err.field, err.reason) == (
        "requests[1].name",
        "duplicate name 'GET /' (also requests[0]); give each request its own name",
    )


# --- shapes -------------------------------------------------------------------------------------------------


def shaped(**shape: object) -> dict[str, Any]:
    d = doc()
    d["load"] = {"shape": shape}
    return d


def test_shape_expands_to_stages() -> None:
    profile = parse_profile(shaped(kind="soak", rate=100, ramp="5m", duration="8h"), "p.toml")
    assert profile.load.stages == (Stage(300, 100), Stage(8 * 3600, 100))
    assert profile.load.start_rate == 0


@pytest.mark.parametrize(
    ("shape", "field", "reason"),
    [
        ({"rate": 1}, "load.shape.kind", "missing; one of ramp, soak, spike, step"),
        ({"kind": 1}, "load.shape.kind", "expected a string"),
        ({"kind": "sok"}, "load.shape.kind", "unknown shape 'sok' (did you mean 'soak'?)"),
        ({"kind": "soak", "rate": 5}, "load.shape.duration", "missing; a soak shape needs rate, duration"),
        (
            {"kind": "soak", "rate": 5, "duration": "1h", "rmp": "1m"},
            "load.shape.rmp",
            "did you mean 'ramp'?",
        ),
        ({"kind": "soak", "rate": True, "duration": "1h"}, "load.shape.rate", "got boolean true"),
        ({"kind": "ramp", "to": 5, "over": "fast"}, "load.shape.over", "invalid duration 'fast'"),
        ({"kind": "ramp", "to": 0, "over": "1m"}, "load.shape", "the rate is 0 throughout"),
        (
            {"kind": "step", "start": 5, "step": 1, "steps": 1.5, "every": 1},
            "load.shape.steps",
            "whole number",
        ),
    ],
)
def test_shape_errors(shape: dict[str, object], field: str, reason: str) -> None:
    err = refused(shaped(**shape))
    assert err.field == field
    assert reason in err.reason


def test_shape_is_a_table() -> None:
    d = doc()
    d["load"] = {"shape": "soak"}
    err = refused(d)
    assert (err.field, err.reason) == ("load.shape", "expected a table, got string 'soak'")


def test_start_rate_does_not_combine_with_a_shape() -> None:
    d = shaped(kind="soak", rate=100, duration="1h")
    d["load"]["start_rate"] = 10
    err = refused(d)
    assert err.field == "load.start_rate"
    assert "cannot be combined with a shape" in err.reason


# --- values -------------------------------------------------------------------------------------------------


def test_values_are_converted() -> None:
    d = doc()
    d["thresholds"] = ["p95 < 500ms", "slow: p99 < 1s"]
    d["abort_on_fail"] = True
    d["abort_grace"] = "30s"
    d["budget"] = 12.5
    d["load"].update(arrival="constant", start_rate=2, timeout="1m30s", max_in_flight=7, max_connections=3)
    d["requests"][0].update(method="POST", headers={"content-type": "application/json"}, body='{"q": "é"}')
    profile = parse_profile(d, "p.toml")
    assert profile.thresholds == ("p95 < 500ms", "slow: p99 < 1s")
    assert (profile.abort_on_fail, profile.abort_grace, profile.budget) == (True, 30.0, 12.5)
    assert profile.load == Load(
        arrival="constant",
        start_rate=2.0,
        timeout="1m30s",
        max_in_flight=7,
        stages=[(10, 5), (5, 10)],
        max_connections=3,
    )
    assert profile.load.connection_limit == 3
    assert Load(max_in_flight=7).connection_limit == 7
    home = profile.requests[0]
    assert home.headers == (("content-type", "application/json"),)
    assert home.body == '{"q": "é"}'.encode()
    assert profile.requests[1].weight == 2.0
    assert profile.name == "t"


def test_name_defaults_to_the_file_stem() -> None:
    d = doc()
    del d["name"]
    assert parse_profile(d, "dir/checkout-spike.toml").name == "checkout-spike"


@given(profiles())
def test_profile_round_trips_through_its_document(profile: Profile) -> None:
    assert parse_profile(profile_doc(profile), "p.toml") == profile


@pytest.mark.parametrize(
    ("change", "field", "reason"),
    [
        ({"thresholds": ["p95 500ms"]}, "thresholds[0]", "no comparison operator"),
        ({"thresholds": ["p101 < 1s"]}, "thresholds[0]", "p101"),
        ({"abort_on_fail": "yes"}, "abort_on_fail", "true or false"),
        ({"abort_grace": "soon"}, "abort_grace", ""),
        ({"budget": -1}, "budget", ">= 0"),
    ],
)
def test_verdict_and_budget_fields_are_checked(change: dict[str, object], field: str, reason: str) -> None:
    d = doc()
    d.update(change)
    with pytest.raises(ProfileError) as e:
        parse_profile(d, "p.toml")
    assert e.value.field == field
    assert reason in e.value.reason


def test_header_values_and_framing_that_fit_are_kept() -> None:
    d = doc()
    headers = {"X-Name": "Zoë\tvan der Berg", "Content-Length": "10", "Host": "example.com"}
    d["requests"][0].update(method="POST", body='{"q": 1}é', headers=headers)
    assert parse_profile(d, "p.toml").requests[0].headers == tuple(headers.items())


def test_a_threshold_scope_names_a_request() -> None:
    d = doc()
    d["thresholds"] = ["p95 < 1s", "slow: p99 < 2s", "sloe: p99 < 2s"]
    err = refused(d)
    assert err.field == "thresholds[2]"
    assert err.reason == (
        "threshold 'sloe: p99 < 2s': no request named 'sloe' (known: 'home', 'slow'); did you mean 'slow'?"
    )


_HEADER_TEXT = st.text(st.sampled_from("aZ09 \t\x01\x0b\x7f\x85\xa0é✓€:;\r\n\0-"), max_size=6)


@settings(max_examples=300, deadline=None)
@given(
    name=st.text(st.sampled_from("aZ-_:é ✓\x01"), min_size=1, max_size=4),
    value=_HEADER_TEXT,
    target=st.sampled_from(
        (
            "http://127.0.0.1:8080",
            "http://bücher.example",
            "http://✓.example",
            "http://[::1]:8080/prä",
            "http://[zz]:80",
            "http://127.0.0.1:8080/a%zz",
        )
    ),
    body=st.sampled_from(("", "é")),
    length=st.sampled_from((None, "0", "2", "x")),
)
def test_what_the_loader_accepts_both_engines_can_send(
    name: str, value: str, target: str, body: str, length: str | None
) -> None:
    """The family of issue 24 #3: every header, target and body the loader lets through, both engines build
    into requests (an agent refuses a run whose requests it cannot build, after the run has started)."""
    from agents.fast_engine import FastEngine
    from agents.httpx_engine import HttpxEngine
    from agents.recorder import Recorder

    d = doc()
    d["target"] = target
    headers = {name: value} | ({} if length is None else {"Content-Length": length})
    d["requests"][0].update(method="POST", headers=headers, body=body)
    try:
        profile = parse_profile(d, "p.toml")
    except ProfileError:
        return
    for engine in (FastEngine, HttpxEngine):
        recorder = Recorder([r.name for r in profile.requests])
        engine(profile.target, profile.requests, recorder, timeout=1.0, max_connections=1)


def test_request_cost_must_be_a_price() -> None:
    d = doc()
    d["requests"][0]["cost"] = 0.002
    assert parse_profile(d, "p.toml").requests[0].cost == 0.002
    d["requests"][0]["cost"] = "cheap"
    with pytest.raises(ProfileError) as e:
        parse_profile(d, "p.toml")
    assert e.value.field == "requests[0].cost"
