"""The soak of ``make bench`` (section 6) on its own, for as long as you like: one agent (fast engine) at a
constant rate against nginx, which stalls for a moment every ``--stall-every`` seconds; prints the memory of
agent and coordinator (first and last third of the window after warm-up, and the slope) and the growth of
results.json and latency.hlog per hour, with the verdict of the goal (under 1 MiB/h).

    python -m bench.soak --rate 20000 --seconds 3600
    python -m bench.soak --rate 20000 --seconds 1800 --stall-every 0   # a target that never stalls

The generator is pinned to core 0 and nginx to core 1, as in the suite. Loopback only, bounded in time.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
import tempfile
from pathlib import Path

from bench import lib, run
from bench.report import FLAT, envelope_text, mib, pct


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=20_000.0)
    parser.add_argument("--seconds", type=int, default=1800)
    parser.add_argument("--stall-every", type=float, default=run.FULL.soak_stall_every)
    args = parser.parse_args()
    if shutil.which("nginx") is None:
        parser.error("nginx is not installed (make bench installs it)")
    plan = dataclasses.replace(run.FULL, soak_s=args.seconds, soak_stall_every=args.stall_every)
    work = Path(tempfile.mkdtemp(prefix="loadgen-soak-"))
    lib.log(f"soak at {args.rate:,.0f}/s for {args.seconds} s; work files in {work}")
    with lib.nginx() as url:
        soak = run.soak(url, args.rate, plan, work)
    trial: lib.Trial = soak["trial"]
    print(
        f"{args.rate:,.0f}/s for {args.seconds} s, {soak['stalls']} stalls of {soak['stall_s']} s: "
        f"achieved {trial.rps:,.0f}/s, dropped {trial.dropped}, failed {trial.failed}, "
        f"send lag p99 {trial.lag.get('p99')} ms, most connections at nginx {trial.max_connections}, "
        f"{pct(trial.stolen)} of the machine's time stolen by the hypervisor"
    )
    for who in ("agent", "coord"):
        env = soak.get(f"{who}_envelope")
        verdict = {
            None: "-",
            "flat": "flat",
            "growing": "NOT flat",
            "unresolved": "too short to tell (a rise within the allocators' steps)",
        }[lib.growth_verdict(env, FLAT)]
        print(f"{who} RSS: {envelope_text(env, soak.get(f'{who}_slope_h'))}: {verdict}")
    for name, info in (soak.get("files") or {}).items():
        print(f"{name}: {mib(info.get('final'), 2)} at the end, {mib(info.get('slope_h'), 2)} per hour")
    return 0


if __name__ == "__main__":
    sys.exit(main())
