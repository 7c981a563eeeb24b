"""The agent's open-file limit: raised to fit the connections a run may open, and what is left otherwise."""

from __future__ import annotations

import subprocess
import sys

import pytest

from loadgen.limits import RESERVE, connection_budget


def test_budget_leaves_a_reserve() -> None:
    assert connection_budget(1024) == 1024 - RESERVE
    assert connection_budget(10) == 1


def _in_child(soft: int, hard: int, code: str) -> str:
    """Run ``code`` in a Python process whose open-file limit is (soft, hard); its last line of output."""
    setup = f"import resource; resource.setrlimit(resource.RLIMIT_NOFILE, ({soft}, {hard}))\n"
    out = subprocess.run(
        [sys.executable, "-c", setup + code], capture_output=True, text=True, check=True, timeout=30
    )
    return out.stdout.strip().splitlines()[-1]


@pytest.mark.integration
def test_the_soft_limit_is_raised_to_fit_up_to_the_hard_limit() -> None:
    code = (
        "import resource; from loadgen.limits import connection_limit as c; "
        "print(c(500), c(50_000), resource.getrlimit(resource.RLIMIT_NOFILE))"
    )
    # soft 256, hard 2,048: 500 connections fit once raised; 50,000 get what the hard limit leaves
    assert _in_child(256, 2048, code) == f"500 {2048 - RESERVE} (2048, 2048)"


@pytest.mark.integration
def test_a_limit_that_cannot_be_raised_caps_the_connections() -> None:
    code = "from loadgen.limits import connection_limit as c; print(c(500), c(10))"
    assert _in_child(200, 200, code) == f"{200 - RESERVE} 10"
