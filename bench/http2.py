"""HTTP/2 on one core: our HTTP/2 engine against h2load and httpx (``http2=True``), same connection and
streams per connection, closed loop (each answer sends the next request).

    .venv/bin/python -m bench.http2            # about 2 minutes; one JSON line per trial, then a table

``make bench`` runs it too (section 12 of docs/benchmarks.md).

nginx (one worker, pinned to core 1; ``http2_max_concurrent_streams 128``, ``return 200 "ok"``, access log
off) listens for h2c (HTTP/2 with prior knowledge) and for HTTP/2 over TLS (ALPN, a self-signed certificate
made here, not verified by any of the generators). Each generator runs pinned to core 0 on one connection
with 1, 10 and 100 streams: h2load ``-c 1 -m N``; ours through :func:`one` in a process of its own; httpx
with N tasks on an ``AsyncClient(http1=False, http2=True)`` limited to one connection (httpx's HTTP/2 is
``h2``'s state machine, the base the engine started from). Trials go in rounds, the order reversed every
other round, so a slow minute of the shared machine falls on all of them. Traffic goes only to 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.lib import GEN_CORE, ON_TARGET_CORE, PY, free_port, log, run_beside_target, self_signed
from bench.nginx import running_nginx

REQUESTS = 50_000
HTTPX_REQUESTS = 5_000  # httpx is ten times slower: fewer requests for a trial of similar length
STREAMS = (1, 10, 100)
ROUNDS = 2

HTTP = """\
  access_log off;
  keepalive_requests 100000000;
  http2_max_concurrent_streams 128;
  ssl_protocols TLSv1.3;
  ssl_certificate {dir}/cert.pem;
  ssl_certificate_key {dir}/key.pem;
  server {{ listen 127.0.0.1:{h2c} http2; location / {{ return 200 "ok"; }} }}
  server {{ listen 127.0.0.1:{tls} ssl http2; location / {{ return 200 "ok"; }} }}
"""


@contextlib.contextmanager
def h2_nginx() -> Iterator[dict[str, str]]:
    """nginx as in the module docstring; yields its URLs by name (``h2c``, ``tls``)."""
    with tempfile.TemporaryDirectory(prefix="loadgen-bench-h2-") as name:
        folder = Path(name)
        self_signed(folder)
        ports = {"h2c": free_port(), "tls": free_port()}
        with running_nginx(folder, HTTP.format(dir=folder, **ports), ports.values(), prefix=ON_TARGET_CORE):
            yield {"h2c": f"http://127.0.0.1:{ports['h2c']}/", "tls": f"https://127.0.0.1:{ports['tls']}/"}


# --- the generators, each in a process of its own pinned to the generator's core


class _Closed:
    """A sink that sends the next request from each answer, until ``total`` were sent."""

    def __init__(self, total: int) -> None:
        from agents.h2_engine import H2Engine

        self.total = total
        self.sent = self.ok = self.failed = 0
        self.engine: H2Engine | None = None
        self.done = asyncio.get_running_loop().create_future()

    def next(self) -> None:
        assert self.engine is not None
        if self.sent < self.total:
            self.sent += 1
            self.engine.submit(0, 0.0)
        elif self.ok + self.failed == self.total and not self.done.done():
            self.done.set_result(None)

    def response(self, req: int, intended: float, sent: float, done: float, status: int) -> None:
        self.ok += 1
        self.next()

    def error(self, req: int, intended: float, sent: float, done: float, category: str) -> None:
        self.failed += 1
        self.next()


async def ours(url: str, total: int, streams: int) -> dict[str, Any]:
    """Our engine on one connection with ``streams`` streams: requests/s, CPU µs per request, failures."""
    from agents.h2_engine import H2Engine
    from loadgen.endpoint import Tls
    from loadgen.profile import RequestSpec

    sink = _Closed(total)
    tls = Tls(verify=False) if url.startswith("https") else None
    engine = H2Engine(
        url, [RequestSpec("/")], sink, timeout=10.0, max_connections=1, max_streams=streams, tls=tls
    )
    sink.engine = engine
    await engine.start()
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(streams):
        sink.next()
    await sink.done
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    await engine.aclose()
    return {"rps": total / wall, "cpu_us_per_request": cpu / total * 1e6, "failed": sink.failed}


async def httpx_h2(url: str, total: int, streams: int) -> dict[str, Any]:
    """httpx with HTTP/2 on one connection, ``streams`` tasks each sending its next request on an answer."""
    import httpx

    limits = httpx.Limits(max_connections=1)
    async with httpx.AsyncClient(http1=False, http2=True, limits=limits, verify=False) as client:
        await client.get(url)
        sent = failed = 0

        async def worker() -> None:
            nonlocal sent, failed
            while sent < total:
                sent += 1
                try:
                    await client.get(url)
                except httpx.HTTPError:
                    failed += 1

        wall, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(worker() for _ in range(streams)))
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"rps": total / wall, "cpu_us_per_request": cpu / total * 1e6, "failed": failed}


def one(generator: str, url: str, total: int, streams: int) -> None:
    """Run one trial in this process (``python -m bench.http2 --one ...``) and print its JSON line."""
    import uvloop

    measure = ours if generator == "loadgen" else httpx_h2
    print(json.dumps(uvloop.run(measure(url, total, streams))), flush=True)


def _in_process(generator: str, url: str, total: int, streams: int) -> dict[str, Any]:
    cmd = [
        "taskset",
        "-c",
        GEN_CORE,
        PY,
        "-m",
        "bench.http2",
        "--one",
        generator,
        url,
        str(total),
        str(streams),
    ]
    done, cpu = run_beside_target(cmd, timeout=300)
    try:
        result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        result = {"rps": 0.0, "failed": -1, "error": done.stderr[-300:]}
    return {**result, "target_busy": cpu.get("target_busy", 0.0), "stolen": cpu.get("stolen", 0.0)}


def _h2load(url: str, total: int, streams: int) -> dict[str, Any]:
    cmd = ["taskset", "-c", GEN_CORE, "h2load", "-n", str(total), "-c", "1", "-m", str(streams), url]
    done, cpu = run_beside_target(cmd, timeout=300)
    rate = re.search(r"finished in [^,]+, ([\d.]+) req/s", done.stdout)
    failed = re.search(r"requests: .* (\d+) failed", done.stdout)
    rps = float(rate.group(1)) if rate else 0.0
    share = cpu.get("cpu", 0.0)  # of a core, over the command's wall time
    return {
        "rps": rps,
        "cpu_us_per_request": 1e6 * share / rps if rps else 0.0,
        "failed": int(failed.group(1)) if failed else -1,
        "target_busy": cpu.get("target_busy", 0.0),
        "stolen": cpu.get("stolen", 0.0),
    }


def measure(rounds: int = ROUNDS, requests: int = REQUESTS) -> list[dict[str, Any]]:
    """Every trial of the module docstring, ``rounds`` times; one row per trial and round (also printed)."""
    rows: list[dict[str, Any]] = []
    with h2_nginx() as urls:
        trials = [
            (gen, transport, streams)
            for transport, streams_list in (("h2c", STREAMS), ("tls", (100,)))
            for streams in streams_list
            for gen in ("loadgen", "h2load", "httpx")
        ]
        for k in range(rounds):
            for gen, transport, streams in trials if k % 2 == 0 else list(reversed(trials)):
                url = urls[transport]
                log(f"http2 bench: {gen}, {transport}, {streams} streams (round {k + 1})")
                if gen == "h2load":
                    result = _h2load(url, requests, streams)
                else:
                    total = requests if gen == "loadgen" else HTTPX_REQUESTS
                    result = _in_process(gen, url, total, streams)
                row = {"generator": gen, "transport": transport, "streams": streams, "round": k + 1, **result}
                rows.append(row)
                print(json.dumps(row), flush=True)
    return rows


def table(rows: list[dict[str, Any]]) -> list[str]:
    """The rows as a Markdown table, one line per transport and streams: each generator's requests/s (the
    range over rounds) and CPU µs per request (its median), and ours against h2load."""
    out = [
        "| transport | streams | loadgen req/s | its CPU µs/request | h2load req/s | h2load CPU µs/request "
        "| httpx req/s | httpx CPU µs/request | loadgen / h2load | loadgen / httpx |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    keys = sorted({(r["transport"], r["streams"]) for r in rows}, key=lambda k: (k[0] != "h2c", k[1]))
    for transport, streams in keys:
        cells: dict[str, tuple[str, str, float]] = {}
        for gen in ("loadgen", "h2load", "httpx"):
            mine = [
                r for r in rows if (r["generator"], r["transport"], r["streams"]) == (gen, transport, streams)
            ]
            rates = sorted(r["rps"] for r in mine)
            cpus = sorted(r.get("cpu_us_per_request", 0.0) for r in mine)
            if not rates:
                cells[gen] = ("", "", 0.0)
                continue
            span = f"{rates[0]:,.0f}" if len(rates) == 1 else f"{rates[0]:,.0f}–{rates[-1]:,.0f}"
            median = cpus[len(cpus) // 2]
            cells[gen] = (span, f"{median:,.1f}", sum(rates) / len(rates))
        ours_rate = cells["loadgen"][2]
        vs = [f"{ours_rate / cells[g][2]:.2f}x" if cells[g][2] else "" for g in ("h2load", "httpx")]
        figures = [cell for gen in ("loadgen", "h2load", "httpx") for cell in cells[gen][:2]]
        out.append(f"| {transport} | {streams} | " + " | ".join([*figures, *vs]) + " |")
    return out


def main() -> None:
    if len(sys.argv) == 6 and sys.argv[1] == "--one":
        one(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
        return
    rows = measure()
    print("\n" + "\n".join(table(rows)))


if __name__ == "__main__":
    main()
