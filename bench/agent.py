"""A bench-only agent launcher: ``loadgen agent`` under cProfile, for the hot-path profile.

    python bench/agent.py --connect tcp://127.0.0.1:5555 --cprofile agent.prof

It builds the same :class:`agents.agent.Agent` as ``loadgen agent`` does (the engine is the one the
coordinator's Start names) and dumps the profile of the whole run when it ends.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import sys

import uvloop

from agents.agent import Agent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connect", required=True)
    parser.add_argument("--wait", type=float, default=60.0)
    parser.add_argument("--cprofile", required=True, help="write cProfile stats of the agent run here")
    args = parser.parse_args()
    agent = Agent(args.connect, wait_timeout=args.wait)
    profiler = cProfile.Profile()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        profiler.enable()
        try:
            runner.run(agent.run())
        finally:
            profiler.disable()
            profiler.dump_stats(args.cprofile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
