"""Operator limits on an agent: which targets it may load, and how hard."""

from __future__ import annotations

import pytest

from agents.agent import Agent, target_allowed
from loadgen.profile import LoadSpec, Profile, RequestSpec, Stage


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
    return Profile("p", target, LoadSpec(stages=(Stage(10, 1000),)), (RequestSpec("r"),))


# An Agent reads its host's /proc/stat when it is made (its steal meter), so these are not pure.
@pytest.mark.integration
def test_agent_refuses_a_share_above_its_max_rate() -> None:
    agent = Agent("tcp://127.0.0.1:1", max_rate=400)
    assert agent._refusal(_profile(), 0.5) is not None  # 500/s at the peak
    assert agent._refusal(_profile(), 0.4) is None  # 400/s


@pytest.mark.integration
def test_agent_refuses_a_target_outside_its_allow_list() -> None:
    agent = Agent("tcp://127.0.0.1:1", allow_targets=("127.0.0.1:8080",))
    assert agent._refusal(_profile(), 1.0) is None
    refusal = agent._refusal(_profile("http://10.1.2.3"), 1.0)
    assert refusal is not None and "not allowed" in refusal
