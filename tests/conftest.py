"""Shared fixtures: the built-in target as a real process, and running the real CLI."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent

# --- the tiers: a test without the integration mark is pure ----------------------------------------------------

_IMPURE_EVENTS = frozenset(
    {"socket.bind", "socket.connect", "subprocess.Popen", "os.kill", "os.killpg", "os.fork", "os.posix_spawn"}
)
_pure_test: list[str] = []  # the id of the running test when it is pure, else empty


def _tier_guard(event: str, args: tuple[Any, ...]) -> None:
    """An audit hook: in a pure test, binding or connecting a socket, starting a process, sending a signal or
    opening a file under /proc fails the test (raised from the hook, the operation does not happen). ZeroMQ's
    sockets bind and connect in C, out of the hook's sight: a test that binds one is marked by hand."""
    if not _pure_test:
        return
    if event in _IMPURE_EVENTS or (event == "open" and str(args[0]).startswith("/proc/")):
        raise RuntimeError(
            f"{_pure_test[0]}: {event}{args[:2]!r} in a test without the integration mark; "
            "mark it pytestmark = pytest.mark.integration (or give it a fake)"
        )


sys.addaudithook(_tier_guard)  # audit hooks stay for the life of the process: this one is gated by the flag


@pytest.fixture(autouse=True)
def _tier(request: pytest.FixtureRequest) -> Iterator[None]:
    if request.node.get_closest_marker("integration") is not None:
        yield
        return
    _pure_test.append(request.node.nodeid)
    try:
        yield
    finally:
        _pure_test.clear()


@dataclass
class Target:
    url: str
    proc: subprocess.Popen[str]

    def get(self, path: str, timeout: float = 5.0) -> bytes:
        with urllib.request.urlopen(self.url + path, timeout=timeout) as resp:  # loopback only
            body: bytes = resp.read()
            return body

    def stats(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.get("/__stats"))
        return data

    def reset(self) -> None:
        self.get("/__reset")


def start_target() -> Target:
    proc = subprocess.Popen(
        [sys.executable, "-m", "loadgen", "target", "--host", "127.0.0.1", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert "listening on " in line, line
    return Target(line.split("listening on ", 1)[1].strip(), proc)


@pytest.fixture(scope="module")
def target() -> Iterator[Target]:
    t = start_target()
    try:
        yield t
    finally:
        t.proc.terminate()
        t.proc.wait(timeout=10)
        assert t.proc.stdout is not None
        t.proc.stdout.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def loadgen(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run the real CLI and wait for it (bounded)."""
    return subprocess.run(
        [sys.executable, "-m", "loadgen", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        check=False,
    )


def loadgen_bg(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "loadgen", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def write_profile(
    path: Path,
    target: str,
    stages: str,
    *,
    arrival: str = "constant",
    extra: str = "",
    requests: str = '[[requests]]\npath = "/"\n',
) -> Path:
    path.write_text(
        f'name = "{path.stem}"\ntarget = "{target}"\n{extra}\n[load]\narrival = "{arrival}"\n'
        f'timeout = "5s"\nstages = {stages}\n\n{requests}'
    )
    return path


def with_open_files(limit: int, module: str = "loadgen") -> str:
    """Code for ``python -c`` that sets the open-file limit (soft and hard) to ``limit`` and then becomes
    ``python -m module`` with the arguments that follow (no preexec_fn: unsafe in a threaded test process)."""
    return (
        "import os, resource, sys; "
        f"resource.setrlimit(resource.RLIMIT_NOFILE, ({limit}, {limit})); "
        f"os.execv(sys.executable, [sys.executable, '-m', {module!r}, *sys.argv[1:]])"
    )


def read_results(out: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((out / "results.json").read_text())
    return data


class Watched:
    """A background process whose stderr lines are collected as they come, to wait for a line."""

    def __init__(self, *args: str) -> None:
        import threading

        self.proc = subprocess.Popen(
            [sys.executable, "-m", "loadgen", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.lines: list[str] = []
        self.out: list[str] = []
        self._threads = [
            threading.Thread(target=self._pump, args=(self.proc.stderr, self.lines), daemon=True),
            threading.Thread(target=self._pump, args=(self.proc.stdout, self.out), daemon=True),
        ]
        for t in self._threads:
            t.start()

    @staticmethod
    def _pump(stream: Any, into: list[str]) -> None:
        for line in stream:
            into.append(line)

    def wait_for(self, text: str, timeout: float = 30.0) -> str:
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if text in line:
                    return line
            if self.proc.poll() is not None and not any(text in x for x in self.lines):
                time.sleep(0.2)
                if not any(text in x for x in self.lines):
                    break
            time.sleep(0.05)
        raise AssertionError(f"{text!r} not seen; stderr so far:\n{''.join(self.lines)}")

    def wait(self, timeout: float = 60.0) -> int:
        code = self.proc.wait(timeout=timeout)
        for t in self._threads:
            t.join(timeout=5)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
        return code

    def stderr(self) -> str:
        return "".join(self.lines)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.wait(timeout=10)
