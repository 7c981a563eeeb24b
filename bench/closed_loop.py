"""Closed-loop throughput of one engine at a fixed number of connections (like wrk: every response starts the
next request at once). Prints one JSON line: ``{"engine", "connections", "requests", "seconds", "rps",
"errors", "cpu_us_per_request"}``; the last is this process's CPU time (user + system) over the requests,
steadier than ``rps`` on a shared machine, where the process also waits for a core.

    taskset -c 0 python bench/closed_loop.py --engine httpx --connections 100 --duration 5 --url http://...

Engines: ``fast`` and ``httpx`` (ours, driven through the Engine interface with a sink that resubmits), and
``httpx-client`` (stock ``httpx.AsyncClient.get`` from N coroutines, the baseline the issue quotes).
``--body-bytes N`` POSTs N bytes instead of a GET (ours only). An https URL is verified against ``--ca-file``
(ours only; the system's CAs without it); ``--no-resumption`` turns TLS session resumption off.
Bounded: ``--duration`` at most 60 s, then a
drain of at most 5 s. Loopback targets only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from urllib.parse import urlsplit

import uvloop

from agents.fast_engine import FastEngine
from agents.httpx_engine import HttpxEngine
from loadgen.endpoint import Tls, parse_tls
from loadgen.profile import RequestSpec


class _Resubmit:
    """A sink that starts the next request as soon as one completes, until ``stop``."""

    def __init__(self) -> None:
        self.engine: FastEngine | HttpxEngine | None = None
        self.stop = 0.0
        self.ok = 0
        self.errors: dict[str, int] = {}

    def response(self, req: int, intended: float, sent: float, done: float, status: int) -> None:
        self.ok += 1
        if done < self.stop and self.engine is not None:
            self.engine.submit(0, done)

    def error(self, req: int, intended: float, sent: float, done: float, category: str) -> None:
        self.errors[category] = self.errors.get(category, 0) + 1
        if done < self.stop and self.engine is not None:
            self.engine.submit(0, done)


async def ours(
    kind: str, url: str, connections: int, duration: float, body: bytes, tls: Tls | None = None
) -> tuple[int, dict[str, int], float]:
    sink = _Resubmit()
    cls = FastEngine if kind == "fast" else HttpxEngine
    spec = RequestSpec(name="home", method="POST" if body else "GET", path="/", body=body)
    engine = cls(url, [spec], sink, timeout=5.0, max_connections=connections, tls=tls)
    sink.engine = engine
    await engine.start()
    began = time.monotonic()
    sink.stop = began + duration
    for _ in range(connections):
        engine.submit(0, began)
    await engine.drain(sink.stop + 5.0)
    elapsed = time.monotonic() - began
    await engine.aclose()
    return sink.ok, sink.errors, elapsed


async def stock_httpx(url: str, connections: int, duration: float) -> tuple[int, dict[str, int], float]:
    import httpx

    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    ok = 0
    errors: dict[str, int] = {}
    async with httpx.AsyncClient(limits=limits, timeout=5.0) as client:
        began = time.monotonic()
        stop = began + duration

        async def user() -> None:
            nonlocal ok
            while time.monotonic() < stop:
                try:
                    response = await client.get(url + "/")
                except httpx.HTTPError as exc:
                    errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                else:
                    ok += response.status_code < 400

        await asyncio.gather(*(user() for _ in range(connections)))
        elapsed = time.monotonic() - began
    return ok, errors, elapsed


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--engine", choices=("fast", "httpx", "httpx-client"), required=True)
    parser.add_argument("--connections", type=int, required=True)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--url", required=True)
    parser.add_argument("--body-bytes", type=int, default=0, help="POST this many bytes (ours only)")
    parser.add_argument("--ca-file", help="verify an https target against this CA (ours only)")
    parser.add_argument("--no-resumption", action="store_true", help="no TLS session resumption (ours only)")
    args = parser.parse_args()
    table: dict[str, object] = {"session_resumption": not args.no_resumption}
    if args.ca_file:
        table["ca_file"] = args.ca_file
    tls = parse_tls(table)
    if urlsplit(args.url).hostname not in ("127.0.0.1", "localhost", "::1"):
        parser.error("loopback targets only")
    duration = min(args.duration, 60.0)
    if args.engine == "httpx-client":
        run = stock_httpx(args.url.rstrip("/"), args.connections, duration)
    else:
        run = ours(args.engine, args.url, args.connections, duration, b"x" * max(0, args.body_bytes), tls)
    cpu = time.process_time()
    ok, errors, elapsed = uvloop.run(run)
    cpu = time.process_time() - cpu
    print(
        json.dumps(
            {
                "engine": args.engine,
                "connections": args.connections,
                "requests": ok,
                "seconds": round(elapsed, 3),
                "rps": round(ok / elapsed, 1),
                "errors": errors,
                "cpu_us_per_request": round(1e6 * cpu / max(ok, 1), 2),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
