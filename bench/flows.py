"""User journeys' speed: what a flow costs the agent, against plain requests and against Locust.

    .venv/bin/python -m bench.flows            # about 7 minutes
    .venv/bin/python -m bench.flows --quick    # about 3 minutes

1. **One-step flows against plain requests, side by side.** Three profiles at one open-model rate against
   nginx, interleaved (A B C, then C B A, ...) so that the machine's drift falls on all three alike: (A) a
   plain ``[[requests]]`` GET /; (B) a ``[[flows]]`` flow of that one step, which the agent sends as a plain
   request (``agents.flow_runner.direct_flows``); (C) the same step with ``check = { status = [200] }``,
   which goes through the flow runner. The figure is the agent's CPU per completed request over the hold:
   the CPU the agent measures of itself each second (``process_time``, in results.json's intervals) summed
   over the hold, divided by the requests completed meanwhile; and, as a cross-check, the busiest
   (hold-long) window of its CPU read from /proc by the bench, divided by the achieved rate.
2. **A five-step journey** (login with a CSV user, capture of a JSON token and item id and of a cookie; a
   listing with a header capture; the item with ``Authorization: Bearer {{ token }}``; a cart POST the
   cookie jar authenticates; a checkout whose body is checked): the highest flow rate one agent sustains on
   its core (grow by 1.25x while it holds, then bisect; a rate fails only if it fails twice; the rule of
   ``bench/run.py``: no drops, no failures, send lag p99 <= 5 ms, 98% of the rate achieved), in steps per
   second; and Locust's ``SequentialTaskSet`` of the same five steps (``bench/locust_journey.py``,
   FastHttpUser, no wait, closed loop) on the same core against the same nginx.

Run on its own it prints the report's section (Markdown) on stdout and keeps its work files (profiles,
results) in a temporary folder it names; ``make bench`` (``bench/run.py``) runs it too and puts the section
in docs/benchmarks.md. Traffic goes only to 127.0.0.1; every process has a deadline.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import lib
from bench.lib import BENCH, GEN_CORE, LOCUST_VENV, ROOT, TARGET_CORE, log

TOKEN = "t-1"
SESSION = "s-42"
JOURNEY_LOCATIONS = f"""\
    location = /login {{
      add_header Set-Cookie "session={SESSION}; Path=/";
      default_type application/json;
      return 200 '{{"token":"{TOKEN}","items":[{{"id":7}},{{"id":9}}]}}';
    }}
    location = /items {{
      add_header X-Page "p-1";
      default_type application/json;
      return 200 '{{"items":[{{"id":7,"name":"cup"}},{{"id":9,"name":"pot"}}]}}';
    }}
    location /items/ {{
      if ($http_authorization != "Bearer {TOKEN}") {{ return 401; }}
      default_type application/json;
      return 200 '{{"id":7,"name":"cup","price":5}}';
    }}
    location = /cart {{
      if ($cookie_session != "{SESSION}") {{ return 401; }}
      default_type application/json;
      return 200 '{{"cart":"c-7","items":1}}';
    }}
    location = /checkout {{
      if ($cookie_session != "{SESSION}") {{ return 401; }}
      default_type application/json;
      return 200 '{{"status":"done","order":"o-1"}}';
    }}
"""
"""nginx's locations emulating a shop: static answers, but /items/N wants the login's token and /cart and
/checkout the login's cookie (401 otherwise, a failed step), so a journey that carried nothing would fail."""

USERS = 100
"""Rows of the journey's CSV (``user,password``), read in order and reused from the first."""

JOURNEY = """\
[[data]]
file = "users.csv"

[[flows]]
name = "journey"

[[flows.steps]]
name = "login"
method = "POST"
path = "/login"
headers = { content-type = "application/json" }
body = '{"user": "{{ user }}", "password": "{{ password }}"}'
capture = { token = "$.token", item = "$.items[0].id", sid = "cookie:session" }
check = { status = [200] }

[[flows.steps]]
name = "items"
path = "/items"
headers = { x-session = "{{ sid }}" }
capture = { page = "header:x-page" }

[[flows.steps]]
name = "item"
path = "/items/{{ item }}"
headers = { authorization = "Bearer {{ token }}" }

[[flows.steps]]
name = "cart"
method = "POST"
path = "/cart"
headers = { content-type = "application/json" }
body = '{"item": {{ item }}, "page": "{{ page }}"}'
capture = { cart = "$.cart" }

[[flows.steps]]
name = "checkout"
method = "POST"
path = "/checkout"
headers = { content-type = "application/json" }
body = '{"cart": "{{ cart }}"}'
check = { contains = "done" }
"""
STEPS = 5

ONE_STEP = {
    "A": ('[[requests]]\nname = "home"\npath = "/"\n', "`[[requests]]` GET /"),
    "B": (
        '[[flows]]\nname = "home"\n\n[[flows.steps]]\nname = "get"\npath = "/"\n',
        "`[[flows]]`, one step GET / (sent as a plain request, no runner)",
    ),
    "C": (
        '[[flows]]\nname = "home"\n\n[[flows.steps]]\nname = "get"\npath = "/"\ncheck = { status = [200] }\n',
        "`[[flows]]`, one step GET / with `check = { status = [200] }` (through the flow runner)",
    ),
}
"""The side-by-side comparison's profiles: their ``[[requests]]``/``[[flows]]`` tables and a description."""


@dataclass(frozen=True)
class Plan:
    rate: float  # the side-by-side comparison's open-model rate
    rounds: int  # rounds of A B C (every other one C B A)
    trial_s: int
    search_s: int
    search_trials: int
    start_flows: float  # the journey search's first rate, flows/s
    fixed_flows: float  # the rate of our journey trials interleaved with Locust's, flows/s
    journey_rounds: int  # rounds of Locust and ours (every other one ours first)
    locust_s: int
    locust_users: int


FULL = Plan(20_000.0, 4, 12, 8, 6, 2_000.0, 1_500.0, 3, 12, 50)
QUICK = Plan(20_000.0, 2, 6, 5, 4, 2_000.0, 1_500.0, 1, 6, 50)


# --- pure parts (tests/test_bench_flows.py)


def order(rounds: int) -> list[str]:
    """The interleaved order of the side-by-side trials: A B C, C B A, A B C, ..."""
    out: list[str] = []
    for i in range(rounds):
        out.extend("ABC" if i % 2 == 0 else "CBA")
    return out


def hold_cpu_per_request(intervals: list[dict[str, Any]], ramp: int, seconds: int) -> float | None:
    """The agent's CPU seconds per completed request over the hold (its first and last second left out),
    from results.json's per-second intervals (``cpu_max``: the agent's own CPU share that second, one agent
    here; ``ok`` + ``failed``: completions)."""
    hold = [i for i in intervals if ramp + 1 <= i["t"] < ramp + seconds - 1 and i.get("cpu_max") is not None]
    done = sum(i["ok"] + i["failed"] for i in hold)
    return sum(i["cpu_max"] for i in hold) / done if hold and done else None


def spread(values: list[float]) -> dict[str, float] | None:
    """Median, lowest, highest and (highest - lowest) / median of some figures."""
    if not values:
        return None
    mid = statistics.median(values)
    return {
        "median": mid,
        "min": min(values),
        "max": max(values),
        "rel": (max(values) - min(values)) / mid if mid else 0.0,
    }


def paired_ratios(trials: list[dict[str, Any]], num: str, den: str, key: str = "us") -> list[float]:
    """``num``'s figure over ``den``'s within each round (trials run next to each other)."""
    by_round: dict[int, dict[str, float]] = {}
    for t in trials:
        if t.get(key) is not None:
            by_round.setdefault(t["round"], {})[t["profile"]] = t[key]
    return [r[num] / r[den] for r in by_round.values() if num in r and den in r and r[den]]


def next_rate(rate: float, lo: float | None, hi: float | None) -> float | None:
    """The journey search's next rate: x1.25 while every rate held, then bisect to within 5%; None: done."""
    if lo is None:
        nxt = rate / 2
    elif hi is None:
        nxt = rate * 1.25
    else:
        if (hi - lo) / lo < 0.05:
            return None
        nxt = (lo + hi) / 2
    step = 100 if nxt >= 1_000 else 10
    nxt = max(step, round(nxt / step) * step)
    return None if nxt in (lo, hi, rate) else nxt


def others_on_core(samples: list[lib.Sample], pid: int, core: int) -> float | None:
    """The share of ``core`` busy with anything but process ``pid`` (pinned to it) while ``pid`` was sampled:
    other processes on a shared machine, and kernel work not charged to ``pid``."""
    points = [s for s in samples if s.cpu.get(pid) is not None and len(s.cores) > core]
    if len(points) < 2:
        return None
    first, last = points[0], points[-1]
    (b0, n0), (b1, n1) = first.cores[core], last.cores[core]
    c0, c1 = first.cpu[pid], last.cpu[pid]
    if n1 <= n0 or last.t <= first.t or c0 is None or c1 is None:
        return None
    return max(0.0, (b1 - b0) / (n1 - n0) - (c1 - c0) / (last.t - first.t))


def step_gap(results: dict[str, Any]) -> int:
    """Steps whose outcome results.json counts but whose sending it does not: the sum over the steps of the
    journey of ok + failed + dropped + in flight at the end - scheduled (0 when every step is conserved)."""
    gap = 0
    for entry in results.get("requests", {}).values():
        if entry.get("flow") != "journey":
            continue
        done = entry["ok"] + entry["failed"] + entry.get("dropped", 0) + entry.get("in_flight_at_end", 0)
        gap += done - entry["scheduled"]
    return gap


# --- trials


def _summary(trial: lib.Trial, **extra: Any) -> dict[str, Any]:
    """What the report needs of one open-model trial."""
    res = trial.results
    per = hold_cpu_per_request(res.get("intervals", []), trial.ramp, trial.seconds)
    rps = trial.rps
    return {
        **extra,
        "rate": trial.rate,
        "seconds": trial.seconds,
        "achieved": rps,  # arrivals (plain requests or whole flows) completed per second over the hold
        "us": None if per is None else per * 1e6,  # per arrival (a flow: all its steps)
        "proc_us": None if not trial.agent_cpu or not rps else trial.agent_cpu / rps * 1e6,
        "agent_cpu": trial.agent_cpu,
        "lag_p99": trial.lag.get("p99"),
        "dropped": trial.dropped,
        "failed": trial.failed,
        "errors": res.get("errors", {}),
        "saturated": res.get("generator_saturated"),
        "stolen": trial.stolen,
        "others": others_on_core(trial.samples, trial.agent_pid, int(GEN_CORE)),
        "target_busy": trial.target_busy,
        "cmd": trial.cmd,
    }


def _direct(profile_tables: str, work: Path) -> bool:
    """Whether the agent sends this profile's flows as plain requests (no runner)."""
    from agents.flow_runner import direct_flows
    from loadgen.profile_file import load_profile

    path = lib.write_profile(work / "direct-check.toml", "http://127.0.0.1:9", 1, 1, requests=profile_tables)
    profile = load_profile(path)
    return not profile.flows or direct_flows(profile) is not None


def side_by_side(url: str, plan: Plan, work: Path) -> dict[str, Any]:
    """Part 1: A, B and C interleaved at ``plan.rate``."""
    trials = []
    for n, name in enumerate(order(plan.rounds)):
        tables = ONE_STEP[name][0]
        trial = lib.open_trial("fast", url, plan.rate, plan.trial_s, work / f"one-{name}", requests=tables)
        row = _summary(trial, profile=name, round=n // 3)
        trials.append(row)
        log(
            f"one-step {name} @ {plan.rate:,.0f}/s: achieved {row['achieved']:,.0f}/s, "
            f"{_f(row['us'])} µs/request (agent), {_f(row['proc_us'])} µs (/proc), "
            f"lag p99 {row['lag_p99']} ms"
        )
    return {
        "rate": plan.rate,
        "rounds": plan.rounds,
        "seconds": plan.trial_s,
        "direct": {name: _direct(ONE_STEP[name][0], work) for name in ONE_STEP},
        "trials": trials,
    }


def _sustained(row: dict[str, Any], flows_per_s: float) -> bool:
    """The rule of bench/run.py: no drops, no failures, send lag p99 <= 5 ms, and 98% of the rate's flows
    completed."""
    lag = row["lag_p99"]
    return (
        row["dropped"] == 0
        and row["failed"] == 0
        and lag is not None
        and lag <= 5.0
        and row["achieved"] >= 0.98 * flows_per_s
    )


def write_users(work: Path) -> None:
    """The journey's CSV, next to the profiles."""
    rows = "".join(f"user{i},pw{i}\n" for i in range(1, USERS + 1))
    (work / "users.csv").write_text("user,password\n" + rows, encoding="utf-8")


def journey_search(url: str, plan: Plan, work: Path) -> dict[str, Any]:
    """Part 2, ours: the highest flow rate of the five-step journey one agent sustains on its core."""
    trials: list[dict[str, Any]] = []
    lo: float | None = None
    hi: float | None = None
    rate: float | None = plan.start_flows
    for _ in range(plan.search_trials):
        if rate is None:
            break
        row: dict[str, Any] = {}
        for attempt in range(2):  # the machine is shared: a rate fails only if it fails twice
            row = journey_trial(url, rate, plan.search_s, work, attempt=attempt)
            trials.append(row)
            log(
                f"journey @ {rate:,.0f} flows/s: {row['steps_per_s']:,.0f} steps/s, agent CPU "
                f"{lib_pct(row['agent_cpu'])}, lag p99 {row['lag_p99']} ms, dropped {row['dropped']}, "
                f"failed {row['failed']} {row['errors'] or ''} -> {'holds' if row['ok'] else 'does not hold'}"
            )
            if row["ok"]:
                break
        if row["ok"]:
            lo = rate
        else:
            hi = rate
        rate = next_rate(rate, lo, hi)
    best = [t for t in trials if t["ok"] and t["rate"] == lo]
    return {"steps": STEPS, "max_flows": lo, "best": best[-1] if best else None, "trials": trials}


def locust_journey(url: str, users: int, seconds: int, work: Path) -> dict[str, Any]:
    """Part 2, Locust: ``users`` users of bench/locust_journey.py for ``seconds`` on the generator core. Its
    CPU is read from /proc as ours is (the busiest window as long as the run less a second), so that its
    start-up and shutdown do not count."""
    work.mkdir(parents=True, exist_ok=True)
    prefix = work / f"locust-journey-{users}-{int(time.time() * 1000) % 100000}"
    cmd = [
        *("taskset", "-c", GEN_CORE, str(LOCUST_VENV / "bin" / "locust")),
        *("-f", str(BENCH / "locust_journey.py"), "--headless", "-u", str(users), "-r", str(users)),
        *(
            "-t",
            f"{seconds}s",
            "--host",
            url,
            "--only-summary",
            "--csv",
            str(prefix),
            "--loglevel",
            "WARNING",
        ),
    ]
    with open(f"{prefix}.log", "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        try:
            with lib.Sampler([proc.pid], every=0.5) as sampler:
                try:
                    proc.wait(timeout=seconds + 60)
                except subprocess.TimeoutExpired:
                    log("locust did not finish in time; stopping it")
        finally:
            lib.stop(proc)
    rows: dict[str, dict[str, str]] = {}
    stats = Path(f"{prefix}_stats.csv")
    if stats.exists():
        lines = stats.read_text().splitlines()
        header = lines[0].split(",")
        for line in lines[1:]:
            cells = line.split(",")
            if len(cells) == len(header):
                rows[cells[header.index("Name")]] = dict(zip(header, cells, strict=True))
    total = rows.get("Aggregated", {})
    shown = " ".join(cmd).replace(str(ROOT) + "/", "").replace(str(work), "DIR").replace(url, "URL")
    steps = float(total.get("Requests/s", 0.0) or 0.0)
    cpu = sampler.busiest_share(proc.pid, max(1.0, seconds - 1.0))
    return {
        "users": users,
        "seconds": seconds,
        "steps_per_s": steps,
        "cpu": cpu,
        "per_cpu_s": steps / cpu if cpu else None,
        "failures": int(float(total.get("Failure Count", 0) or 0)),
        "requests": int(float(total.get("Request Count", 0) or 0)),
        "by_step": {
            k: int(float(v.get("Request Count", 0) or 0)) for k, v in rows.items() if k != "Aggregated"
        },
        "others": others_on_core(sampler.samples, proc.pid, int(GEN_CORE)),
        "stolen": sampler.stolen,
        "target_busy": sampler.busiest_core(int(TARGET_CORE), max(1.0, seconds - 1.0)),
        "cmd": shown,
    }


def journey_trial(url: str, rate: float, seconds: int, work: Path, **extra: Any) -> dict[str, Any]:
    """Our agent on the journey at ``rate`` flows/s."""
    trial = lib.open_trial("fast", url, rate, seconds, work, requests=JOURNEY)
    row = _summary(trial, **extra)
    row["ok"] = _sustained(row, rate)
    row["steps_per_s"] = row["achieved"] * STEPS
    row["us_step"] = None if row["us"] is None else row["us"] / STEPS
    row["per_cpu_s"] = row["steps_per_s"] / row["agent_cpu"] if row["agent_cpu"] else None
    flow = trial.results.get("flows", {}).get("journey", {})
    row["flows_ok"], row["flows_failed"] = flow.get("ok"), flow.get("failed")
    row["step_gap"] = step_gap(trial.results)
    return row


def side_by_side_journey(url: str, plan: Plan, work: Path, locust: bool = True) -> list[dict[str, Any]]:
    """Part 2, interleaved, in rounds (L O P, P O L, ...): Locust (closed loop), ours at ``plan.fixed_flows``
    flows/s, and plain requests (GET /, profile A) at as many requests/s as those flows have steps; steps
    (requests) per CPU-second of each, paired by round."""
    runs: list[dict[str, Any]] = []
    steps_rate = plan.fixed_flows * STEPS
    for n in range(plan.journey_rounds):
        for who in "LOP" if n % 2 == 0 else "POL":
            if who == "L" and locust:
                row = {
                    "who": "locust",
                    "round": n,
                    **locust_journey(url, plan.locust_users, plan.locust_s, work),
                }
                log(
                    f"locust journey x{plan.locust_users}: {row['steps_per_s']:,.0f} steps/s, CPU "
                    f"{lib_pct(row['cpu'])}, {_f(row['per_cpu_s'], 0)} steps per CPU-second, "
                    f"failures {row['failures']}"
                )
            elif who == "O":
                row = {"who": "ours", **journey_trial(url, plan.fixed_flows, plan.trial_s, work, round=n)}
                log(
                    f"journey @ {plan.fixed_flows:,.0f} flows/s: {row['steps_per_s']:,.0f} steps/s, CPU "
                    f"{lib_pct(row['agent_cpu'])}, {_f(row['per_cpu_s'], 0)} steps per CPU-second, "
                    f"failed {row['failed']}"
                )
            elif who == "P":
                tables = ONE_STEP["A"][0]
                trial = lib.open_trial("fast", url, steps_rate, plan.trial_s, work / "plain", requests=tables)
                row = {"who": "plain", **_summary(trial, round=n)}
                row["steps_per_s"] = row["achieved"]
                row["per_cpu_s"] = row["achieved"] / row["agent_cpu"] if row["agent_cpu"] else None
                log(
                    f"plain GET / @ {steps_rate:,.0f}/s: CPU {lib_pct(row['agent_cpu'])}, "
                    f"{_f(row['per_cpu_s'], 0)} requests per CPU-second"
                )
            else:
                continue
            runs.append(row)
    return runs


def measure(plan: Plan, work: Path, locust: bool = True) -> dict[str, Any]:
    """Both parts, each against its own nginx (one worker, core 1)."""
    work.mkdir(parents=True, exist_ok=True)
    began = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load_before = Path("/proc/loadavg").read_text().strip()
    with lib.nginx() as url:
        log(f"one-step flows against plain requests at {plan.rate:,.0f}/s, nginx at {url}")
        one = side_by_side(url, plan, work)
    with lib.nginx(JOURNEY_LOCATIONS) as url:
        log(f"five-step journey, nginx at {url}")
        write_users(work)
        paired = side_by_side_journey(url, plan, work, locust)
        ours = journey_search(url, plan, work)
    return {
        "started": began,
        "machine": lib.machine(),
        "quick": plan == QUICK,
        "load": [load_before, Path("/proc/loadavg").read_text().strip()],
        "one_step": one,
        "journey": ours,
        "paired": paired,
        "fixed_flows": plan.fixed_flows,
    }


# --- the report's section


def _f(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def lib_pct(share: float | None) -> str:
    return "-" if share is None else f"{100 * share:.0f}%"


def _sp(s: dict[str, float] | None, digits: int = 1, unit: str = "") -> str:
    if s is None:
        return "-"
    return f"{s['median']:,.{digits}f}{unit} ({s['min']:,.{digits}f}-{s['max']:,.{digits}f})"


def _spp(s: dict[str, float] | None) -> str:
    """A spread of shares, in percent."""
    if s is None:
        return "-"
    return f"{lib_pct(s['median'])} ({lib_pct(s['min'])}-{lib_pct(s['max'])})"


def _med(s: dict[str, float] | None) -> float | None:
    return None if s is None else s["median"]


def verdicts(fig: dict[str, Any]) -> dict[str, Any]:
    """The side-by-side figures reduced: spread per profile and the paired ratios B/A and C/A."""
    trials = fig.get("one_step", {}).get("trials", [])
    out: dict[str, Any] = {}
    for name in ONE_STEP:
        out[name] = spread([t["us"] for t in trials if t["profile"] == name and t["us"] is not None])
        out[name + "_proc"] = spread(
            [t["proc_us"] for t in trials if t["profile"] == name and t["proc_us"] is not None]
        )
    for num in ("B", "C"):
        out[num + "/A"] = spread(paired_ratios(trials, num, "A"))
        out[num + "/A_proc"] = spread(paired_ratios(trials, num, "A", "proc_us"))
    return out


def journey_ratio(fig: dict[str, Any]) -> tuple[float | None, float | None, float | None]:
    """Our steps/s at the highest sustained rate, Locust's steps/s (the median of its runs, a full core),
    and ours over Locust's."""
    best = fig.get("journey", {}).get("best")
    ours = best["steps_per_s"] if best else None
    runs = [r["steps_per_s"] for r in fig.get("paired", []) if r["who"] == "locust" and r["steps_per_s"]]
    theirs = statistics.median(runs) if runs else None
    return ours, theirs, (ours / theirs if ours and theirs else None)


def efficiency(fig: dict[str, Any]) -> dict[str, dict[str, float] | None]:
    """Steps per CPU-second of ours and of Locust in the interleaved runs, and ours over Locust's by round."""
    paired = fig.get("paired", [])
    rows = [dict(r, profile=r["who"]) for r in paired if r.get("per_cpu_s")]
    return {
        "ours": spread([r["per_cpu_s"] for r in rows if r["who"] == "ours"]),
        "locust": spread([r["per_cpu_s"] for r in rows if r["who"] == "locust"]),
        "plain": spread([r["per_cpu_s"] for r in rows if r["who"] == "plain"]),
        "ratio": spread(paired_ratios(rows, "ours", "locust", "per_cpu_s")),
        "step_vs_plain": spread(
            paired_ratios(rows, "plain", "ours", "per_cpu_s")
        ),  # CPU per step / per request
    }


def section(fig: dict[str, Any], number: str = "11.") -> list[str]:
    """docs/benchmarks.md's "User journeys" section from :func:`measure`'s figures."""
    lines: list[str] = []
    add = lines.append
    one = fig.get("one_step", {})
    v = verdicts(fig)
    add(f"## {number} User journeys".replace("  ", " "))
    add("")
    add(
        f"Measured by `bench/flows.py` (`python -m bench.flows`, also run by `make bench`) on "
        f"{fig.get('started', '-')}"
        f"{' (`--quick`)' if fig.get('quick') else ''}. "
        f"One agent (fast engine) on core {GEN_CORE}, nginx (one worker) and the coordinator on core "
        f"{TARGET_CORE}; everything on loopback."
    )
    load = fig.get("load") or ["-", "-"]
    m = fig.get("machine") or {}
    if m:
        add("")
        add(
            f"Machine: {m.get('cpu', '-')}, {m.get('cores', '-')} cores, {m.get('kernel', '-')}, Python "
            f"{m.get('python', '-')}, virtualized: {m.get('virtualization', '-')}; uvloop "
            f"{m.get('uvloop', '-')}, httptools {m.get('httptools', '-')}, {m.get('nginx', '-')}, "
            f"{m.get('locust', '-')}."
        )
    add("")
    add(
        f"Load average before and after: `{load[0]}` / `{load[-1]}`. Two cores, so anything else running "
        "on the machine shares the agent's: each trial's `core 0, others` says how much of core 0 went to "
        "other work while it ran. CPU per request is what the agent itself spent, and the comparisons are "
        "between trials run next to each other; single figures still move by 10-20% from trial to trial."
    )
    add("")
    add("### One-step flows against plain requests, side by side")
    add("")
    add(
        f"Three profiles at {_f(one.get('rate'), 0)}/s (open model, constant rate after a 2 s ramp, "
        f'{one.get("seconds", "-")} s each) against nginx\'s `return 200 "ok"`, interleaved in rounds '
        "(A B C, C B A, ...) so that the machine's drift falls on all three alike. `agent µs/request` is the "
        "CPU the agent measures of itself each second (user + system, in results.json's intervals), summed "
        "over the hold less its first and last second, divided by the requests completed meanwhile; "
        "`/proc µs/request` is the busiest hold-long window of the agent's CPU read from /proc by the bench, "
        "divided by the achieved rate (a cross-check; it includes a little of the ramp and the final "
        "report). Medians, with the lowest and highest trial in brackets; the ratios are taken within each "
        "round (the trials next to each other), then their median and range."
    )
    add("")
    direct = one.get("direct", {})
    add(
        "| profile | what | sent without the flow runner | trials | agent µs/request | /proc µs/request "
        "| vs A (agent) | vs A (/proc) |"
    )
    add("|---|---|---|---:|---:|---:|---:|---:|")
    for name, (_, what) in ONE_STEP.items():
        n = sum(1 for t in one.get("trials", []) if t["profile"] == name)
        ratio = "1" if name == "A" else _sp(v.get(name + "/A"), 3)
        ratio_proc = "1" if name == "A" else _sp(v.get(name + "/A_proc"), 3)
        sent = "yes" if direct.get(name) else "no"
        add(
            f"| {name} | {what} | {sent} | {n} | {_sp(v.get(name))} | {_sp(v.get(name + '_proc'))} "
            f"| {ratio} | {ratio_proc} |"
        )
    add("")
    add(_one_step_reading(v))
    add("")
    add(
        "Trials in the order run. `core 0, others` is how busy the agent's core was with anything but the "
        "agent over the trial (other processes of a shared machine, kernel work not charged to the agent); "
        "`stolen`, the share of the machine's time its hypervisor gave to other guests."
    )
    add("")
    add(
        "| # | profile | rate /s | achieved /s | agent CPU (busiest) | agent µs/request | /proc µs/request "
        "| lag p99 ms | dropped | failed | core 0, others | stolen |"
    )
    add("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for i, t in enumerate(one.get("trials", []), start=1):
        add(
            f"| {i} | {t['profile']} | {_f(t['rate'], 0)} | {_f(t['achieved'], 0)} "
            f"| {lib_pct(t['agent_cpu'])} "
            f"| {_f(t['us'])} | {_f(t['proc_us'])} | {_f(t['lag_p99'], 3)} | {t['dropped']} | {t['failed']} "
            f"| {lib_pct(t.get('others'))} | {lib_pct(t['stolen'])} |"
        )
    add("")
    _journey_part(fig, add)
    return lines


def _one_step_reading(v: dict[str, Any]) -> str:
    """The goal (B within 10% of A) in words, with the noise said plainly."""
    ba, ca, a = v.get("B/A"), v.get("C/A"), v.get("A")
    if ba is None or a is None:
        return "Not measured."
    noise = a["rel"]
    met = ba["median"] <= 1.10
    text = (
        f"**Goal: a one-step flow within 10% of a plain request.** B/A = {ba['median']:.3f} "
        f"(rounds {ba['min']:.3f}-{ba['max']:.3f}): {'met' if met else 'not met'}. "
    )
    if abs(ba["median"] - 1) < max(noise, ba["max"] - ba["min"]):
        text += (
            f"The difference is within the noise: A's own trials spread by {100 * noise:.0f}% of their "
            "median, "
            f"and B/A by {ba['max'] - ba['min']:.3f} between rounds."
        )
    else:
        text += f"A's own trials spread by {100 * noise:.0f}% of their median."
    if ca is not None:
        text += (
            f" Through the flow runner (C) a one-step flow costs {ca['median']:.2f}x a plain request "
            f"(rounds {ca['min']:.2f}-{ca['max']:.2f})."
        )
    return text


def _journey_part(fig: dict[str, Any], add: Any) -> None:
    journey = fig.get("journey", {})
    add("### A five-step journey: ours against Locust SequentialTaskSet")
    add("")
    add(
        "The target is nginx with static locations that emulate a shop (`bench/flows.py`, "
        "`JOURNEY_LOCATIONS`): `POST /login` answers a JSON token and item list and sets a session cookie; "
        "`GET /items` a list and an `X-Page` header; `GET /items/N` answers 401 without the login's bearer "
        "token; `POST /cart` and `POST /checkout` answer 401 without the session cookie. The journey, the "
        "same on both sides, no pauses: (1) login, a POST of a JSON body with a user and password from a "
        f"{USERS}-row CSV, capturing the token (`$.token`), the item id (`$.items[0].id`) and the session "
        "cookie, checking the status; (2) the listing, with the captured session in a header, capturing "
        "`X-Page`; (3) the item `/items/{{ item }}` with `Authorization: Bearer {{ token }}`; (4) a cart "
        "POST with the item and page in its JSON body, authenticated by the cookie jar, capturing `$.cart`; "
        "(5) a checkout POST with the cart, checking the body contains `done`. Any 401 fails a step, so "
        "every counted journey carried its token and cookie."
    )
    add("")
    add(
        "Locust: `SequentialTaskSet` of the same five steps under `FastHttpUser` (`bench/locust_journey.py`: "
        "`json.loads` of the raw body, the response header, the cookie from the user's cookie jar, cleared at"
        " each login), no wait, closed loop, 50 users (more than its core can serve); its steps/s is its "
        "requests/s. Ours: one agent, open model, a constant rate of flows after a 2 s ramp; steps/s = flows "
        "completed per second over the hold x 5. Each side's CPU is read from /proc (the busiest window as "
        "long as the run less a second, so start-up and shutdown do not count)."
    )
    add("")
    eff = efficiency(fig)
    locust_cpu = spread([r["cpu"] for r in fig.get("paired", []) if r["who"] == "locust" and r.get("cpu")])
    ours, theirs, ratio = journey_ratio(fig)
    max_flows = journey.get("max_flows")
    best = journey.get("best") or {}
    add(
        "**Steps per CPU-second, interleaved.** Locust, ours at "
        f"{_f(fig.get('fixed_flows'), 0)} flows/s ({_f((fig.get('fixed_flows') or 0) * STEPS, 0)} steps/s), "
        "and plain requests (profile A, GET /) at as many requests per second as those steps, in rounds "
        "(Locust, ours, plain; then plain, ours, Locust; ...): the CPU each spends per step, compared within "
        "each round. Ours runs below a full core here, so its fixed costs (timers, the once-a-second "
        "report) weigh a little more per step than at its maximum; the plain requests at the same rate "
        "show how much of a step's cost is the journey's own (its templates, captures, checks, cookie jar "
        "and reading whole bodies)."
    )
    add("")
    add(
        "| # | round | who | flows/s | steps/s | CPU | µs per step | steps per CPU-second | failed "
        "| core 0, others | stolen |"
    )
    add("|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for i, r in enumerate(fig.get("paired", []), start=1):
        locust = r["who"] == "locust"
        steps = r["steps_per_s"]
        cpu = r["cpu"] if locust else r["agent_cpu"]
        per = r.get("per_cpu_s")
        who = {
            "locust": f"Locust SequentialTaskSet, {r.get('users')} users",
            "ours": "loadgen, fast engine, the journey",
            "plain": "loadgen, fast engine, plain GET / (one request a step)",
        }[r["who"]]
        failed = r["failures"] if locust else r["failed"]
        flows_s = "-" if r["who"] == "plain" else _f(steps / STEPS, 0)
        add(
            f"| {i} | {r['round'] + 1} | {who} | {flows_s} | {_f(steps, 0)} | {lib_pct(cpu)} "
            f"| {_f(1e6 / per if per else None)} | {_f(per, 0)} | {failed} | {lib_pct(r.get('others'))} "
            f"| {lib_pct(r.get('stolen'))} |"
        )
    add("")
    add(
        f"Steps per CPU-second: ours {_sp(eff['ours'], 0)}, Locust {_sp(eff['locust'], 0)}, plain requests "
        f"{_sp(eff['plain'], 0)}; **ours / Locust by round: {_sp(eff['ratio'], 2, 'x')}**; a journey step "
        f"costs {_sp(eff['step_vs_plain'], 2, 'x')} the CPU of a plain request at the same request rate."
    )
    add("")
    add(
        "**Highest sustained rate.** Ours searched by the rule of section 2 (no drops, no failures, send lag "
        "p99 <= 5 ms over the whole run, 98% of the rate's flows completed): from 2,000 flows/s, grown 1.25x "
        "while rates hold, then bisected to within 5%; a rate fails only if it fails twice. Locust's figure "
        "is the median of its runs above (closed loop: what it did with the CPU it got). On a machine shared "
        "with other work (`core 0, others`) the send lag rule trips on the others' bursts as well as on our "
        "own, so this figure moves more between runs than the CPU per step."
    )
    add("")
    add(
        "| | flows/s | steps/s | CPU |\n|---|---:|---:|---:|\n"
        f"| loadgen, fast engine, highest sustained rate | {_f(max_flows, 0)} | {_f(ours, 0)} "
        f"| {lib_pct(best.get('agent_cpu'))} |\n"
        f"| Locust SequentialTaskSet, FastHttpUser (median) | {_f(theirs / STEPS if theirs else None, 0)} "
        f"| {_f(theirs, 0)} | {_spp(locust_cpu)} |"
    )
    add("")
    per = eff["ratio"]
    add(
        f"**Journey steps per CPU-second (a core's worth): {_f(_med(eff['ours']), 0)} ours, "
        f"{_f(_med(eff['locust']), 0)} Locust's: {_f(_med(per), 1)}x (median of the rounds).** At our "
        f"highest sustained rate: {_f(ours, 0)} steps/s ours (using {lib_pct(best.get('agent_cpu'))} of its "
        f"core), {_f(theirs, 0)} Locust's ({'-' if ratio is None else f'{ratio:.1f}x'})."
    )
    add("")
    add("Our search, in the order run:")
    add("")
    add(
        "| flows/s | steps/s achieved | agent CPU | agent µs/step | lag p99 ms | dropped | failed | errors "
        "| steps not counted as scheduled | core 0, others | stolen | verdict |"
    )
    add("|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---|")
    for t in journey.get("trials", []):
        errors = ", ".join(f"{k} {n}" for k, n in (t.get("errors") or {}).items()) or "-"
        add(
            f"| {_f(t['rate'], 0)} | {_f(t['steps_per_s'], 0)} | {lib_pct(t['agent_cpu'])} "
            f"| {_f(t['us_step'])} | {_f(t['lag_p99'], 3)} | {t['dropped']} | {t['failed']} | {errors} "
            f"| {t.get('step_gap', '-')} | {lib_pct(t.get('others'))} | {lib_pct(t.get('stolen'))} "
            f"| {'holds' if t['ok'] else 'does not hold'} |"
        )
    add("")
    gaps = [t.get("step_gap") or 0 for t in journey.get("trials", [])]
    if any(gaps):
        add(
            "`steps not counted as scheduled`: over the journey's steps, ok + failed + dropped + in flight "
            "at the end less scheduled, from results.json; it should be 0 (every step conserved). In "
            f"{sum(1 for g in gaps if g)} of {len(gaps)} trials it was not (up to {max(gaps):,} steps): "
            "steps counted done that no step's `scheduled` counts."
        )
        add("")
    ours_cmd = [t["cmd"] for t in journey.get("trials", [])[:1]]
    locust_cmd = [r["cmd"] for r in fig.get("paired", []) if r["who"] == "locust"][:1]
    if ours_cmd or locust_cmd:
        add("Commands: " + "; ".join(f"`{c}`" for c in ours_cmd + locust_cmd) + ".")
        add("")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="fewer and shorter trials (about 3 minutes)")
    parser.add_argument("--no-locust", action="store_true", help="our side only")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    missing = lib.ensure_tools()
    if {"nginx", "taskset"} & set(missing):
        log(f"cannot run without {missing}")
        return 2
    work = Path(tempfile.mkdtemp(prefix="loadgen-bench-flows-"))
    log(f"work files in {work}")
    fig = measure(QUICK if args.quick else FULL, work, locust=not args.no_locust and "locust" not in missing)
    (work / "flows.json").write_text(json.dumps(fig, indent=1))
    if args.json:
        args.json.write_text(json.dumps(fig, indent=1))
    print("\n".join(section(fig)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
