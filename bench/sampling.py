"""Where an agent's time goes, by sampling: ``py-spy record`` on a real agent, attributed to its parts.

cProfile (section 7 of the report, call counts) slows Python code and cannot see time spent in C code or in
the kernel under a Python line; a sampling profiler can: py-spy reads the agent's stack 250 times a second
without stopping it, and a sample whose innermost Python line is ``transport.write(...)`` is time in uvloop's
write and the ``send`` system call beneath it (on loopback the kernel also does the receiving side's TCP work
there). Samples are attributed to the innermost frame that belongs to this project (so time in hdrhistogram
or ``collections.Counter`` counts for the recorder that called it); samples whose innermost frame is the
event loop's run call are uvloop's own C code: polling, reading sockets, timers, calling back into Python.
"""

from __future__ import annotations

import linecache
import re
from collections import Counter
from pathlib import Path
from typing import Any

from bench import lib
from bench.lib import LOADGEN, ROOT, Trial

PYSPY = lib.LOCUST_VENV / "bin" / "py-spy"
RATE_HZ = 250

WRITE = "write system call (`transport.write`, kernel loopback TCP)"
LOOP = "uvloop's C loop (epoll, socket reads, timers, calls into Python)"
PARTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("engine, Python (request/response handling)", ("agents/fast_engine.py", "agents/httpx_engine.py")),
    ("engine, Python (pool)", ("agents/pool.py",)),
    ("arrival loop and schedule", ("agents/arrivals.py", "loadgen/schedule.py", "loadgen/curve.py")),
    ("recorder and once-a-second histogram fold", ("agents/recorder.py", "loadgen/histogram.py")),
    ("agent control: coordinator messages, heartbeats", ("agents/agent.py", "loadgen/wire.py")),
)
_FRAME = re.compile(r"^(?P<func>.*) \((?P<path>[^():]+):(?P<line>\d+)\)$")


def _project_path(path: str) -> str | None:
    """``agents/x.py`` for a file of this project (as py-spy prints it, absolute or relative), else None."""
    p = Path(path)
    if p.is_absolute():
        try:
            p = p.relative_to(ROOT)
        except ValueError:
            return None
    text = p.as_posix()
    return text if text.split("/", 1)[0] in ("agents", "loadgen", "coordinator") else None


def attribute(raw: str) -> tuple[Counter[str], Counter[str], int]:
    """Samples per part and per innermost project line, and the number of samples, from py-spy's ``raw``
    output (one ``frame;frame;...;frame count`` line per distinct stack, outermost first)."""
    parts: Counter[str] = Counter()
    lines: Counter[str] = Counter()
    total = 0
    for row in raw.splitlines():
        stack, _, count = row.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [m for f in stack.split(";") if (m := _FRAME.match(f.strip()))]
        if not frames:
            parts["other"] += n
            continue
        leaf = frames[-1]
        if leaf["func"] in ("Runner.run", "BaseEventLoop.run_until_complete", "run") and (
            "asyncio" in leaf["path"] or "uvloop" in leaf["path"]
        ):
            parts[LOOP] += n
            continue
        own = next(((f, p) for f in reversed(frames) if (p := _project_path(f["path"]))), None)
        if own is None:
            parts["other (start-up, libraries)"] += n
            continue
        frame, path = own
        source = linecache.getline(str(ROOT / path), int(frame["line"])).strip()
        lines[f"{path}:{frame['line']} `{source[:70]}`"] += n
        if frame is leaf and "transport.write(" in source:
            parts[WRITE] += n
            continue
        part = next((name for name, files in PARTS if path in files), "other project code")
        parts[part] += n
    return parts, lines, total


def sample_hot_path(url: str, rate: float, seconds: int, work: Path) -> dict[str, Any]:
    """One agent (fast engine) at ``rate`` under py-spy; its samples attributed to the agent's parts."""
    if not PYSPY.exists():
        return {"rate": rate, "missing": "py-spy"}
    out = work / "agent-pyspy.txt"
    cmd = [str(PYSPY), "record", "--nonblocking", "-r", str(RATE_HZ), "-f", "raw", "-o", str(out), "--"]
    trial: Trial = lib.open_trial("fast", url, rate, seconds, work, agent_cmd=[*cmd, *LOADGEN, "agent"])
    if not out.exists():
        missing = "py-spy output (it needs ptrace: root or CAP_SYS_PTRACE)"
        return {"rate": rate, "trial": trial, "missing": missing}
    parts, lines, total = attribute(out.read_text())
    return {"rate": rate, "trial": trial, "parts": parts, "lines": lines, "samples": total}
