"""HTTPS on one core: our engines against wrk over TLS, and new-connection handshakes per second.

    .venv/bin/python -m bench.tls            # about 2 minutes; prints one JSON line per trial and a table

``make bench`` runs it too (section 10 of docs/benchmarks.md).

nginx (one worker, pinned to core 1) serves ``return 200 "ok"`` over TLS 1.3 with a self-signed P-256
certificate made here: on one port with keep-alive, on another closing every connection after its response
(``keepalive_timeout 0``: every request is a new connection and a new handshake), and plain HTTP on a third
for comparison. The generators run closed loop pinned to core 0 (wrk ``-t1``; ours through
``bench/closed_loop.py``). nginx logs ``$ssl_session_reused`` on the closing port, so each handshake trial
also says which share of its handshakes resumed a session. Traffic goes only to 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import json
import re
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.lib import BENCH, GEN_CORE, ON_TARGET_CORE, PY, free_port, log, run_beside_target, self_signed
from bench.nginx import running_nginx

SECONDS = 10
CONNECTIONS = 50
LOG_FLUSH = 1  # seconds nginx may hold the resumption log's lines in its buffer

HTTP = """\
  access_log off;
  keepalive_requests 100000000;
  keepalive_timeout 300s;
  ssl_protocols TLSv1.2 TLSv1.3;
  ssl_session_cache shared:tls:10m;
  ssl_certificate {dir}/cert.pem;
  ssl_certificate_key {dir}/key.pem;
  log_format reuse '$ssl_session_reused';
  server {{ listen 127.0.0.1:{keep} ssl; location / {{ return 200 "ok"; }} }}
  server {{
    listen 127.0.0.1:{close} ssl;
    keepalive_timeout 0;
    access_log {dir}/reuse.log reuse buffer=64k flush={flush}s;
    location / {{ return 200 "ok"; }}
  }}
  server {{ listen 127.0.0.1:{plain}; location / {{ return 200 "ok"; }} }}
"""


@contextlib.contextmanager
def tls_nginx() -> Iterator[tuple[Path, dict[str, int]]]:
    """nginx as in the module docstring; yields its folder (``cert.pem`` is the CA to trust) and ports."""
    with tempfile.TemporaryDirectory(prefix="loadgen-bench-tls-") as name:
        folder = Path(name)
        self_signed(folder)
        ports = {"keep": free_port(), "close": free_port(), "plain": free_port()}
        http = HTTP.format(dir=folder, flush=LOG_FLUSH, **ports)
        with running_nginx(folder, http, ports.values(), prefix=ON_TARGET_CORE, worker_connections=4096):
            yield folder, ports


def wrk(url: str, connections: int, seconds: int, *extra: str) -> dict[str, Any]:
    cmd = ["taskset", "-c", GEN_CORE, "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", *extra, url + "/"]
    done, cpu = run_beside_target(cmd, timeout=seconds + 30)
    match = re.search(r"Requests/sec:\s+([\d.]+)", done.stdout)
    errors = re.search(r"Socket errors: (.*)", done.stdout)
    return {
        "cmd": " ".join(cmd).replace(url, "URL"),
        "rps": float(match.group(1)) if match else 0.0,
        "errors": errors.group(1) if errors else "",
        **cpu,
    }


def ours(engine: str, url: str, connections: int, ca: Path, seconds: int, *extra: str) -> dict[str, Any]:
    """``bench/closed_loop.py`` (its TLS options as given) pinned beside the target."""
    args = [
        *("--engine", engine, "--connections", str(connections), "--duration", str(seconds), "--url", url),
        *(("--ca-file", str(ca)) if url.startswith("https") else ()),
        *extra,
    ]
    done, cpu = run_beside_target(
        ["taskset", "-c", GEN_CORE, PY, str(BENCH / "closed_loop.py"), *args], timeout=seconds + 60
    )
    try:
        result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        result = {"rps": 0.0, "errors": {"crashed": done.stderr[-300:]}}
    shown = " ".join(args).replace(url, "URL").replace(str(ca), "CA")
    return result | cpu | {"cmd": f"taskset -c {GEN_CORE} python bench/closed_loop.py {shown}"}


def resumed_share(folder: Path, before: int) -> tuple[float | None, int]:
    """The share of the handshakes logged since line ``before`` that resumed a session, and the line count."""
    path = folder / "reuse.log"
    lines = path.read_text().split() if path.exists() else []
    new = lines[before:]
    return (new.count("r") / len(new) if new else None), len(lines)


def measure(seconds: int = SECONDS) -> list[dict[str, Any]]:
    """Every trial of the module docstring, ``seconds`` long; one row each (also printed as JSON)."""
    rows: list[dict[str, Any]] = []
    with tls_nginx() as (folder, ports):
        ca = folder / "cert.pem"
        keep, close, plain = (
            f"{s}://127.0.0.1:{ports[k]}"
            for s, k in (("https", "keep"), ("https", "close"), ("http", "plain"))
        )
        trials: list[tuple[str, Any]] = [
            ("wrk, HTTP, keep-alive", lambda: wrk(plain, CONNECTIONS, seconds)),
            ("fast, HTTP, keep-alive", lambda: ours("fast", plain, CONNECTIONS, ca, seconds)),
            ("wrk, HTTPS, keep-alive", lambda: wrk(keep, CONNECTIONS, seconds)),
            ("fast, HTTPS, keep-alive", lambda: ours("fast", keep, CONNECTIONS, ca, seconds)),
            ("httpx, HTTPS, keep-alive", lambda: ours("httpx", keep, CONNECTIONS, ca, seconds)),
            ("wrk, HTTPS, a connection per request", lambda: wrk(close, 10, seconds)),
            ("fast, HTTPS, a connection per request", lambda: ours("fast", close, 10, ca, seconds)),
            (
                "fast, HTTPS, a connection per request, no resumption",
                lambda: ours("fast", close, 10, ca, seconds, "--no-resumption"),
            ),
        ]
        _, lines = resumed_share(folder, 0)
        for name, trial in trials:
            log(f"tls bench: {name}")
            result = trial()
            time.sleep(LOG_FLUSH + 0.5)  # nginx's buffered log lines of this trial, all of them
            share, lines = resumed_share(folder, lines)
            row = {"trial": name, **result, "resumed": share}
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def table(rows: list[dict[str, Any]]) -> list[str]:
    """The rows as a Markdown table: the rate, the generator's CPU (a share of its core, and per request:
    ours its process's own CPU over its requests, wrk its share of a core over its rate), how busy the
    target's core was, and the share of handshakes that resumed a session (the closing port only)."""
    out = [
        "| trial | requests/s | generator CPU | CPU µs per request | target core busy | resumed | command |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        cpu = r.get("cpu", 0.0)
        per_request = r.get("cpu_us_per_request") or (1e6 * cpu / r["rps"] if r.get("rps") else 0.0)
        resumed = "" if r.get("resumed") is None else f"{r['resumed']:.0%}"
        busy = r.get("target_busy", 0.0)
        out.append(
            f"| {r['trial']} | {r.get('rps', 0.0):,.0f} | {cpu:.0%} | {per_request:,.1f} | {busy:.0%} "
            f"| {resumed} | `{r.get('cmd', '')}` |"
        )
    return out


def main() -> None:
    rows = measure()
    print("\n" + "\n".join(table(rows)))


if __name__ == "__main__":
    main()
