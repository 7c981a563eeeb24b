"""The agent's memory through stalls of its target: nginx's worker is stopped (SIGSTOP) for a moment at
given times while one agent (fast engine) sends a constant rate; the agent logs its memory every second.

    python -m bench.stalls --rate 15000 --seconds 240 --stall-at 30,70,110,150,190
    python -m bench.stalls --source OTHER_CHECKOUT   # the agent's code from another checkout, to compare
    python -m bench.stalls --rate 5000 --tracemalloc SNAPSHOTS   # then bench/agent.py --compare A B

Each stall makes the pool open a connection for the requests that would wait (an open model must: one
request per connection), and the connections idle for 30 s afterwards are closed. What it shows is whether
the agent's memory returns to a plateau after each stall (it should: the freed connections' memory is reused
at the next one) or climbs with every stall (connections kept after they closed). Prints the agent's RSS and
the interpreter's allocated blocks every ``--every`` seconds. Loopback only, bounded in time.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench import lib


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=15_000.0)
    parser.add_argument("--seconds", type=int, default=240)
    parser.add_argument("--stall-at", default="30,70,110,150,190", help="seconds into the run, comma list")
    parser.add_argument("--stall", type=float, default=0.4, help="how long each stall lasts, in seconds")
    parser.add_argument("--every", type=int, default=20, help="print a line every this many seconds")
    parser.add_argument("--source", type=Path, help="run the agent from this checkout's code")
    parser.add_argument("--tracemalloc", type=Path, help="trace the agent's allocations, snapshots here")
    parser.add_argument("--collect-every", type=float, help="the agent runs a full collection every N s")
    args = parser.parse_args()
    at = [float(x) for x in args.stall_at.split(",") if x.strip()]
    if any(not 0 < t < args.seconds for t in at):
        parser.error("every --stall-at must fall within the run")
    work = Path(tempfile.mkdtemp(prefix="loadgen-stalls-"))
    memory = work / "memory.jsonl"
    env = ["env", f"PYTHONPATH={args.source.resolve()}"] if args.source else []
    agent = [*env, lib.PY, str(lib.BENCH / "agent.py"), "--memory", str(memory), "--memory-every", "1"]
    if args.tracemalloc:
        agent += ["--tracemalloc", str(args.tracemalloc.resolve()), "--snapshot-every", str(args.every)]
    if args.collect_every:
        agent += ["--collect-every", str(args.collect_every)]
    trials: list[lib.Trial] = []
    with lib.nginx() as url:
        pid = lib.nginx_worker(url)
        run = threading.Thread(
            target=lambda: trials.append(
                lib.open_trial("fast", url, args.rate, args.seconds, work, agent_cmd=agent, sample_every=1.0)
            )
        )
        run.start()
        deadline = time.monotonic() + 60
        while not memory.exists() and time.monotonic() < deadline:  # the agent is up
            time.sleep(0.05)
        with lib.Stalls(pid, sorted(at), args.stall):
            run.join()
    trial = trials[0]
    print(
        f"{args.rate:,.0f}/s for {args.seconds} s, stalls of {args.stall:g} s at {args.stall_at}: "
        f"achieved {trial.rps:,.0f}/s, dropped {trial.dropped}, send lag p99 {trial.lag.get('p99')} ms, "
        f"most connections at nginx {trial.max_connections}"
    )
    print(f"{'t (s)':>6} {'agent RSS (MiB)':>16} {'allocated blocks':>17} {'full collections':>17}")
    for line in memory.read_text().splitlines():
        point = json.loads(line)
        if int(point["t"]) % args.every == 0:
            print(
                f"{point['t']:>6.0f} {point['rss'] / 2**20:>16.1f} {point['blocks']:>17,} "
                f"{point.get('full_collections', '-'):>17}"
            )
        if "garbage" in point:
            print(f"{'':>6} full collection: {point['garbage']}; blocks after {point['blocks_after']:,}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
