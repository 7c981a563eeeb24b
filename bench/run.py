"""The benchmark suite behind ``make bench``: measures, then writes docs/benchmarks.md.

    .venv/bin/python -m bench.run              # the full suite, about 30 minutes
    BENCH_QUICK=1 .venv/bin/python -m bench.run  # shorter trials, about 5 minutes
    BENCH_SOAK_S=1200 .venv/bin/python -m bench.run  # the full suite with a 20-minute soak
    BENCH_SIM_S=120 .venv/bin/python -m bench.run  # a 2-minute coordinator simulation (10 by default)
    BENCH_SOAK_STALL_EVERY=0 .venv/bin/python -m bench.run  # a soak whose target never stalls (60 s apart)

In one run on one machine, with the generator pinned to core 0 and nginx to core 1:

1. baselines: wrk's and Locust FastHttpUser's closed-loop maximum (before and after the searches of 2);
2. closed-loop throughput of our engines (and stock httpx) at 1 to 1,000 connections;
3. the highest open-model rate one agent sustains on one core, per engine (search: grow then bisect, a
   bounded number of trials), and the send lag at 50% and 90% of it;
4. each engine at 10,000/s against the built-in target answering after 0, 1, 10 and 100 ms: from a few to
   about 1,000 requests in flight at one rate;
5. the coordinator with 1,000 simulated agents (bench/coord_sim.py): CPU and memory;
6. a soak at half the fast engine's maximum, its target stalled for 0.4 s every minute: memory of agent and
   coordinator, and output file growth;
7. where the agent's time goes: py-spy samples at 90% of its maximum (bench/sampling.py), a cProfile of its
   hot path, and micro-benchmarks of its parts (bench/micro.py);
8. HTTPS against nginx, ours vs wrk, and new TLS connections per second (bench/tls.py).
9. user journeys (bench/flows.py): a one-step flow's CPU per request against a plain request's, side by
   side, and a five-step journey's steps per second against Locust's SequentialTaskSet.
10. HTTP/2 against nginx (bench/http2.py): our engine, h2load and httpx on one connection at 1, 10 and 100
    streams, h2c and over TLS.

Traffic goes only to 127.0.0.1. Every process has a deadline.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import itertools
import json
import os
import pickle
import pstats
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import flows, lib
from bench import http2 as http2_bench
from bench import tls as tls_bench
from bench.lib import BENCH, GEN_CORE, PY, ROOT, Trial, log
from bench.report import write_report
from bench.sampling import sample_hot_path

QUICK = os.environ.get("BENCH_QUICK", "") not in ("", "0")
SOAK_S = int(os.environ.get("BENCH_SOAK_S", "0") or 0)  # the soak's length in seconds, if not the plan's
SIM_S = int(os.environ.get("BENCH_SIM_S", "0") or 0)  # the coordinator simulation's length, if not the plan's
STALL_EVERY = os.environ.get("BENCH_SOAK_STALL_EVERY")  # seconds between the soak's target stalls; 0: none
STALL_S = 0.4
"""How long each of the soak's stalls of nginx lasts (SIGSTOP of its worker): at the soak's rate, thousands of
requests wait and the agent's pool opens hundreds of connections, which it closes once idle for 30 s."""


@dataclass(frozen=True)
class Plan:
    trial_s: int
    search_trials: int
    wrk_s: int
    locust_s: int
    closed_s: float
    closed: dict[str, tuple[int, ...]]
    sim_agents: int
    sim_s: int
    soak_s: int
    soak_stall_every: float


FULL = Plan(
    trial_s=10,
    search_trials=6,
    wrk_s=8,
    locust_s=15,
    closed_s=5.0,
    closed={"fast": (1, 10, 100, 1000), "httpx": (1, 10, 100, 1000), "httpx-client": (1, 10, 100, 1000)},
    sim_agents=1000,
    sim_s=600,
    soak_s=300,
    soak_stall_every=60.0,
)
SHORT = Plan(
    trial_s=5,
    search_trials=4,
    wrk_s=4,
    locust_s=8,
    closed_s=3.0,
    closed={"fast": (100,), "httpx": (1, 100, 1000), "httpx-client": (1, 50)},
    sim_agents=1000,
    sim_s=15,
    soak_s=45,
    soak_stall_every=15.0,
)


CONCURRENCY_RATE = 10_000.0
"""The open-model rate of the trials by requests in flight: the httpx engine's goal."""
DELAYS_MS = (0, 1, 10, 100)
"""The built-in target's answer delays: at 10,000/s about 1, 10, 100 and 1,000 requests in flight."""


@dataclass
class InFlight:
    """One open-model trial against the built-in target answering after ``delay_ms``."""

    delay_ms: int
    trial: Trial
    connections: int | None  # connections the target saw opened during the trial

    @property
    def in_flight(self) -> float | None:
        """Requests in flight on average (Little's law: achieved rate x mean latency)."""
        mean = (self.trial.results.get("latency_ms") or {}).get("mean")
        return None if mean is None else self.trial.rps * mean / 1000.0


def by_concurrency(plan: Plan, work: Path) -> dict[str, list[InFlight]]:
    """Each engine at CONCURRENCY_RATE against the built-in target, from ~1 to ~1,000 requests in flight."""
    out: dict[str, list[InFlight]] = {}
    with lib.builtin_target() as url:
        for engine in ("fast", "httpx"):
            out[engine] = []
            for delay in DELAYS_MS:
                lib.reset_target(url)
                path = f"/delay?ms={delay}" if delay else "/"
                trial = lib.open_trial(engine, url, CONCURRENCY_RATE, plan.trial_s, work, path=path)
                opened = lib.target_stats(url).get("connections_total")
                run = InFlight(delay, trial, None if opened is None else int(opened) - 1)  # less the stats'
                out[engine].append(run)
                log(
                    f"{engine} @ {CONCURRENCY_RATE:,.0f}/s, answers after {delay} ms: achieved "
                    f"{trial.rps:,.0f}/s, in flight {run.in_flight or 0:,.0f}, "
                    f"lag p99 {trial.lag.get('p99')} ms -> {trial.verdict}"
                )
    return out


@dataclass
class Figures:
    """Everything measured, for the report."""

    quick: bool
    machine: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    wrk: list[dict[str, Any]] = field(default_factory=list)
    locust: list[dict[str, Any]] = field(default_factory=list)
    closed: list[dict[str, Any]] = field(default_factory=list)
    searches: dict[str, list[Trial]] = field(default_factory=dict)
    maxima: dict[str, float] = field(default_factory=dict)
    fractions: dict[str, list[Trial]] = field(default_factory=dict)
    sim: dict[str, Any] = field(default_factory=dict)
    soak: dict[str, Any] = field(default_factory=dict)
    profile: dict[str, Any] = field(default_factory=dict)
    sampled: dict[str, Any] = field(default_factory=dict)
    micro: dict[str, float] = field(default_factory=dict)
    concurrency: dict[str, list[InFlight]] = field(default_factory=dict)
    started: str = ""
    seconds: float = 0.0
    load_before: str = ""
    load_after: str = ""
    stolen: float | None = None  # the share of the machine's time the hypervisor took over the whole suite
    tls: list[dict[str, Any]] = field(default_factory=list)  # bench/tls.py's rows
    journeys: dict[str, Any] = field(default_factory=dict)  # bench/flows.py's figures
    http2: list[dict[str, Any]] = field(default_factory=list)  # bench/http2.py's rows


def _round_rate(rate: float) -> float:
    step = 1000 if rate >= 20_000 else 100 if rate >= 2_000 else 10
    return max(step, round(rate / step) * step)


def search(engine: str, url: str, hint: float, plan: Plan, work: Path) -> tuple[float, list[Trial]]:
    """The highest constant rate one agent sustains (lib.Trial.sustained), in at most ``search_trials``:
    start at half the closed-loop figure, grow by 1.5x while it holds, then bisect."""
    trials: list[Trial] = []
    lo: float | None = None
    hi: float | None = None
    rate = _round_rate(hint * 0.5)
    for _ in range(plan.search_trials):
        trial = lib.open_trial(engine, url, rate, plan.trial_s, work)
        trials.append(trial)
        if not trial.sustained:  # the machine is shared: a rate fails only if it fails twice
            log(f"{engine} @ {rate:,.0f}/s did not hold (lag p99 {trial.lag.get('p99')} ms); once more")
            trial = lib.open_trial(engine, url, rate, plan.trial_s, work)
            trials.append(trial)
        log(
            f"{engine} @ {rate:,.0f}/s: achieved {trial.rps:,.0f}/s, lag p99 {trial.lag.get('p99')} ms, "
            f"dropped {trial.dropped}, failed {trial.failed} -> {'holds' if trial.sustained else 'saturated'}"
        )
        if trial.sustained:
            lo = rate
        else:
            hi = rate
        if lo is None:
            nxt = _round_rate(rate / 2)
        elif hi is None:
            nxt = _round_rate(rate * 1.5)
        else:
            if (hi - lo) / lo < 0.05:
                break
            nxt = _round_rate((lo + hi) / 2)
        if nxt in (lo, hi) or nxt == rate:
            break
        rate = nxt
    if lo is None and hi is not None and hi <= 100:
        log(f"{engine}: no rate held")
    return (lo or 0.0), trials


def coordinator_sim(plan: Plan, work: Path) -> dict[str, Any]:
    """The real coordinator process and ``sim_agents`` simulated agents in 4 processes."""
    out = work / "sim"
    out.mkdir(parents=True, exist_ok=True)
    rate_per_agent = 1000
    profile = lib.write_profile(
        work / "sim.toml", "http://127.0.0.1:9", plan.sim_agents * rate_per_agent, plan.sim_s, names=10
    )
    endpoint = f"tcp://127.0.0.1:{lib.free_port()}"
    coord_cmd = [
        *lib.LOADGEN,
        *("coordinator", str(profile), "--bind", endpoint, "--expect-agents", str(plan.sim_agents)),
        *("--out", str(out), "--join-timeout", "120"),
    ]
    procs = 4
    starts: list[float] = []
    with open(out / "coordinator.log", "w") as clog:
        coord = subprocess.Popen(coord_cmd, stdout=clog, stderr=subprocess.STDOUT)
        sims = lib.start_sim_agents(endpoint, plan.sim_agents, plan.sim_s, rate_per_agent, procs)
        lines: list[str] = []

        def reader(proc: subprocess.Popen[str]) -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.append(line.strip())
                if '"started"' in line:
                    starts.append(json.loads(line)["start_at"])

        readers = [threading.Thread(target=reader, args=(p,), daemon=True) for p in sims]
        for t in readers:
            t.start()
        began = time.monotonic()
        try:
            with lib.Sampler([coord.pid], every=1.0, files=[out / "results.json"]) as sampler:
                try:
                    coord.wait(timeout=plan.sim_s + 240)
                except subprocess.TimeoutExpired:
                    log("the coordinator did not finish in time; stopping it")
        finally:
            lib.wait_or_stop(sims)
            lib.stop(coord)
    start_at = min(starts) if starts else began
    run_from, run_to = start_at + 1.0, start_at + plan.sim_s
    rss = [
        (s.t - start_at, s.rss[coord.pid])
        for s in sampler.samples
        if run_from <= s.t <= run_to and s.rss.get(coord.pid) is not None
    ]
    results: dict[str, Any] = {}
    with contextlib.suppress(OSError, json.JSONDecodeError):
        results = json.loads((out / "results.json").read_text())
    expected_ok = plan.sim_agents * rate_per_agent * plan.sim_s
    return {
        "agents": plan.sim_agents,
        "processes": procs,
        "seconds": plan.sim_s,
        "names": 10,
        "rate_per_agent": rate_per_agent,
        "join_sync_s": round(start_at - began, 1),
        "cpu_join": sampler.cpu_share(coord.pid, began, start_at),
        "cpu_run": sampler.cpu_share(coord.pid, run_from, run_to),
        "cpu_run_peak": _peak_share(sampler, coord.pid, run_from, run_to),
        "rss_start": rss[0][1] if rss else None,
        "rss_end": rss[-1][1] if rss else None,
        "rss_max": max((v for _, v in rss if v is not None), default=None),
        # After a warm-up (libzmq's buffers and the allocator's arenas grow for the first few minutes): the
        # second half of the run, judged like the soak (peak of its first and last third).
        "rss_slope_h": lib.slope_per_hour([(t, float(v)) for t, v in rss[len(rss) // 2 :] if v is not None]),
        "rss_envelope": lib.envelope([(t, float(v)) for t, v in rss[len(rss) // 2 :] if v is not None]),
        "rss_series": [(t, v) for i, (t, v) in enumerate(rss) if i % max(1, len(rss) // 8) == 0],
        "results_ok": results.get("totals", {}).get("ok"),
        "expected_ok": expected_ok,
        "agents_in_results": len(results.get("agents", [])),
        "warnings": results.get("warnings", []),
        "exit": coord.returncode,
        "sim_lines": lines[-procs:],
        "cmd": (
            f"loadgen coordinator sim.toml --bind {endpoint} --expect-agents {plan.sim_agents} --out DIR & "
            f"python bench/coord_sim.py --connect {endpoint} --agents {plan.sim_agents // procs} --first K "
            f"--duration {plan.sim_s} (x{procs})"
        ),
    }


def _peak_share(sampler: lib.Sampler, pid: int, since: float, until: float) -> float | None:
    points = [(s.t, s.cpu[pid]) for s in sampler.samples if since <= s.t <= until]
    peak: float | None = None
    for (t0, c0), (t1, c1) in itertools.pairwise(points):
        if c0 is not None and c1 is not None and t1 > t0:
            share = (c1 - c0) / (t1 - t0)
            peak = share if peak is None else max(peak, share)
    return peak


def soak(url: str, rate: float, plan: Plan, work: Path) -> dict[str, Any]:
    """One agent at ``rate`` for ``plan.soak_s`` against nginx at ``url``, which stalls for :data:`STALL_S`
    every ``plan.soak_stall_every`` seconds (from half that after the start): the memory of agent and
    coordinator and the growth of the output files, after a warm-up."""
    every = plan.soak_stall_every
    at = itertools.count(every / 2, every)
    stalls = lib.Stalls(lib.nginx_worker(url), at, STALL_S) if every > 0 else None
    with stalls or contextlib.nullcontext():
        watch = ["results.json", "latency.hlog"]
        trial = lib.open_trial("fast", url, rate, plan.soak_s, work, sample_every=2.0, watch_files=watch)
    stalled = {"stall_every": every, "stall_s": STALL_S, "stalls": stalls.count if stalls else 0}
    samples = trial.samples
    if not samples:
        return {"rate": rate, "seconds": plan.soak_s, "trial": trial, **stalled}
    t_first = samples[0].t
    _write_memory_series(work / f"soak-{plan.soak_s}s-memory.csv", trial)
    # The run is where the agent is alive, and no longer than its schedule (the processes start after the
    # first sample): not the drain and the final reports, whose memory is the end of a run's, not its
    # growth. The first fifth of it (and the first 10 s) is warm-up.
    alive = [s for s in samples if s.rss.get(trial.agent_pid) is not None]
    t_end = min(alive[-1].t if alive else samples[-1].t, t_first + trial.ramp + plan.soak_s)
    warm = t_first + max(10.0, 0.2 * (t_end - t_first))
    window = [s for s in samples if warm <= s.t <= t_end - 2.0]

    def series(get: Any) -> list[tuple[float, float]]:
        return [(s.t - t_first, float(v)) for s in window if (v := get(s)) is not None]

    agent_rss = series(lambda s: s.rss.get(trial.agent_pid))
    coord_rss = series(lambda s: s.rss.get(trial.coordinator_pid))
    files: dict[str, Any] = {}
    for name in ("results.json", "latency.hlog"):
        key = str(trial.out / name) if trial.out else name
        points = series(lambda s, key=key: s.files.get(key) or None)
        final = (trial.out / name).stat().st_size if trial.out and (trial.out / name).exists() else None
        files[name] = {"slope_h": lib.slope_per_hour(points), "final": final}
    return {
        "rate": rate,
        "seconds": plan.soak_s,
        "trial": trial,
        "agent_rss": (agent_rss[0][1], agent_rss[-1][1]) if agent_rss else None,
        "agent_slope_h": lib.slope_per_hour(agent_rss),
        "agent_envelope": lib.envelope(agent_rss),
        "coord_rss": (coord_rss[0][1], coord_rss[-1][1]) if coord_rss else None,
        "coord_slope_h": lib.slope_per_hour(coord_rss),
        "coord_envelope": lib.envelope(coord_rss),
        "files": files,
        "window_s": round(window[-1].t - window[0].t, 1) if window else 0.0,
        **stalled,
    }


def _write_memory_series(path: Path, trial: lib.Trial) -> None:
    """The soak's samples as CSV (seconds from the first sample, RSS of agent and coordinator in bytes,
    connections open at nginx, sizes of the watched files), to look at the curve after the run."""
    files = sorted({name for s in trial.samples for name in s.files})
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        names = [Path(n).name for n in files]
        out.writerow(["t", "agent_rss", "coordinator_rss", "nginx_connections", *names])
        t0 = trial.samples[0].t if trial.samples else 0.0
        for s in trial.samples:
            row = [f"{s.t - t0:.1f}", s.rss.get(trial.agent_pid), s.rss.get(trial.coordinator_pid)]
            out.writerow([*row, s.connections, *(s.files.get(n) for n in files)])
    lib.log(f"soak memory series in {path}")


CATEGORIES = (
    (
        "engine (fast_engine, pool, httptools, socket writes)",
        (
            "fast_engine.py",
            "httpx_engine.py",
            "agents/pool.py",
            "httptools",
            "UVStream",
            "UVTransport",
            "feed_data",
            "get_status_code",
            "should_keep_alive",
        ),
    ),
    ("recorder (recorder.py, hdrh)", ("recorder.py", "/hdrh/", "Counter", "collections/__init__")),
    (
        "arrival loop (arrivals.py, schedule, curve)",
        ("arrivals.py", "schedule.py", "curve.py", "bisect", "random"),
    ),
    ("ZeroMQ and wire (zmq, wire.py, msgpack)", ("/zmq/", "wire.py", "msgpack", "zmq")),
    ("agent control (agent.py)", ("agents/agent.py",)),
)


def short_where(where: str) -> str:
    """A profile row's file named from the project's root, the standard library or site-packages, so the
    report names no directory of the machine it ran on."""
    roots = {str(ROOT), sys.prefix, *(sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib"))}
    for root in sorted(roots, key=len, reverse=True):
        if where.startswith(root + "/"):
            return where[len(root) + 1 :]
    return where


def profile_hot_path(url: str, rate: float, plan: Plan, work: Path) -> dict[str, Any]:
    """Run one agent under cProfile at ``rate`` and attribute its own time to the agent's parts."""
    prof = work / "agent.prof"
    trial = lib.open_trial(
        "fast",
        url,
        rate,
        plan.trial_s,
        work,
        agent_cmd=[PY, str(BENCH / "agent.py"), "--cprofile", str(prof)],
    )
    if not prof.exists():
        return {"rate": rate, "trial": trial}
    stats = pstats.Stats(str(prof))
    by_cat: dict[str, float] = defaultdict(float)
    loop_wait = 0.0
    rows = []
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    for (filename, line, name), (_cc, calls, tottime, _ct, _callers) in raw.items():
        where = f"{filename}:{line}({name})"
        # uvloop's C loop runs under asyncio.Runner.run: its own time is the loop itself (and idle waiting).
        if "run_until_complete" in name or "run_forever" in name or where.endswith("runners.py:86(run)"):
            loop_wait += tottime
            continue
        rows.append((tottime, calls, where))
        for cat, needles in CATEGORIES:
            if any(n in where for n in needles):
                by_cat[cat] += tottime
                break
        else:
            by_cat["other (asyncio, clock, builtins)"] += tottime
    requests = int(trial.results.get("totals", {}).get("ok", 0)) + int(
        trial.results.get("totals", {}).get("failed", 0)
    )
    total = sum(by_cat.values())
    rows.sort(reverse=True)
    top = [
        {
            "tottime": round(t, 3),
            "calls": c,
            "us_per_request": round(t / max(1, requests) * 1e6, 2),
            "where": short_where(w),
        }
        for t, c, w in rows[:15]
    ]
    return {
        "rate": rate,
        "trial": trial,
        "requests": requests,
        "profiled_s": total,
        "loop_s": loop_wait,
        "categories": sorted(
            (
                (cat, t, t / max(1, requests) * 1e6, 100.0 * t / total if total else 0.0)
                for cat, t in by_cat.items()
            ),
            key=lambda r: -r[1],
        ),
        "top": top,
    }


def baselines(url: str, plan: Plan, work: Path, figures: Figures, when: str) -> None:
    """wrk's and Locust's closed-loop figures, tagged ``when`` (before or after the open-model searches):
    this machine's speed drifts within minutes, so each tool is measured on both sides of the searches and
    the ratios take each tool's best."""
    work.mkdir(exist_ok=True)
    for c in (50, 200):
        figures.wrk.append({**lib.wrk(url, c, plan.wrk_s), "when": when})
        log(f"wrk -c{c} ({when}): {figures.wrk[-1]['rps']:,.0f}/s")
    if "locust" not in figures.missing:
        figures.locust.append({**lib.locust(url, 50, plan.locust_s, work), "when": when})
        log(f"locust FastHttpUser ({when}): {figures.locust[-1]['rps']:,.0f}/s")


def main() -> int:
    plan = SHORT if QUICK else FULL
    if SOAK_S > 0:
        plan = dataclasses.replace(plan, soak_s=SOAK_S)
    if SIM_S > 0:
        plan = dataclasses.replace(plan, sim_s=SIM_S)
    if STALL_EVERY is not None:
        plan = dataclasses.replace(plan, soak_stall_every=float(STALL_EVERY or 0))
    began = time.monotonic()
    figures = Figures(quick=QUICK, started=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    figures.load_before = Path("/proc/loadavg").read_text().strip()
    stolen_before = lib.jiffies_stolen()
    figures.missing = lib.ensure_tools()
    figures.machine = lib.machine()
    if {"nginx", "wrk", "taskset"} & set(figures.missing):
        log(f"cannot run without {figures.missing}")
        return 2
    work = Path(tempfile.mkdtemp(prefix="loadgen-bench-"))
    log(f"{'quick' if QUICK else 'full'} suite; work files in {work}")
    micro = subprocess.run(
        ["taskset", "-c", GEN_CORE, PY, str(BENCH / "micro.py")],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    figures.micro = json.loads(micro.stdout) if micro.returncode == 0 else {}
    with lib.nginx() as url:
        log(f"nginx at {url} on core {lib.TARGET_CORE}")
        baselines(url, plan, work, figures, "before")
        for engine, counts in plan.closed.items():
            for c in counts:
                figures.closed.append(lib.closed_loop(engine, url, c, plan.closed_s))
                log(f"closed loop {engine} x{c}: {figures.closed[-1]['rps']:,.0f}/s")
        for engine in ("fast", "httpx"):
            hint = max((r["rps"] for r in figures.closed if r["engine"] == engine), default=5000.0)
            figures.maxima[engine], figures.searches[engine] = search(engine, url, hint, plan, work)
            log(f"{engine}: highest sustained open-model rate {figures.maxima[engine]:,.0f}/s")
            figures.fractions[engine] = [
                lib.open_trial(engine, url, _round_rate(f * figures.maxima[engine]), plan.trial_s, work)
                for f in (0.5, 0.9)
                if figures.maxima[engine] > 0
            ]
        baselines(url, plan, work / "after", figures, "after")
    log("open model by requests in flight (built-in target)")
    figures.concurrency = by_concurrency(plan, work)
    with lib.nginx() as url:
        log("coordinator with simulated agents")
        figures.sim = coordinator_sim(plan, work)
        log(f"coordinator: {figures.sim.get('cpu_run')} of a core during the run")
        soak_rate = _round_rate(0.5 * figures.maxima.get("fast", 10_000.0) or 10_000.0)
        log(f"soak at {soak_rate:,.0f}/s for {plan.soak_s} s")
        figures.soak = soak(url, soak_rate, plan, work)
        sample_rate = _round_rate(0.9 * (figures.maxima.get("fast") or 20_000.0))
        log(f"sampling the agent with py-spy at {sample_rate:,.0f}/s")
        figures.sampled = sample_hot_path(url, sample_rate, plan.trial_s, work)
        log("profiling the agent")
        figures.profile = profile_hot_path(
            url, _round_rate(0.3 * (figures.maxima.get("fast") or 20_000.0)), plan, work
        )
    log("HTTPS against nginx (bench/tls.py)")
    figures.tls = tls_bench.measure(5 if QUICK else 10)
    log("user journeys")
    figures.journeys = flows.measure(
        flows.QUICK if QUICK else flows.FULL, work / "flows", locust="locust" not in figures.missing
    )
    if "h2load" in figures.missing:
        log("HTTP/2: h2load is missing (apt install nghttp2-client), skipped")
    else:
        log("HTTP/2 against nginx (bench/http2.py)")
        figures.http2 = http2_bench.measure(1 if QUICK else http2_bench.ROUNDS)
    figures.seconds = time.monotonic() - began
    figures.load_after = Path("/proc/loadavg").read_text().strip()
    figures.stolen = lib.stolen_share(stolen_before, lib.jiffies_stolen())
    path = ROOT / "docs" / "benchmarks.md"
    saved = work / "figures.pickle"
    with contextlib.suppress(Exception):  # only for re-rendering the report while editing it
        saved.write_bytes(pickle.dumps(figures))
        log(f"figures saved in {saved} (python -m bench.run --report-only {saved} re-renders the report)")
    write_report(figures, path)
    log(f"wrote {path} after {figures.seconds / 60:.1f} min")
    return 0


def report_only(saved: Path) -> int:
    """Write docs/benchmarks.md again from the figures a run saved (``figures.pickle`` in its work folder)."""
    figures = pickle.loads(saved.read_bytes())  # a file this suite wrote itself
    path = ROOT / "docs" / "benchmarks.md"
    write_report(figures, path)
    log(f"wrote {path} from {saved}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--report-only":
        sys.exit(report_only(Path(sys.argv[2])))
    sys.exit(main())
