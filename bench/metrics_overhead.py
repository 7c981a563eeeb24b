"""The coordinator's CPU with ``--metrics-bind`` on (and scraped every second) against off, side by side.

    .venv/bin/python -m bench.metrics_overhead --agents 200 1000 --seconds 40 --rounds 2

For each agent count, runs the real coordinator process with simulated agents (:mod:`bench.coord_sim`, 4
processes, 10 request names, 1,000 requests/s per agent) once without metrics and once with them, in
alternating order round by round (so a drift of the machine falls on both), and reads the coordinator's CPU
share over the run's seconds (after the first). With metrics on, a scraper reads ``/metrics`` every second as
Prometheus would, and the live page's feed (``/live.json``) as an open page does. Prints one JSON line per
run and a table. Sends nothing but loopback control traffic.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench import lib

PROCS = 4
RATE_PER_AGENT = 1000


def one_run(agents: int, seconds: int, metrics: bool, work: Path) -> dict[str, Any]:
    out = work / f"sim-{agents}-{'on' if metrics else 'off'}-{time.monotonic_ns()}"
    out.mkdir(parents=True)
    profile = lib.write_profile(
        out / "sim.toml", "http://127.0.0.1:9", agents * RATE_PER_AGENT, seconds, names=10
    )
    endpoint = f"tcp://127.0.0.1:{lib.free_port()}"
    port = lib.free_port()
    cmd = [
        *lib.LOADGEN,
        *("coordinator", str(profile), "--bind", endpoint, "--expect-agents", str(agents)),
        *("--out", str(out), "--join-timeout", "120"),
        *(("--metrics-bind", f"127.0.0.1:{port}") if metrics else ()),
    ]
    starts: list[float] = []
    scrapes: list[float] = []
    done = threading.Event()

    def scraper() -> None:
        """Prometheus every second, and a live page polling its feed as the page does (what it holds of the
        curve: the last point and the span)."""
        url = f"http://127.0.0.1:{port}/metrics"
        held: tuple[int, int] | None = None  # (since, span) of the page's curve
        while not done.wait(1.0):
            t0 = time.monotonic()
            try:
                with urllib.request.urlopen(url, timeout=5) as resp:  # loopback only
                    resp.read()
                scrapes.append(time.monotonic() - t0)
                query = "" if held is None else f"?since={held[0]}&span={held[1]}"
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/live.json{query}", timeout=5) as resp:
                    feed = json.loads(resp.read())
                points = feed.get("points") or []
                if points:
                    held = (int(points[-1]["t"]), int(feed.get("span", 1)))
            except (OSError, ValueError):
                pass

    with open(out / "coordinator.log", "w") as log:
        coord = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        sims = lib.start_sim_agents(endpoint, agents, seconds, RATE_PER_AGENT, PROCS)

        def reader(proc: subprocess.Popen[str]) -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                if '"started"' in line:
                    starts.append(json.loads(line)["start_at"])

        threads = [threading.Thread(target=reader, args=(p,), daemon=True) for p in sims]
        if metrics:
            threads.append(threading.Thread(target=scraper, daemon=True))
        for t in threads:
            t.start()
        began = time.monotonic()
        try:
            with lib.Sampler([coord.pid], every=1.0) as sampler:
                coord.wait(timeout=seconds + 240)
        finally:
            done.set()
            lib.wait_or_stop(sims)
            lib.stop(coord)
    start_at = min(starts) if starts else began
    results = json.loads((out / "results.json").read_text())
    return {
        "agents": agents,
        "metrics": metrics,
        "seconds": seconds,
        "cpu_run": sampler.cpu_share(coord.pid, start_at + 1.0, start_at + seconds),
        "ok": results["totals"]["ok"],
        "expected_ok": agents * RATE_PER_AGENT * seconds,
        "scrapes": len(scrapes),
        "scrape_ms_max": round(1000 * max(scrapes), 1) if scrapes else None,
        "exit": coord.returncode,
    }


def _runs(shares: list[float]) -> str:
    return ", ".join(f"{x:.3f}" for x in shares)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--agents", type=int, nargs="+", default=[200, 1000])
    parser.add_argument("--seconds", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="loadgen-metrics-bench-") as tmp:
        for agents in args.agents:
            for r in range(args.rounds):
                for metrics in (False, True) if r % 2 == 0 else (True, False):
                    row = one_run(agents, args.seconds, metrics, Path(tmp))
                    print(json.dumps(row), flush=True)
                    rows.append(row)
    print("\n| agents | metrics off: CPU (share of a core) | metrics on | difference |")
    print("|---:|---|---|---:|")
    for agents in args.agents:
        off = [r["cpu_run"] for r in rows if r["agents"] == agents and not r["metrics"] and r["cpu_run"]]
        on = [r["cpu_run"] for r in rows if r["agents"] == agents and r["metrics"] and r["cpu_run"]]
        if off and on:
            a, b = sum(off) / len(off), sum(on) / len(on)
            print(
                f"| {agents} | {a:.3f} ({_runs(off)}) | {b:.3f} ({_runs(on)}) | {100 * (b - a) / a:+.1f}% |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
