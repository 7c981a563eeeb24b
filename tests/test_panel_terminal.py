"""The live panel in a real terminal (tmux: a detached session of a fixed size, read with capture-pane), and
the plain lines in a pipe. Real runs of a few seconds against the built-in target; every wait is bounded."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT, Target, loadgen, write_profile

pytestmark = pytest.mark.integration

STAGES = '[{duration = "2s", rate = 20}, {duration = "4s", rate = 20}]'
PANEL_LABELS = (
    "elapsed",
    "stage",
    "rate",
    "latency",
    "requests",
    "errors",
    "agents",
    "saturation",
    "thresholds",
)


class Tmux:
    """A tmux server of its own (its own socket, so nothing else's sessions are touched) with one session."""

    def __init__(self, name: str) -> None:
        if shutil.which("tmux") is None:
            pytest.skip("tmux not found; install it with: apt-get install -y tmux")
        self.args = ["tmux", "-L", f"loadgen-test-{os.getpid()}-{name}"]
        self.tmux("new-session", "-d", "-s", "t", "-x", "100", "-y", "50", "-c", str(ROOT))

    def tmux(self, *args: str) -> str:
        env = {**os.environ, "TERM": "xterm-256color"}
        env.pop("NO_COLOR", None)
        done = subprocess.run(
            [*self.args, *args], capture_output=True, text=True, timeout=10, check=True, env=env
        )
        return done.stdout

    def type(self, command: str) -> None:
        self.tmux("send-keys", "-t", "t", command, "Enter")

    def screen(self) -> list[str]:
        """What the pane shows now, and what scrolled off above it."""
        return self.tmux("capture-pane", "-p", "-t", "t", "-S", "-500").rstrip("\n").split("\n")

    def cursor_shown(self) -> bool:
        return self.tmux("display", "-p", "-t", "t", "#{cursor_flag}").strip() == "1"

    def wait_for(self, pattern: str, timeout: float) -> list[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            lines = self.screen()
            if any(re.search(pattern, line) for line in lines):
                return lines
            time.sleep(0.2)
        raise AssertionError(f"{pattern!r} not on screen after {timeout} s:\n" + "\n".join(self.screen()))

    def kill(self) -> None:
        subprocess.run([*self.args, "kill-server"], capture_output=True, timeout=10, check=False)


@pytest.fixture
def tmux(request: pytest.FixtureRequest) -> Iterator[Tmux]:
    t = Tmux(request.node.name[-20:].strip("[]_"))
    try:
        yield t
    finally:
        t.kill()


def run_command(profile: Path, *extra: str) -> str:
    cmd = [sys.executable, "-m", "loadgen", "run", str(profile), "--agents", "1", *extra]
    return f"{shlex.join(cmd)}; echo __EXIT=$?"


def elapsed_of(lines: list[str]) -> str | None:
    found = [m[1] for line in lines if (m := re.match(r"elapsed\s+(\d+:\d\d) /", line))]
    return found[-1] if found else None


def panel_block(lines: list[str], name: str) -> list[str]:
    titles = [i for i, line in enumerate(lines) if line.startswith(f"loadgen  {name}")]
    assert len(titles) == 1, "\n".join(lines)  # drawn over itself, never stacked
    return lines[titles[0] : titles[0] + 10]


def test_the_panel_is_redrawn_in_place_and_the_summary_follows(
    tmux: Tmux, target: Target, tmp_path: Path
) -> None:
    profile = write_profile(
        tmp_path / "panel-run.toml", target.url, STAGES, extra='thresholds = ["p99 < 5s"]'
    )
    tmux.type(run_command(profile))
    tmux.wait_for(r"^elapsed\s+0:0[1-9]", timeout=30)
    first = tmux.screen()
    deadline = time.monotonic() + 10
    second = first
    while elapsed_of(second) == elapsed_of(first) and time.monotonic() < deadline:
        time.sleep(0.6)
        second = tmux.screen()
    assert elapsed_of(first) != elapsed_of(second), "the elapsed time did not move"
    for screen in (first, second):
        block = panel_block(screen, "panel-run")
        assert [line.split()[0] for line in block[1:]] == list(PANEL_LABELS)
    assert len(first) == len(second)  # redrawn in place: the screen did not grow
    assert "\x1b" not in "".join(first)  # capture-pane shows the text; a stray sequence would show as ^[
    assert not tmux.cursor_shown()  # hidden while the panel is up

    end = tmux.wait_for(r"^__EXIT=\d", timeout=30)
    block = panel_block(end, "panel-run")
    assert re.match(r"elapsed\s+0:06 / 0:06 .*100%", block[1])
    assert block[-1].startswith("thresholds") and "all passing so far" in block[-1]
    below = end[end.index(block[-1]) + 1 :]
    assert any(line.startswith("loadgen: panel-run") for line in below)  # the summary, below the panel
    assert any(line == "Requests" for line in below)
    assert "__EXIT=0" in below
    assert tmux.cursor_shown()


def test_ctrl_c_leaves_the_terminal_as_it_was(tmux: Tmux, target: Target, tmp_path: Path) -> None:
    profile = write_profile(tmp_path / "panel-stop.toml", target.url, '[{duration = "30s", rate = 20}]')
    tmux.type(run_command(profile))
    tmux.wait_for(r"^elapsed\s+0:0[1-9]", timeout=30)
    assert not tmux.cursor_shown()
    tmux.tmux("send-keys", "-t", "t", "C-c")
    end = tmux.wait_for(r"^__EXIT=\d", timeout=30)
    assert "__EXIT=3" in end  # interrupted: the results are written, the status says it did not complete
    assert any("interrupted by the operator" in line for line in end)
    panel_block(end, "panel-stop")
    assert tmux.cursor_shown()


def test_in_a_pipe_the_progress_is_plain_lines(target: Target, tmp_path: Path) -> None:
    profile = write_profile(tmp_path / "piped.toml", target.url, STAGES)
    done = loadgen("run", str(profile), "--agents", "1", timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "\x1b" not in done.stdout + done.stderr
    progress = [line for line in done.stderr.splitlines() if re.match(r"\[\s*\d+/6 s\s+\d+%\]", line)]
    assert progress, done.stderr  # one line per 5 s when not on a terminal
    assert all(" target " in line and " p99 " in line and " agents 1/1" in line for line in progress)
    assert "loadgen: piped" in done.stdout  # the summary
    plain = loadgen("run", str(profile), "--agents", "1", "--no-panel", timeout=60)
    assert plain.returncode == 0, plain.stderr[-2000:]
    assert "\x1b" not in plain.stderr
