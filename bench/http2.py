"""HTTP/2 throughput on one core: the HTTP/2 engine (h2 over asyncio.Protocol on uvloop) against h2load, with
the same connections and streams per connection, closed loop (each answer sends the next request), against a
running h2c server (nginx: ``listen ... http2``).

    python bench/http2.py http://127.0.0.1:PORT/ [requests]

Prints one line per streams-per-connection setting (1, 10, 100 on 1 connection): requests/s and the
engine's CPU per request. Run it pinned to one core (``taskset -c 1``) with the server on another.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import time

import uvloop

from agents.h2_engine import H2Engine
from loadgen.profile import RequestSpec


class Closed:
    """A sink that sends the next request from each answer, until ``total`` were sent."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.sent = 0
        self.ok = 0
        self.failed = 0
        self.engine: H2Engine | None = None
        self.done = asyncio.get_running_loop().create_future()

    def _next(self) -> None:
        assert self.engine is not None
        if self.sent < self.total:
            self.sent += 1
            self.engine.submit(0, 0.0)
        elif self.ok + self.failed == self.total and not self.done.done():
            self.done.set_result(None)

    def response(self, req: int, intended: float, sent: float, done: float, status: int) -> None:
        self.ok += 1
        self._next()

    def error(self, req: int, intended: float, sent: float, done: float, category: str) -> None:
        self.failed += 1
        self._next()


async def ours(url: str, total: int, streams: int) -> tuple[float, float, int]:
    """(requests/s, CPU µs per request, failures) of the engine."""
    sink = Closed(total)
    engine = H2Engine(url, [RequestSpec("/")], sink, timeout=10.0, max_connections=1, max_streams=streams)
    sink.engine = engine
    await engine.start()
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(streams):
        sink._next()
    await sink.done
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    await engine.aclose()
    return total / wall, cpu / total * 1e6, sink.failed


def h2load(url: str, total: int, streams: int) -> float:
    out = subprocess.run(
        ["h2load", "-n", str(total), "-c", "1", "-m", str(streams), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    line = next(line for line in out.splitlines() if line.startswith("finished in"))
    return float(line.split(",")[1].split()[0])


def main() -> None:
    url = sys.argv[1]
    total = int(sys.argv[2]) if len(sys.argv) > 2 else 50_000
    for streams in (1, 10, 100):
        rate, cpu_us, failed = uvloop.run(ours(url, total, streams))
        theirs = h2load(url, total, streams) if shutil.which("h2load") else float("nan")
        print(
            f"streams {streams:>3}: loadgen {rate:>9,.0f}/s ({cpu_us:.1f} µs CPU/request, {failed} failed)"
            f"   h2load {theirs:>9,.0f}/s"
        )


if __name__ == "__main__":
    main()
