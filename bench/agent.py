"""A bench-only agent launcher: ``loadgen agent`` under cProfile, or with a memory log.

    python bench/agent.py --connect tcp://127.0.0.1:5555 --cprofile agent.prof
    python bench/agent.py --connect tcp://127.0.0.1:5555 --memory agent-memory.jsonl

It builds the same :class:`agents.agent.Agent` as ``loadgen agent`` does (the engine is the one the
coordinator's Start names). ``--cprofile`` dumps the profile of the whole run when it ends. ``--memory``
writes a JSON line every ``--memory-every`` seconds from a thread: RSS, the interpreter's allocated blocks and
glibc's heap (``mallinfo2``: in use, free, mmapped). ``--census`` adds the objects the collector tracks and
the types whose count changed most since the previous line; it walks every tracked object under the GIL, a
pause of the event loop (a burst of late arrivals, which opens connections) that the plain log avoids.
``--collect-every N`` runs a full collection every N seconds and logs the types of the garbage it found
in cycles (which would otherwise wait for the collector) and the allocated blocks after it.
``--tracemalloc DIR`` traces every allocation (slower: run it at a lower rate) and writes a snapshot into DIR
every ``--snapshot-every`` seconds; compare two with ``python bench/agent.py --compare A.snap B.snap``.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import ctypes
import functools
import gc
import json
import math
import sys
import threading
import time
import tracemalloc
from collections import Counter
from pathlib import Path
from typing import Any

import uvloop

from agents.agent import Agent


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks")
    ] + [(name, ctypes.c_size_t) for name in ("fordblks", "keepcost")]


@functools.cache
def _mallinfo2() -> Any:
    """glibc's mallinfo2, loaded once: each ctypes.CDLL is a reference cycle (it and its function pointers)
    that only a full collection frees, which would drift the allocated blocks this log reports."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
    except (OSError, AttributeError):
        return None
    return libc.mallinfo2


def _mallinfo() -> dict[str, int]:
    mallinfo2 = _mallinfo2()
    if mallinfo2 is None:
        return {}
    info = mallinfo2()
    return {"heap": info.arena, "in_use": info.uordblks, "free": info.fordblks, "mmapped": info.hblkhd}


def _rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _memory_log(path: Path, args: argparse.Namespace, stop: threading.Event) -> None:
    start = time.monotonic()
    next_snapshot = args.snapshot_every
    next_collect = args.collect_every or math.inf
    before: Counter[str] = Counter()
    with path.open("w") as out:
        while not stop.wait(args.memory_every):
            t = round(time.monotonic() - start, 1)
            line: dict[str, object] = {
                "t": t,
                "rss": _rss(),
                "blocks": sys.getallocatedblocks(),
                "full_collections": gc.get_stats()[2]["collections"],
                **_mallinfo(),
            }
            if args.census:
                types = Counter(type(o).__name__ for o in gc.get_objects())
                change = types.copy()
                change.subtract(before)
                before = types
                line["objects"] = sum(types.values())
                line["grown"] = {k: v for k, v in change.most_common(8) if v > 0}
            if args.tracemalloc is not None and t >= next_snapshot:
                next_snapshot += args.snapshot_every
                tracemalloc.take_snapshot().dump(str(args.tracemalloc / f"{t:08.1f}.snap"))
            if t >= next_collect:
                next_collect += args.collect_every
                line["garbage"] = _collect()
                line["blocks_after"] = sys.getallocatedblocks()
            out.write(json.dumps(line) + "\n")
            out.flush()


def _collect() -> dict[str, int]:
    """A full collection that keeps what it found unreachable (``gc.DEBUG_SAVEALL``): the types of the
    garbage in cycles that had waited for it, then freed."""
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        gc.collect()
        found = Counter(type(o).__name__ for o in gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    gc.collect()
    return {"objects": sum(found.values()), **dict(found.most_common(12))}


def _compare(first: Path, last: Path, top: int = 25) -> None:
    """The allocation sites (with their callers) whose memory grew most from ``first`` to ``last``."""
    old = tracemalloc.Snapshot.load(str(first))
    new = tracemalloc.Snapshot.load(str(last))
    for stat in new.compare_to(old, "traceback")[:top]:
        print(f"{stat.size_diff / 1024:+10.1f} KiB {stat.count_diff:+8,} blocks  ({stat.count:,} now)")
        for frame in stat.traceback.format(limit=6, most_recent_first=True):
            print("      " + frame.strip())


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--connect")
    parser.add_argument("--wait", type=float, default=60.0)
    parser.add_argument("--cprofile", help="write cProfile stats of the agent run here")
    parser.add_argument("--memory", type=Path, help="write a memory line (JSON) here every --memory-every s")
    parser.add_argument("--memory-every", type=float, default=30.0)
    parser.add_argument("--census", action="store_true", help="add an object census to the memory log")
    parser.add_argument("--tracemalloc", type=Path, help="trace allocations; snapshots here")
    parser.add_argument("--snapshot-every", type=float, default=60.0)
    parser.add_argument("--trace-frames", type=int, default=1, help="frames kept per allocation traced")
    parser.add_argument("--collect-every", type=float, default=0.0, help="full collection every N s, logged")
    parser.add_argument("--compare", nargs=2, type=Path, help="print the growth between two snapshots")
    args = parser.parse_args()
    if args.compare:
        _compare(*args.compare)
        return 0
    if not args.connect:
        parser.error("--connect is required")
    if args.tracemalloc:
        args.tracemalloc.mkdir(parents=True, exist_ok=True)
        tracemalloc.start(args.trace_frames)
    agent = Agent(args.connect, wait_timeout=args.wait)
    profiler = cProfile.Profile() if args.cprofile else None
    stop = threading.Event()
    if args.memory:
        threading.Thread(
            target=_memory_log,
            args=(args.memory, args, stop),
            daemon=True,
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
