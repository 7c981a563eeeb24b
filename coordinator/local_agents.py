"""Agent processes on this machine, for ``loadgen run`` and the library's ``loadgen.run(agents=N)``.

Each is ``python -m loadgen agent`` in its own session (so a Ctrl-C in the terminal reaches only the
coordinator, which stops them cleanly and still writes the results). Whatever happens to the caller, none
outlives it: leaving :func:`local_agents` waits for them to finish and kills those that do not.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

JOIN_WAIT = 60.0  # how long a local agent waits for its coordinator before giving up


class LocalAgents:
    """``n`` agent processes connected to ``endpoint``."""

    def __init__(self, endpoint: str, n: int) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
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
                    )
                )
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


@contextmanager
def local_agents(endpoint: str, n: int, *, leave_within: float = 15.0) -> Iterator[LocalAgents]:
    """Start ``n`` local agents; on the way out give them ``leave_within`` seconds, then kill the rest."""
    agents = LocalAgents(endpoint, n)
    try:
        yield agents
    finally:
        agents.wait(leave_within)
