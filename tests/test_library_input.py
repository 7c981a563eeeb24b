"""Bad input to the library's run entry points is refused before any process starts or any socket opens
(these tests are in the pure tier: starting a process or binding a socket here would fail them)."""

from __future__ import annotations

from pathlib import Path

import pytest

import loadgen
from loadgen.security import SecurityError


@pytest.fixture
def profile(tmp_path: Path) -> loadgen.Profile:
    path = tmp_path / "p.toml"
    path.write_text(
        'target = "http://127.0.0.1:9"\n[load]\nstages = [{ duration = "10s", rate = 5 }]\n'
        '[[requests]]\npath = "/"\n'
    )
    return loadgen.load_profile(path)


def test_an_unknown_keyword_is_a_type_error_naming_it(profile: loadgen.Profile) -> None:
    with pytest.raises(TypeError, match="agnets"):
        loadgen.run(profile, agnets=2)
    with pytest.raises(TypeError, match="ot"):
        loadgen.start(profile, ot="x")


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"agents": 3, "expect_agents": 2}, ValueError, "no more local ones than it expects"),
        ({"agents": 0}, ValueError, "at least one agent"),
        ({"engine": "curl"}, ValueError, "engine must be 'fast' or 'httpx'"),
        ({"actions": {"10s": print}}, ValueError, "outside the profile, which lasts 10 s"),
        ({"actions": {"soon": print}}, ValueError, "duration"),
        ({"actions": {"1s": "not callable"}}, TypeError, "callable"),
        ({"bind": "tcp://10.1.2.3:5555", "expect_agents": 1}, SecurityError, "--insecure"),
        ({"bind": "tcp://127.0.0.1:0", "expect_agents": 1, "secret_key": "k"}, SecurityError, "go together"),
    ],
)
def test_bad_options_are_refused_before_anything_starts(
    profile: loadgen.Profile, options: dict[str, object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        loadgen.run(profile, **options)


def test_a_profile_must_be_a_profile() -> None:
    with pytest.raises(TypeError, match=r"must be a loadgen\.Profile, got str"):
        loadgen.run("profiles/smoke.toml")  # type: ignore[arg-type]


def test_the_public_names_resolve_and_are_all_listed() -> None:
    for name in loadgen.__all__:
        assert getattr(loadgen, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        loadgen.nope  # type: ignore[attr-defined]  # noqa: B018
