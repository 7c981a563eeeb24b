"""The coordinator's memory over a long run, deterministically: simulated agents, no sockets, a fake clock.

    python -m bench.coord_memory --seconds 28800 --out /dev/shm/coord-memory [--tracemalloc]

Runs the real :class:`coordinator.coordinator.Coordinator` (``run()``, through its public seams: the
in-memory transport, a fake clock) over the first ``--seconds`` of ``profiles/soak-8h.toml``, with
``--agents`` agents simulated synchronously in the network's wait (``bench/sim_fleet.py``): they join, answer
the clock probes, and every second each sends its :class:`loadgen.wire.Interval` (4 request names,
histograms of ``--rate`` samples, a few errors) and a heartbeat, then Finished. The coordinator does all it
does in a real run: merge, close each second, the progress line, a checkpoint every 2 s and ``results.json``
every 10 s into ``--out``, acknowledgements, and the final results.

Every ``--report-every`` simulated seconds it prints one JSON line: RSS, traced memory (with
``--tracemalloc``), the events held, the most seconds an agent has merged beyond a gap; and at hour 1 and the
last, the median time of the last 5 checkpoints of each kind the run wrote before it (``state_write_ms``:
the interval log's new seconds, the spool's sync and ``state.msgpack``; ``state_plus_results_write_ms``: the
same and ``results.json``; the work of :class:`coordinator.durability.Durability`, timed by a subclass put
in ``coord.durable`` before the run, not the building of the state and the results document before it) and
the files' sizes. Memory per hour of run is the difference between the
last hour and hour 1 divided by the hours between them. The last line is the end of the run: reading the
whole series back for the reports (time, and with ``--tracemalloc`` the memory it takes while held), and the
real time the run took.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import math
import random
import resource
import statistics
import sys
import time
import tracemalloc
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench.sim_fleet import SimFleet
from coordinator.coordinator import Coordinator, CoordinatorConfig
from coordinator.durability import Durability
from loadgen import histogram, wire
from loadgen.profile import Profile, Stage
from loadgen.profile_file import load_profile


class TimedDurability(Durability):
    """Durability that notes how long each checkpoint takes, apart for those that write ``results.json``."""

    def __init__(self, out: Path | None) -> None:
        super().__init__(out)
        self.state_ms: deque[float] = deque(maxlen=5)
        self.results_ms: deque[float] = deque(maxlen=5)

    def checkpoint(self, state: dict[str, Any], results: Mapping[str, Any] | None) -> None:
        t0 = time.perf_counter()
        super().checkpoint(state, results)
        (self.state_ms if results is None else self.results_ms).append((time.perf_counter() - t0) * 1000.0)

    def medians(self) -> tuple[float | None, float | None]:
        """The median of the last 5 of each kind (None before the first)."""
        state, results = (
            round(statistics.median(ms), 2) if ms else None for ms in (self.state_ms, self.results_ms)
        )
        return state, results


def first_seconds(profile: Profile, seconds: float) -> Profile:
    """``profile`` cut to its first ``seconds`` (a stage cut short ends at the rate it had reached)."""
    if seconds > profile.load.duration:
        raise SystemExit(f"--seconds {seconds:g} is longer than the profile ({profile.load.duration:g} s)")
    stages: list[Stage] = []
    rate, left = profile.load.start_rate, seconds
    for st in profile.load.stages:
        if left <= 0:
            break
        if st.duration <= left:
            stages.append(st)
        else:
            stages.append(Stage(left, rate + (st.rate - rate) * left / st.duration))
        left -= st.duration
        rate = st.rate
    return dataclasses.replace(profile, load=dataclasses.replace(profile.load, stages=tuple(stages)))


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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=int, default=28800)
    ap.add_argument("--agents", type=int, default=1)
    ap.add_argument("--rate", type=int, default=100, help="requests per second per agent")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--tracemalloc", action="store_true")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--report-every", type=int, default=3600, help="simulated seconds between lines")
    args = ap.parse_args()

    histogram.keep_memory_flat()
    rng = random.Random(args.seed)
    soak = load_profile(Path(__file__).resolve().parent.parent / "profiles" / "soak-8h.toml")
    profile = first_seconds(soak, args.seconds)
    names = [r.name for r in profile.requests]
    per_name = max(1, args.rate // len(names))
    lat = variants(rng, per_name, 16, 0.004)
    svc = variants(rng, per_name, 16, 0.003)
    lag = variants(rng, args.rate, 16, 0.0002)

    def interval(k: int, s: int) -> wire.Interval:
        v = (s + k) % 16
        fail = s % 7 == 0
        return wire.Interval(
            index=s,
            first=0,
            scheduled=per_name * len(names),
            dropped=0,
            in_flight=3,
            names={
                n: [
                    per_name,
                    per_name - (j == 2 and fail),
                    int(j == 2 and fail),
                    {"http_500": 1} if j == 2 and fail else {},
                    lat[(v + j) % 16],
                    svc[(v + j) % 16],
                ]
                for j, n in enumerate(names)
            },
            lag=lag[v],
            cpu=0.2 + 0.01 * (s % 10),
        )

    durable = TimedDurability(args.out)
    holder: list[Coordinator] = []

    def report(s: int) -> None:
        if (s + 1) % args.report_every and s + 1 != args.seconds:
            return
        coord = holder[0]
        hour = (s + 1) / 3600
        row: dict[str, Any] = {"hour": round(hour, 3), "rss_mib": round(rss_mib(), 2)}
        if args.tracemalloc:
            row["traced_mib"] = round(tracemalloc.get_traced_memory()[0] / 2**20, 3)
        row["events"] = len(coord.events)
        row["agent_ahead_max"] = max((len(t.ahead) for t in coord.agg.agents.values()), default=0)
        if hour in (1.0, args.seconds / 3600):
            state_ms, results_ms = durable.medians()
            row["state_write_ms"] = state_ms
            row["state_plus_results_write_ms"] = results_ms
            row["state_bytes"] = (args.out / "state.msgpack").stat().st_size
            row["results_bytes"] = (args.out / "results.json").stat().st_size
        print(json.dumps(row), flush=True)

    def progress(line: str) -> None:
        if not line.startswith("["):  # not the per-second progress line: a warning, a membership change
            print(line, file=sys.stderr, flush=True)

    fleet = SimFleet(args.agents, interval, on_second=report)
    config = CoordinatorConfig(expect_agents=args.agents, out_dir=args.out, seed=args.seed)
    coord = Coordinator(
        profile,
        config,
        transport=fleet.transport,
        clock=fleet.clock,
        wall=fleet.clock.wall,
        progress=progress,
    )
    coord.durable = durable  # before run(): every checkpoint goes through it
    holder.append(coord)
    if args.tracemalloc:
        tracemalloc.start()
    t_run = time.perf_counter()
    try:
        doc = coord.run()
        real_s = time.perf_counter() - t_run
        seconds, totals, passed = len(doc["intervals"]), doc["totals"], doc["passed"]
        del doc
        gc.collect()
        # The end of the run: the reports need the whole series, read back from the spool once.
        before = tracemalloc.get_traced_memory()[0] if args.tracemalloc else 0
        t0 = time.perf_counter()
        series = coord.spool.read()
        end: dict[str, Any] = {"end_read_back_ms": round((time.perf_counter() - t0) * 1000.0, 1)}
        end["seconds"] = len(series)
        end["rss_mib"] = round(rss_mib(), 2)
        if args.tracemalloc:
            end["series_mib"] = round((tracemalloc.get_traced_memory()[0] - before) / 2**20, 3)
        end["real_s"] = round(real_s, 1)
        end["ok"] = totals["ok"]
        end["failed"] = totals["failed"]
        end["passed"] = passed
        print(json.dumps(end), flush=True)
        assert seconds == len(series) == args.seconds, (seconds, len(series))
    finally:
        coord.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
