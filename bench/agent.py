"""A bench-only agent launcher: ``loadgen agent`` under cProfile, or with a memory log.

    python bench/agent.py --connect tcp://127.0.0.1:5555 --cprofile agent.prof
    python bench/agent.py --connect tcp://127.0.0.1:5555 --memory agent-memory.jsonl

It builds the same :class:`agents.agent.Agent` as ``loadgen agent`` does (the engine is the one the
coordinator's Start names). ``--cprofile`` dumps the profile of the whole run when it ends. ``--memory``
writes a JSON line every ``--memory-every`` seconds from a thread: RSS, the interpreter's allocated blocks and
glibc's heap (``mallinfo2``: in use, free, mmapped). ``--census`` adds the objects the collector tracks and
the types whose count changed most since the previous line; it walks every tracked object under the GIL, a
pause of the event loop (a burst of late arrivals, which opens connections) that the plain log avoids.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import ctypes
import gc
import json
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import uvloop

from agents.agent import Agent


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks")
    ] + [(name, ctypes.c_size_t) for name in ("fordblks", "keepcost")]


def _mallinfo() -> dict[str, int]:
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
    except (OSError, AttributeError):
        return {}
    info = libc.mallinfo2()
    return {"heap": info.arena, "in_use": info.uordblks, "free": info.fordblks, "mmapped": info.hblkhd}


def _rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _memory_log(path: Path, every: float, census: bool, stop: threading.Event) -> None:
    start = time.monotonic()
    before: Counter[str] = Counter()
    with path.open("w") as out:
        while not stop.wait(every):
            line: dict[str, object] = {
                "t": round(time.monotonic() - start, 1),
                "rss": _rss(),
                "blocks": sys.getallocatedblocks(),
                **_mallinfo(),
            }
            if census:
                types = Counter(type(o).__name__ for o in gc.get_objects())
                change = types.copy()
                change.subtract(before)
                before = types
                line["objects"] = sum(types.values())
                line["grown"] = {k: v for k, v in change.most_common(8) if v > 0}
            out.write(json.dumps(line) + "\n")
            out.flush()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connect", required=True)
    parser.add_argument("--wait", type=float, default=60.0)
    parser.add_argument("--cprofile", help="write cProfile stats of the agent run here")
    parser.add_argument("--memory", type=Path, help="write a memory line (JSON) here every --memory-every s")
    parser.add_argument("--memory-every", type=float, default=30.0)
    parser.add_argument("--census", action="store_true", help="add an object census to the memory log")
    args = parser.parse_args()
    agent = Agent(args.connect, wait_timeout=args.wait)
    profiler = cProfile.Profile() if args.cprofile else None
    stop = threading.Event()
    if args.memory:
        threading.Thread(
            target=_memory_log, args=(args.memory, args.memory_every, args.census, stop), daemon=True
        ).start()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        if profiler:
            profiler.enable()
        try:
            runner.run(agent.run())
        finally:
            stop.set()
            if profiler:
                profiler.disable()
                profiler.dump_stats(args.cprofile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
