"""[[flows]] and [[data]] in profiles: what is read, and every mistake refused with its field and reason."""

from __future__ import annotations

import copy
import dataclasses
import tomllib
from pathlib import Path
from typing import Any

import pytest

from loadgen.errors import ProfileError
from loadgen.flows import Capture, Check, Pause
from loadgen.profile import Profile
from loadgen.profile_file import load_profile, parse_profile

PROFILE = """\
target = "http://127.0.0.1:8080"
thresholds = ["purchase: p95 < 2s", "purchase.login: p99 < 800ms"]

[load]
stages = [{ duration = "10s", rate = 5 }]

[[data]]
file = "users.csv"

[[requests]]
name = "home"
path = "/"

[[flows]]
name = "purchase"
weight = 3

[[flows.steps]]
name = "login"
method = "POST"
path = "/login"
body = '{"user": "{{ user }}", "password": "{{ password }}"}'
capture = { token = "$.token", item = "$.items[0].id", sid = "cookie:session" }
check = { status = [200], contains = "token" }

[[flows.steps]]
pause = "1s..3s"

[[flows.steps]]
name = "buy"
method = "POST"
path = "/buy/{{ item }}"
headers = { authorization = "Bearer {{ token }}", "x-request-id" = "{{ uuid }}" }
check = { json = { "$.item" = 7 } }
"""


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "users.csv").write_text("user,password\nalice,pw1\nbob,pw2\n", encoding="utf-8")
    (tmp_path / "p.toml").write_text(PROFILE, encoding="utf-8")
    return tmp_path


def doc(folder: Path) -> dict[str, Any]:
    return tomllib.loads((folder / "p.toml").read_text())


def refused(d: dict[str, Any], folder: Path) -> ProfileError:
    with pytest.raises(ProfileError) as info:
        parse_profile(d, str(folder / "p.toml"))
    assert "\n" not in str(info.value)
    return info.value


def test_a_journey_is_read(folder: Path) -> None:
    p = load_profile(folder / "p.toml")
    assert p.result_names == ["home", "purchase.login", "purchase.buy", "purchase"]
    assert p.step_names == {"purchase.login", "purchase.buy"}
    (flow,) = p.flows
    assert flow.name == "purchase" and flow.weight == 3.0 and flow.cookies
    login, pause, buy = flow.steps
    assert login.request == "purchase.login"
    assert login.capture == (
        Capture("token", "json", "$.token"),
        Capture("item", "json", "$.items[0].id"),
        Capture("sid", "cookie", "session"),
    )
    assert login.check == Check(status=(200,), contains="token")
    assert pause.request is None and pause.pause == Pause("uniform", 1.0, 3.0)
    assert pause.name == "step2"
    assert buy.check.json == (("$.item", 7),)
    requests = {r.name: r for r in p.requests}
    assert requests["purchase.buy"].path == "/buy/{{ item }}"
    assert dict(requests["purchase.buy"].headers)["authorization"] == "Bearer {{ token }}"
    (data,) = p.data
    assert data.columns == ("user", "password")
    assert data.rows == (("alice", "pw1"), ("bob", "pw2"))
    assert p.thresholds == ("purchase: p95 < 2s", "purchase.login: p99 < 800ms")


def test_wire_toml_and_copies_keep_the_journey(folder: Path) -> None:
    p = load_profile(folder / "p.toml")
    assert Profile.from_wire(p.to_wire()) == p
    again = parse_profile(tomllib.loads(p.to_toml()), str(folder / "p.toml"))
    assert again == p
    copied = dataclasses.replace(p, name="other")
    assert copied.flows == p.flows and copied.requests == p.requests and copied.data == p.data


def test_flows_alone_need_no_requests(folder: Path) -> None:
    d = doc(folder)
    del d["requests"]
    p = parse_profile(d, str(folder / "p.toml"))
    assert p.result_names == ["purchase.login", "purchase.buy", "purchase"]


def test_pause_forms(folder: Path) -> None:
    d = doc(folder)
    for text, pause in [
        ("2s", Pause("fixed", 2.0, 2.0)),
        (0.5, Pause("fixed", 0.5, 0.5)),
        ("250ms..1s", Pause("uniform", 0.25, 1.0)),
        ("exp(2s)", Pause("exponential", 2.0, 2.0)),
    ]:
        d["flows"][0]["steps"][1]["pause"] = text
        assert parse_profile(d, str(folder / "p.toml")).flows[0].steps[1].pause == pause


def test_env_variables_are_read_at_load_and_kept_apart(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOP_KEY", "s3cret")
    d = doc(folder)
    d["flows"][0]["steps"][2]["headers"]["x-key"] = "{{ env.SHOP_KEY }}"
    p = parse_profile(d, str(folder / "p.toml"))
    assert p.env == (("env.SHOP_KEY", "s3cret"),)
    assert "s3cret" not in p.to_toml()
    assert Profile.from_wire(p.to_wire()).env == p.env  # agents get the value


def change(d: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """``d`` with ``value`` at the dotted ``path`` (``flows.0.steps.2.path``); ``...`` deletes."""
    d = copy.deepcopy(d)
    *parents, last = path.split(".")
    node: Any = d
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if value is ...:
        del node[int(last) if isinstance(node, list) else last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return d


MISTAKES = [
    ("flows.0.steps.2.path", "/buy/{{ itme }}", "flows[0].steps[2].path", "{{ itme }} is not defined"),
    ("flows.0.steps.0.capture.token", "..token", "flows[0].steps[0].capture.token", "expected a JSON path"),
    ("flows.0.steps.0.capture.token", "$.a[", "flows[0].steps[0].capture.token", "JSON path"),
    ("flows.0.steps.0.capture.token", "regex:(x", "flows[0].steps[0].capture.token", "regex"),
    ("flows.0.steps.0.check.status", [200, 700], "flows[0].steps[0].check.status", "100..599"),
    ("flows.0.steps.0.check.colour", "red", "flows[0].steps[0].check.colour", "unknown key"),
    ("flows.0.steps.1.pause", "3s..1s", "flows[0].steps[1].pause", "ends before it starts"),
    ("flows.0.steps.1.pause", "soon", "flows[0].steps[1].pause", ""),
    ("flows.0.steps.0.body", "{{ random_int(9, 1) }}", "flows[0].steps[0].body", "above its high end"),
    ("flows.0.steps.0.pathh", "/", "flows[0].steps[0].pathh", "unknown key"),
    ("flows.0.steps.0.path", ..., "flows[0].steps[0].path", "missing"),
    ("flows.0.name", "a.b", "flows[0].name", "must not contain '.'"),
    ("flows.0.name", "home", "flows[0].name", "already the name"),
    ("flows.0.weight", 0, "flows[0].weight", "> 0"),
    ("flows.0.cookies", "yes", "flows[0].cookies", "true or false"),
    ("flows.0.steps", [], "flows[0].steps", "missing or empty"),
    ("flows.0.steps", [{"pause": "1s"}], "flows[0].steps", "at least one request step"),
    ("flows.0.steps.2.name", "login", "flows[0].steps[2].name", "duplicate step name"),
    ("flows.0.steps.1.method", "GET", "flows[0].steps[1].method", "a pause step takes only pause"),
    (
        "flows.0.steps.2.headers.x-request-id",
        "{{ env.LOADGEN_SURELY_UNSET }}",
        "flows[0].steps[2].headers.x-request-id",
        "LOADGEN_SURELY_UNSET is not set",
    ),
    ("data.0.file", "missing.csv", "data[0].file", "no such file"),
    ("data.0.mode", "shuffled", "data[0].mode", "expected one of"),
    ("data.0.on_exhausted", "stop", "data[0].on_exhausted", 'is for mode = "unique"'),
    ("thresholds", ["purchase.nope: p99 < 1s"], "thresholds[0]", "no request named 'purchase.nope'"),
]


@pytest.mark.parametrize(("path", "value", "field", "reason"), MISTAKES)
def test_mistakes_name_their_field(folder: Path, path: str, value: Any, field: str, reason: str) -> None:
    err = refused(change(doc(folder), path, value), folder)
    assert err.field == field
    assert reason in err.reason


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "is empty"),
        ("user,password\n", "no data rows"),
        ("user,pass word\nalice,1\n", "must name the columns"),
        ("user,user\na,b\n", "given twice"),
        ("user,password\nalice\n", "row 2 has 1 cells"),
    ],
)
def test_bad_csv_files(folder: Path, text: str, reason: str) -> None:
    (folder / "users.csv").write_text(text, encoding="utf-8")
    err = refused(doc(folder), folder)
    assert err.field == "data[0].file"
    assert reason in err.reason


def test_a_capture_defines_its_variable_only_for_later_steps(folder: Path) -> None:
    d = change(doc(folder), "flows.0.steps.0.path", "/login/{{ token }}")
    err = refused(d, folder)
    assert err.field == "flows[0].steps[0].path" and "{{ token }}" in err.reason


def test_data_without_flows_is_refused(folder: Path) -> None:
    d = doc(folder)
    del d["flows"]
    assert refused(d, folder).field == "data"


def test_flows_written_in_python_are_named_and_checked() -> None:
    from loadgen.loads import soak
    from tests import flow_functions

    p = Profile(
        name="code",
        target="http://127.0.0.1:8080",
        load=soak(rate=5, duration="10s"),
        requests=[],
        flows=[{"name": "py", "function": flow_functions.shop, "steps": ["size", "wait"]}],
    )
    (flow,) = p.flows
    assert flow.function == "tests.flow_functions:shop"
    assert p.result_names == ["py.size", "py.wait", "py"]
    assert p.code_refs == ["tests.flow_functions:shop"]
    assert Profile.from_wire(p.to_wire()) == p
    assert parse_profile(tomllib.loads(p.to_toml()), "p.toml").flows == p.flows
    base = {
        "name": "t",
        "target": "http://127.0.0.1:8080",
        "load": {"stages": [{"duration": "1s", "rate": 1}]},
    }
    for flow_doc, field, reason in [
        (
            {"name": "f", "function": "no colon", "steps": ["a"]},
            "flows[0].function",
            "package.module:function",
        ),
        ({"name": "f", "function": "m:f"}, "flows[0].steps", "lists the names of its steps"),
        ({"name": "f", "function": "m:f", "steps": ["a", "a"]}, "flows[0].steps[1]", "duplicate"),
        ({"name": "f", "function": "m:f", "steps": ["a.b"]}, "flows[0].steps[0]", "letters, digits"),
        ({"name": "f", "function": lambda s: None, "steps": ["a"]}, "flows[0].function", "module-level"),
    ]:
        with pytest.raises(ProfileError) as info:
            parse_profile(base | {"flows": [flow_doc]}, "p.toml")
        assert info.value.field == field and reason in info.value.reason


def _package(root: Path, name: str, helper: str) -> None:
    pkg = root / name
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "steps.py").write_text(f"WAIT = {helper!r}\n")
    (pkg / "flows.py").write_text("from .steps import WAIT\n\n\nasync def go(s):\n    await s.pause(WAIT)\n")


def test_a_flows_hash_covers_the_helper_modules_of_its_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two installs whose flow module is the same but whose helper module beside it differs hash apart; the
    same files under another folder hash alike."""
    import sys

    from loadgen.code_refs import code_hash

    _package(tmp_path / "v1", "hashpkg1", "1s")
    _package(tmp_path / "v2", "hashpkg2", "2s")
    _package(tmp_path / "v3", "hashpkg3", "1s")
    monkeypatch.syspath_prepend(str(tmp_path / "v1"))
    monkeypatch.syspath_prepend(str(tmp_path / "v2"))
    monkeypatch.syspath_prepend(str(tmp_path / "v3"))
    try:
        one, two, three = (code_hash(f"hashpkg{i}.flows:go") for i in (1, 2, 3))
    finally:
        for name in [m for m in sys.modules if m.startswith("hashpkg")]:
            del sys.modules[name]
    assert one != two  # only steps.py differs
    assert one == three  # same files, another place and package name
