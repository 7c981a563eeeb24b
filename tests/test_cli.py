"""The ``loadgen`` command's own checks, run in-process with click's runner (nothing is sent)."""

from __future__ import annotations

from pathlib import Path

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
