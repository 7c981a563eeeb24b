"""Agent processes on this machine, for ``loadgen run`` and the library's ``loadgen.run(agents=N)``.

Each is ``python -m loadgen agent`` in its own session (so a Ctrl-C in the terminal reaches only the
coordinator, which stops them cleanly and still writes the results). Whatever happens to the caller, none
outlives it: leaving :func:`local_agents` waits for them to finish and kills those that do not. They write
to the caller's terminal, or, given ``output``, hand it each line (the live panel prints them above
itself, where a process of its own would write over it).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

JOIN_WAIT = 60.0  # how long a local agent waits for its coordinator before giving up


class LocalAgents:
    """``n`` agent processes connected to ``endpoint``."""

    def __init__(self, endpoint: str, n: int, output: Callable[[str], None] | None = None) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        self._readers: list[threading.Thread] = []
        pipe = subprocess.PIPE if output is not None else None
        try:
            for _ in range(n):
                self.procs.append(
                    subprocess.Popen(
                        [
                            sys.executable,
                            "-m",
                            "loadgen",
                            "agent",
                            "--connect",
                            endpoint,
                            "--wait",
                            f"{JOIN_WAIT:g}",
                        ],
                        env={**os.environ, "PYTHONUNBUFFERED": "1"},
                        start_new_session=True,
                        stdout=pipe,
                        stderr=subprocess.STDOUT if output is not None else None,
                    )
                )
                if output is not None:
                    self._readers.append(_relay(self.procs[-1], output))
        except BaseException:
            self.kill()
            raise

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def wait(self, timeout: float) -> None:
        """Give the agents ``timeout`` seconds in all to leave by themselves, then kill what is left."""
        deadline = time.monotonic() + timeout
        for p in self.procs:
            try:
                p.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                break
        self.kill()

    def kill(self) -> None:
        """Kill every agent still running and reap them all. Safe to call more than once."""
        for p in self.procs:
            if p.poll() is None:
                p.kill()
        for p in self.procs:
            p.wait()
        for reader in self._readers:  # every line written before the caller goes on
            reader.join(timeout=5.0)


def _relay(proc: subprocess.Popen[bytes], output: Callable[[str], None]) -> threading.Thread:
    """A thread that hands each line ``proc`` writes to ``output`` until the process closes its end."""

    def relay() -> None:
        assert proc.stdout is not None
        with proc.stdout:
            for raw in proc.stdout:
                output(raw.decode(errors="replace").rstrip("\n"))

    thread = threading.Thread(target=relay, name=f"agent-{proc.pid}-output", daemon=True)
    thread.start()
    return thread


@contextmanager
def local_agents(
    endpoint: str, n: int, *, leave_within: float = 15.0, output: Callable[[str], None] | None = None
) -> Iterator[LocalAgents]:
    """Start ``n`` local agents; on the way out give them ``leave_within`` seconds, then kill the rest."""
    agents = LocalAgents(endpoint, n, output)
    try:
        yield agents
    finally:
        agents.wait(leave_within)
