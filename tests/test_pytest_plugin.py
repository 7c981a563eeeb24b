"""The pytest plugin as a user meets it: a test file of their own, run by pytest in a process of its own (the
plugin comes in through its entry point), against the built-in target; and the examples folder as a CI
pipeline would run it."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.conftest import ROOT, Target, write_profile

pytestmark = pytest.mark.integration

_USER_TESTS = """
import os
import loadgen as loadgen_module

PROFILE = os.environ["LOADGEN_TEST_PROFILE"]


def test_passes(loadgen):
    results = loadgen(loadgen_module.load_profile(PROFILE), agents=1)
    assert results.totals.ok == 100


def test_thresholds_fail(loadgen):
    loadgen(loadgen_module.load_profile(PROFILE.replace(".toml", "-strict.toml")), agents=1)


def test_assertion(loadgen):
    results = loadgen(loadgen_module.load_profile(PROFILE), agents=1)
    assert results.latency.p99 < 0.000001


def test_not_a_load_test():
    assert True
"""


def pytest_in(
    folder: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, **(env or {})},
        check=False,
    )


@pytest.fixture
def user_suite(tmp_path: Path, target: Target) -> tuple[Path, dict[str, str]]:
    stages = '[{ duration = "0s", rate = 50 }, { duration = "2s", rate = 50 }]'
    profile = write_profile(tmp_path / "smoke.toml", target.url, stages, extra='thresholds = ["p99 < 5s"]')
    write_profile(
        tmp_path / "smoke-strict.toml",
        target.url,
        stages,
        extra='thresholds = ["p99 < 1us", "error_rate < 1%"]',
    )
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "test_user_load.py").write_text(textwrap.dedent(_USER_TESTS))
    return suite, {"LOADGEN_TEST_PROFILE": str(profile)}


def test_load_tests_are_skipped_unless_asked_for(user_suite: tuple[Path, dict[str, str]]) -> None:
    suite, env = user_suite
    done = pytest_in(suite, "-rs", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed, 3 skipped" in done.stdout
    assert "a load test: run it with -m load" in done.stdout


def test_the_fixture_runs_reports_and_fails_on_thresholds(
    user_suite: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    suite, env = user_suite
    out = tmp_path / "reports"
    junit = tmp_path / "junit.xml"
    done = pytest_in(suite, "-m", "load", "--loadgen-out", str(out), f"--junitxml={junit}", env=env)
    text = done.stdout
    assert done.returncode == 1, text + done.stderr
    assert "2 failed, 1 passed, 1 deselected" in text
    # a failed threshold fails the test with the threshold table as its message
    assert "loadgen: 'smoke-strict' did not pass" in text
    assert "Thresholds: FAIL (1 of 2 passed)" in text
    assert "FAIL  p99 < 1us" in text
    # a plain assertion on the results reads well
    assert "assert " in text and "Percentiles(count=100, p50=" in text
    # the reports are in one folder per test, named for it, and JUnit XML points at them
    folders = sorted(p.name for p in out.iterdir())
    assert folders == [
        "test_user_load.py_test_assertion",
        "test_user_load.py_test_passes",
        "test_user_load.py_test_thresholds_fail",
    ]
    for folder in folders:
        assert (out / folder / "report.html").exists() and (out / folder / "summary.md").exists()
    props = {
        case.get("name"): [
            p.get("value") for p in case.iter("property") if p.get("name") == "loadgen_results"
        ]
        for case in ET.parse(junit).getroot().iter("testcase")
    }
    assert props["test_passes"] == [str(out / "test_user_load.py_test_passes" / "results.json")]
    # and the terminal summary lists every run
    assert "loadgen" in text and "'smoke' passed; 100 scheduled, 100 ok" in text


def test_the_example_spike_test_passes_as_a_ci_pipeline_runs_it(tmp_path: Path) -> None:
    out = tmp_path / "reports"
    done = pytest_in(ROOT, "-m", "load", "examples", "--loadgen-out", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout
    (folder,) = out.iterdir()
    html = (folder / "report.html").read_text()
    assert "action_started stall" in html  # the stall is marked on the timelines
