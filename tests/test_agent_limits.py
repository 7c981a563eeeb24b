"""Operator limits on an agent: which targets it may load, and how hard."""

from __future__ import annotations

import pytest

from agents.policy import refusal, target_allowed
from loadgen.profile import Load, Profile, Request, Stage


@pytest.mark.parametrize(
    ("target", "patterns", "allowed"),
    [
        ("http://127.0.0.1:8080", (), True),
        ("http://127.0.0.1:8080", ("127.0.0.1",), True),
        ("http://127.0.0.1:8080", ("127.0.0.1:8080",), True),
        ("http://127.0.0.1:8080", ("127.0.0.1:9090",), False),
        ("https://api.staging.example", ("*.staging.example:443",), True),
        ("http://api.staging.example", ("*.staging.example:443",), False),
        ("http://API.Staging.Example:80", ("api.staging.example",), True),
        ("http://evil.example", ("*.staging.example", "127.0.0.*"), False),
        ("http://[::1]:8080", ("::1",), True),
        ("http://[::1]:8080", ("[::1]:8080",), True),
        ("http://[::1]:8080", ("[::1]:9",), False),
    ],
)
def test_target_patterns(target: str, patterns: tuple[str, ...], allowed: bool) -> None:
    assert target_allowed(target, patterns) is allowed


def _profile(target: str = "http://127.0.0.1:8080") -> Profile:
    return Profile(name="p", target=target, load=Load(stages=[Stage(10, 1000)]), requests=[Request(name="r")])


# An Agent reads its host's /proc/stat when it is made (its steal meter), so these are not pure.
@pytest.mark.integration
def test_agent_refuses_a_share_above_its_max_rate() -> None:
    assert refusal(_profile(), 0.5, (), max_rate=400) is not None  # 500/s at the peak
    assert refusal(_profile(), 0.4, (), max_rate=400) is None  # 400/s
    assert refusal(_profile(), 1.0, (), max_rate=0) is None  # no limit


@pytest.mark.integration
def test_agent_refuses_a_target_outside_its_allow_list() -> None:
    allow = ("127.0.0.1:8080",)
    assert refusal(_profile(), 1.0, allow, max_rate=0) is None
    why = refusal(_profile("http://10.1.2.3"), 1.0, allow, max_rate=0)
    assert why is not None and "not allowed" in why
