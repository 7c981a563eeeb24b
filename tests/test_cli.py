"""The ``loadgen`` command's own checks, run in-process with click's runner (nothing is sent)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from loadgen.cli import cli

PROFILE = """\
target = "http://127.0.0.1:8080"
thresholds = ["nosuch: p99 < 1s"]

[load]
stages = [{{ duration = "10s", rate = 5 }}]

[[requests]]
name = "home"
path = "/"
headers = {{ "X-Test" = "{value}" }}
"""


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), prog_name="loadgen")
    return result.exit_code, result.stdout, result.stderr


def test_plan_refuses_what_an_agent_would_refuse_with_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text(PROFILE.format(value="héllo ✓"), encoding="utf-8")
    code, _, err = invoke("plan", str(path))
    assert code == 2
    assert f"{path}: requests[0].headers.X-Test: header values are sent as Latin-1" in err
    path.write_text(PROFILE.format(value="héllo"), encoding="utf-8")  # Latin-1 is fine; the scope is not
    code, _, err = invoke("plan", str(path))
    assert code == 2
    assert f"{path}: thresholds[0]: threshold 'nosuch: p99 < 1s': no request named 'nosuch'" in err


def test_compare_refuses_a_nonsense_limit_and_explains_the_floor(tmp_path: Path) -> None:
    code, _, err = invoke("compare", "--max-regression", "-5%", str(tmp_path), str(tmp_path))
    assert code == 2
    assert "--max-regression: '-5%': the allowed worsening is a percentage >= 0" in err
    code, out, _ = invoke("compare", "--help")
    assert code == 0
    assert "Latency changes under 1 ms" in " ".join(out.split())


@pytest.fixture
def root_level() -> Iterator[None]:
    level = logging.getLogger().level
    yield
    logging.getLogger().setLevel(level)


@pytest.mark.usefixtures("root_level")
@pytest.mark.parametrize(
    ("args", "level"),
    [
        (("plan", "{p}"), logging.WARNING),
        (("-v", "plan", "{p}"), logging.INFO),
        (("plan", "-v", "{p}"), logging.INFO),
        (("plan", "{p}", "-vv"), logging.DEBUG),
        (("-v", "plan", "--verbose", "{p}"), logging.DEBUG),
    ],
)
def test_verbose_goes_before_or_after_the_subcommand(
    tmp_path: Path, args: tuple[str, ...], level: int
) -> None:
    path = tmp_path / "p.toml"
    path.write_text(PROFILE.format(value="x").replace('"nosuch: ', '"home: '), encoding="utf-8")
    code, _, err = invoke(*(a.format(p=path) for a in args))
    assert (code, err) == (0, "")
    assert logging.getLogger().level == level


@pytest.mark.usefixtures("root_level")
def test_every_command_takes_verbose() -> None:
    code, _, err = invoke("agent", "-v")
    assert code == 2
    assert "No such option" not in err
    assert "Missing option '--connect'" in err
    for command in ("target", "agent", "run", "coordinator", "plan", "demo", "report", "compare"):
        assert "-v, --verbose" in invoke(command, "--help")[1], command
    assert "-v, --verbose" in invoke("keys", "generate", "--help")[1]


@pytest.mark.parametrize(
    "args",
    [
        ("target", "--port", "99999"),
        ("target", "--port", "-1"),
        ("agent", "--connect", "tcp://127.0.0.1:1", "--wait", "-1"),
        ("coordinator", "p.toml", "--agent-timeout", "0"),
        ("coordinator", "p.toml", "--coordinator-timeout", "0.5"),
        ("coordinator", "p.toml", "--join-timeout", "0"),
        ("run", "p.toml", "--seed", "-1"),
        ("run", "p.toml", "--seed", str(2**64)),
    ],
)
def test_numbers_out_of_range_are_refused(monkeypatch: pytest.MonkeyPatch, args: tuple[str, ...]) -> None:
    import agents.agent
    import target.server

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"started with {args} {kwargs}")

    monkeypatch.setattr(target.server, "run_target", never)  # bounded even if the range were not checked
    monkeypatch.setattr(agents.agent, "Agent", never)
    code, _, err = invoke(*args)
    assert code == 2
    assert f"Invalid value for '{args[-2]}'" in err


def test_plan_warns_about_an_implausible_profile(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    text = PROFILE.format(value="x").replace('"nosuch: ', '"home: ')
    path.write_text(text.replace('duration = "10s", rate = 5', 'duration = "100000h", rate = 1e12'))
    code, out, err = invoke("plan", str(path))
    assert code == 0
    assert "→ http://127.0.0.1:8080" in out
    assert f"loadgen: warning: {path}: the profile peaks at 1,000,000,000,000 requests/s" in err
    assert "(over 1,000,000/s)" in err
    assert f"loadgen: warning: {path}: the profile runs for " in err
    assert "longer than a week" in err


def test_the_written_line_lists_the_latency_log(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from coordinator.results import judge
    from loadgen.cli import _report
    from loadgen.profile import Load, Profile, Request, Stage
    from tests.results_fixtures import make_results

    (tmp_path / "latency.hlog").write_text("#[hlog]\n")
    profile = Profile(
        name="t",
        target="http://127.0.0.1:8080",
        load=Load(stages=[Stage(1, 1)]),
        requests=[Request(name="home")],
    )
    results = make_results()
    judge(results, [])  # type: ignore[arg-type]  # as the coordinator does before it hands them over
    assert _report(results, profile, str(tmp_path)) == 0
    written = next(line for line in capsys.readouterr().err.splitlines() if line.startswith("written: "))
    assert written.endswith(f", {tmp_path / 'latency.hlog'}")
