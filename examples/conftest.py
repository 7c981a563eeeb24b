"""Fixtures for the example load tests: the built-in target, started for the session.

In your own CI, point the profiles at the service under test instead (a staging URL, or a container started
by the pipeline) and drop this fixture.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session")
def target() -> Iterator[str]:
    """The base URL of loadgen's built-in target on a free loopback port."""
    with subprocess.Popen(
        [sys.executable, "-m", "loadgen", "target", "--port", "0"], stdout=subprocess.PIPE, text=True
    ) as proc:  # closes its output pipe at the end
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert "listening on " in line, f"the built-in target did not start: {line!r}"
            yield line.split("listening on ", 1)[1].strip()
        finally:
            proc.terminate()
            proc.wait(timeout=10)
