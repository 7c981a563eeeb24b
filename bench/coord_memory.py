"""The coordinator's memory over a long run, deterministically: no agents, no sleeping, a fake clock.

    python bench/coord_memory.py --seconds 28800 --out /dev/shm/coord-memory [--tracemalloc]

Drives the real :class:`coordinator.coordinator.Coordinator` through ``--seconds`` simulated seconds of
``profiles/soak-8h.toml``: every second each simulated agent's :class:`loadgen.wire.Interval` (4 request
names, histograms of ``--rate`` samples, a few errors) goes through the coordinator's interval handler, the
second is closed, the progress line is built, and every ``--checkpoint-every`` simulated seconds the
checkpoint is written (``results.json`` every ``--results-every``) into ``--out``, as the run loop does.
The control socket is bound on 127.0.0.1 but nothing connects to it. At every hour (every
``--report-every`` simulated seconds) it prints one JSON line: traced memory (with ``--tracemalloc``) and
RSS, and at hours 1 and the last the time one ``state.msgpack`` and one ``results.json`` write take (the
median of 5). Memory per hour of run is the difference between the
last hour and hour 1 divided by the hours between them. The last line is the end of the run: reading the
whole series back for the reports (time, and with ``--tracemalloc`` the memory it takes while held).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import resource
import statistics
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

from coordinator.coordinator import Coordinator, CoordinatorConfig
from coordinator.results import AgentInfo
from loadgen import histogram, wire
from loadgen.profile_file import load_profile


class FakeClock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def variants(rng: random.Random, samples: int, count: int, median_s: float) -> list[bytes]:
    mu = math.log(median_s)
    out = []
    for _ in range(count):
        h = histogram.new_histogram()
        for _ in range(samples):
            h.record_value(histogram.clamp_us(rng.lognormvariate(mu, 0.6)))
        out.append(histogram.encode_wire(h))
    return out


def timed(fn: Any, n: int = 5) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=int, default=28800)
    ap.add_argument("--agents", type=int, default=1)
    ap.add_argument("--rate", type=int, default=100, help="requests per second per agent")
    ap.add_argument("--checkpoint-every", type=int, default=60, help="simulated seconds (the run: 2)")
    ap.add_argument("--results-every", type=int, default=300, help="simulated seconds (the run: 10)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--tracemalloc", action="store_true")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--report-every", type=int, default=3600, help="simulated seconds between lines")
    args = ap.parse_args()

    histogram.keep_memory_flat()
    rng = random.Random(args.seed)
    profile = load_profile(Path(__file__).resolve().parent.parent / "profiles" / "soak-8h.toml")
    names = [r.name for r in profile.requests]
    per_name = max(1, args.rate // len(names))
    lat = variants(rng, per_name, 16, 0.004)
    svc = variants(rng, per_name, 16, 0.003)
    lag = variants(rng, args.rate, 16, 0.0002)

    clock = FakeClock()
    config = CoordinatorConfig(bind="tcp://127.0.0.1:0", expect_agents=args.agents, out_dir=args.out)
    coord = Coordinator(profile, config, clock=clock, wall=lambda: 1.8e9 + clock.t)
    coord.bind()
    ids = [f"sim-{i}" for i in range(args.agents)]
    for a in ids:
        coord.agents[a] = AgentInfo(a, "sim", 1, state="active", share=1 / args.agents)
    coord._phase = "run"
    coord._start_at = clock.t
    coord._started_wall = 1.8e9 + clock.t
    coord.events.append({"t": 0.0, "type": "run_started", "agents": len(ids)})
    if args.tracemalloc:
        tracemalloc.start()

    def checkpoint(results: bool) -> None:
        coord._checkpoint(results=results)

    try:
        for s in range(args.seconds):
            for k, a in enumerate(ids):
                v = (s + k) % 16
                msg = wire.Interval(
                    index=s,
                    first=0,
                    scheduled=per_name * len(names),
                    dropped=0,
                    in_flight=3,
                    names={
                        n: [
                            per_name,
                            per_name - (j == 2 and s % 7 == 0),
                            int(j == 2 and s % 7 == 0),
                            {"http_500": 1} if j == 2 and s % 7 == 0 else {},
                            lat[(v + j) % 16],
                            svc[(v + j) % 16],
                        ]
                        for j, n in enumerate(names)
                    },
                    lag=lag[v],
                    cpu=0.2 + 0.01 * (s % 10),
                )
                decoded = wire.decode(wire.encode(msg), peer=a)  # as it arrives off the socket
                assert isinstance(decoded, wire.Interval)
                coord._on_interval(a, decoded)
                coord._last_heard[a] = clock.t
            clock.t = coord._start_at + s + 2.0  # a second closes once it is over and every agent reported it
            coord._close_intervals(s)
            coord._progress_line(clock.t)
            if (s + 1) % args.checkpoint_every == 0:
                checkpoint((s + 1) % args.results_every == 0)
            if (s + 1) % args.report_every == 0 or s + 1 == args.seconds:
                hour = (s + 1) / 3600
                row: dict[str, Any] = {"hour": round(hour, 3), "rss_mib": round(rss_mib(), 2)}
                if args.tracemalloc:
                    row["traced_mib"] = round(tracemalloc.get_traced_memory()[0] / 2**20, 3)
                ahead = max((len(t.ahead) for t in coord.agg.agents.values()), default=0)
                row["events"] = len(coord.events)
                row["agent_ahead_max"] = ahead
                if hour in (1.0, args.seconds / 3600):
                    row["state_write_ms"] = round(timed(lambda: checkpoint(False)), 2)
                    row["state_plus_results_write_ms"] = round(timed(lambda: checkpoint(True)), 2)
                    row["state_bytes"] = (args.out / "state.msgpack").stat().st_size
                    row["results_bytes"] = (args.out / "results.json").stat().st_size
                print(json.dumps(row), flush=True)
        # The end of the run: the reports need the whole series, read back from the spool once.
        before = tracemalloc.get_traced_memory()[0] if args.tracemalloc else 0
        t0 = time.perf_counter()
        series = coord.spool.read() if hasattr(coord, "spool") else list(getattr(coord, "intervals"))  # noqa: B009
        end: dict[str, Any] = {"end_read_back_ms": round((time.perf_counter() - t0) * 1000.0, 1)}
        end["seconds"] = len(series)
        end["rss_mib"] = round(rss_mib(), 2)
        if args.tracemalloc:
            end["series_mib"] = round((tracemalloc.get_traced_memory()[0] - before) / 2**20, 3)
        print(json.dumps(end), flush=True)
    finally:
        coord.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
