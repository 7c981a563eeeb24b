"""What the benchmark suite is made of: the machine, the tools, the target, process sampling, and one trial of
each kind. :mod:`run` puts them in order and writes the report.

Everything runs on loopback (127.0.0.1) and every process is bounded in time: each trial has a deadline
after which its processes are killed. The load generator is pinned to core 0 and the target to core 1
(``taskset``); in open-model trials the coordinator shares the target's core, so that nothing but the agent
runs on the generator's core (as on a fleet, where the coordinator has a machine of its own).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from agents.steal import parse_stolen, read_proc_stat
from bench.nginx import running_nginx

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PY = sys.executable
LOADGEN = [PY, "-m", "loadgen"]
LOCUST_VENV = BENCH / ".venv-locust"
GEN_CORE = "0"
TARGET_CORE = "1"
NICE = ["nice", "-n", "-10"] if os.geteuid() == 0 else []
"""Generator and target run at a higher priority than anything else on the machine, when we may."""
ON_TARGET_CORE = [*NICE, "taskset", "-c", TARGET_CORE]
"""What a target process runs under: pinned to the target core, at that priority."""
TARGET_FULL = 0.95
"""The target's core busier than this (over the busiest window of a trial) counts as full."""
AGENT_FULL = 0.90
"""An agent using less of its core than this had CPU to spare."""
TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def log(line: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {line}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for_port(port: int, within: float) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {within:g} s")


def stop(proc: subprocess.Popen[Any], grace: float = 5.0) -> None:
    """End a process this suite started: SIGTERM, then SIGKILL after ``grace`` seconds."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --- the machine and the tools


def machine() -> dict[str, str]:
    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    info = {
        "cpu": model,
        "cores": str(os.cpu_count()),
        "kernel": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "memory": f"{os.sysconf('SC_PHYS_PAGES') * PAGE / 2**30:.1f} GiB",
    }
    with contextlib.suppress(OSError):
        info["virtualization"] = (
            "yes (hypervisor flag)" if "hypervisor" in Path("/proc/cpuinfo").read_text() else "no"
        )
    for dist in ("uvloop", "httptools", "httpx", "httpcore", "h11", "pyzmq", "hdrhistogram", "msgpack"):
        try:
            info[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            info[dist] = "-"
    info["nginx"] = _first_line(["nginx", "-v"])
    info["wrk"] = _first_line(["wrk", "-v"]).split(" Copyright")[0]
    info["locust"] = _first_line([str(LOCUST_VENV / "bin" / "locust"), "--version"]).split(" from ")[0]
    return info


def _first_line(cmd: Sequence[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
    except OSError:
        return "-"
    text = (out.stdout + out.stderr).strip()
    return text.splitlines()[0] if text else "-"


SYSTEM_TOOLS = ("nginx", "wrk", "taskset", "h2load")
PACKAGES = {
    "taskset": "util-linux",
    "h2load": "nghttp2-client",
}  # the Debian package of each, if not its name


def self_signed(folder: Path) -> None:
    """A self-signed P-256 certificate for 127.0.0.1, ``cert.pem`` and ``key.pem`` in ``folder`` (openssl)."""
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"),
            *("-nodes", "-keyout", str(folder / "key.pem"), "-out", str(folder / "cert.pem")),
            *("-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )


def ensure_tools() -> list[str]:
    """Install nginx, wrk and h2load (apt-get), and Locust and py-spy (their own virtualenv) if missing;
    return what is missing."""
    missing = [tool for tool in SYSTEM_TOOLS if shutil.which(tool) is None]
    if missing and shutil.which("apt-get"):
        log(f"installing {', '.join(missing)} with apt-get")
        packages = [PACKAGES.get(tool, tool) for tool in missing]
        subprocess.run(["apt-get", "update", "-qq"], check=False, timeout=600)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "install", "-y", "-qq", *packages], check=False, timeout=900, env=env)
    wanted = [tool for tool in ("locust", "py-spy") if not (LOCUST_VENV / "bin" / tool).exists()]
    if wanted:
        log(f"installing {', '.join(wanted)} into {LOCUST_VENV}")
        if not (LOCUST_VENV / "bin" / "python").exists():
            subprocess.run([PY, "-m", "venv", str(LOCUST_VENV)], check=False, timeout=300)
        pip = [str(LOCUST_VENV / "bin" / "python"), "-m", "pip", "install", "--quiet"]
        subprocess.run([*pip, *wanted], check=False, timeout=900)
    gone = [tool for tool in SYSTEM_TOOLS if shutil.which(tool) is None]
    gone += [tool for tool in ("locust", "py-spy") if not (LOCUST_VENV / "bin" / tool).exists()]
    return gone


# --- the target


NGINX_HTTP = """\
  access_log off;
  keepalive_requests 100000000;
  keepalive_timeout 300s;
  server {{
    listen 127.0.0.1:{port};
    location / {{ return 200 "ok"; }}
    location = /__status {{ stub_status; }}
{locations}
  }}
"""


@contextlib.contextmanager
def nginx(locations: str = "") -> Iterator[str]:
    """nginx with one worker on the target core, ``return 200 "ok"`` (and ``locations``, more ``location``
    blocks of its server, if given); yields its base URL."""
    with tempfile.TemporaryDirectory(prefix="loadgen-bench-nginx-") as folder:
        port = free_port()
        http = NGINX_HTTP.format(port=port, locations=locations)
        url = f"http://127.0.0.1:{port}"
        with running_nginx(
            Path(folder),
            http,
            [port],
            prefix=ON_TARGET_CORE,
            worker_connections=32768,
            main="worker_rlimit_nofile 65536;",
        ) as pid:
            _NGINX_MASTERS[url] = pid
            try:
                yield url
            finally:
                _NGINX_MASTERS.pop(url, None)


_NGINX_MASTERS: dict[str, int] = {}
"""The master process of each nginx :func:`nginx` runs, by base URL (for :class:`Stalls`)."""


def nginx_worker(url: str) -> int:
    """The worker process of the nginx :func:`nginx` runs at ``url`` (one worker, a child of its master)."""
    master = _NGINX_MASTERS[url]
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    if not children:
        raise RuntimeError(f"nginx at {url} has no worker")
    return int(children[0])


class Stalls:
    """Stalls of a target: its process is stopped (SIGSTOP) for ``length`` seconds at each of ``at``
    (seconds after entering, ascending; :func:`itertools.count` for a stall every so often), the way a real
    server pauses (a full garbage collection, a noisy neighbour, a slow disk) while an open model keeps
    sending. A thread; leaving ``with Stalls(...) as s:`` stops it (and continues the target), and
    ``s.count`` is how many stalls there were."""

    def __init__(self, pid: int, at: Iterable[float], length: float) -> None:
        self.pid, self.at, self.length = pid, at, length
        self.count = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Stalls:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        started = time.monotonic()
        for moment in self.at:
            if self._stop.wait(max(0.0, started + moment - time.monotonic())):
                return
            try:
                os.kill(self.pid, signal.SIGSTOP)
            except ProcessLookupError:
                return
            try:
                self._stop.wait(self.length)
            finally:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGCONT)
            self.count += 1


@contextlib.contextmanager
def builtin_target() -> Iterator[str]:
    """``loadgen target`` on the target core (it answers ``/delay?ms=N`` after N ms); yields its base URL."""
    port = free_port()
    proc = subprocess.Popen(
        [*ON_TARGET_CORE, *LOADGEN, "target", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, 15.0)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)


def target_stats(url: str) -> dict[str, Any]:
    """The built-in target's counters (``/__stats``); empty if it does not answer."""
    try:
        with urllib.request.urlopen(url + "/__stats", timeout=5) as response:
            stats: dict[str, Any] = json.loads(response.read())
    except (OSError, ValueError):
        return {}
    return stats


def reset_target(url: str) -> None:
    with contextlib.suppress(OSError):
        urllib.request.urlopen(url + "/__reset", timeout=5).close()


# --- sampling /proc


def proc_cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def proc_sys_seconds(pid: int) -> float | None:
    """CPU seconds ``pid`` spent in the kernel (stime)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[12]) / TICKS


Measured = tuple[subprocess.CompletedProcess[str], dict[str, float]]


def run_measured(cmd: Sequence[str], timeout: float) -> Measured:
    """Run ``cmd`` to completion; also return the CPU it used: ``cpu`` (share of one core over its wall time)
    and ``kernel`` (the part of that CPU spent in the kernel). Children are measured with getrusage, so this
    must not run while another child of this process ends."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.monotonic()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    wall = time.monotonic() - began
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    user = after.ru_utime - before.ru_utime
    system = after.ru_stime - before.ru_stime
    used = user + system
    return done, {"cpu": used / wall if wall > 0 else 0.0, "kernel": system / used if used > 0 else 0.0}


def proc_rss_bytes(pid: int) -> int | None:
    """Resident memory of ``pid``; None once it has ended (a process that has exited but not been waited
    for reads 0, which is no figure of its memory)."""
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE or None
    except (OSError, IndexError, ValueError):
        return None


def cores_busy() -> list[tuple[int, int]]:
    """(busy, total) jiffies per core from /proc/stat."""
    out = []
    for line in Path("/proc/stat").read_text().splitlines():
        if re.match(r"cpu\d+ ", line):
            values = [int(v) for v in line.split()[1:]]
            idle = values[3] + values[4]
            out.append((sum(values) - idle, sum(values)))
    return out


def jiffies_stolen() -> tuple[int, int]:
    """(stolen, total) jiffies of the whole machine: time the hypervisor gave this virtual machine's cores
    to someone else while they had work (``steal``), read as the agents read it (:mod:`agents.steal`)."""
    return parse_stolen(read_proc_stat()) or (0, 0)


def stolen_share(before: tuple[int, int], after: tuple[int, int]) -> float | None:
    """The share of the machine's time stolen by the hypervisor between two :func:`jiffies_stolen`."""
    total = after[1] - before[1]
    return (after[0] - before[0]) / total if total > 0 else None


@dataclass
class Sample:
    t: float
    cpu: dict[int, float | None]
    rss: dict[int, int | None]
    files: dict[str, int]
    sys: dict[int, float | None] = field(default_factory=dict)  # CPU seconds in the kernel
    connections: int | None = None  # open client connections nginx reports (stub_status), if asked
    cores: list[tuple[int, int]] = field(default_factory=list)  # (busy, total) jiffies per core


def nginx_connections(url: str) -> int | None:
    """Connections open at nginx right now, from its stub_status page (less the one asking)."""
    try:
        with urllib.request.urlopen(url + "/__status", timeout=1.0) as response:  # loopback only
            text = response.read().decode()
    except OSError:
        return None
    match = re.search(r"Active connections:\s*(\d+)", text)
    return int(match.group(1)) - 1 if match else None


@dataclass
class Sampler:
    """Samples CPU seconds and RSS of some processes, and sizes of some files, every ``every`` seconds."""

    pids: list[int]
    every: float = 1.0
    files: list[Path] = field(default_factory=list)
    nginx: str | None = None
    samples: list[Sample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _cores0: list[tuple[int, int]] = field(default_factory=list)
    _stolen0: tuple[int, int] = (0, 0)
    cores_busy: list[float] = field(default_factory=list)
    stolen: float | None = None  # the share of the machine's time the hypervisor took, over the window

    def __enter__(self) -> Sampler:
        self._cores0 = cores_busy()
        self._stolen0 = jiffies_stolen()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        cores1 = cores_busy()
        self.stolen = stolen_share(self._stolen0, jiffies_stolen())
        self.cores_busy = [
            100.0 * (b1 - b0) / max(1, t1 - t0)
            for (b0, t0), (b1, t1) in zip(self._cores0, cores1, strict=False)
        ]

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(
                Sample(
                    time.monotonic(),
                    {pid: proc_cpu_seconds(pid) for pid in self.pids},
                    {pid: proc_rss_bytes(pid) for pid in self.pids},
                    {str(f): f.stat().st_size if f.exists() else 0 for f in self.files},
                    connections=nginx_connections(self.nginx) if self.nginx else None,
                    sys={pid: proc_sys_seconds(pid) for pid in self.pids},
                    cores=cores_busy(),
                )
            )
            self._stop.wait(self.every)

    def busiest_share(self, pid: int, window: float) -> float | None:
        """The highest mean share of one core ``pid`` used over any ``window`` seconds of the samples."""
        points = [(s.t, s.cpu[pid]) for s in self.samples if s.cpu.get(pid) is not None]
        best: float | None = None
        j = 0
        for i, (t1, c1) in enumerate(points):
            while j < i and t1 - points[j][0] > window:
                j += 1
            t0, c0 = points[j]
            if t1 - t0 >= 0.8 * window and c0 is not None and c1 is not None:
                share = (c1 - c0) / (t1 - t0)
                best = share if best is None else max(best, share)
        return best if best is not None else self.cpu_share(pid)

    def busiest_core(self, core: int, window: float) -> float | None:
        """The highest share of time ``core`` was busy (anything, ours or not) over any ``window`` seconds."""
        points = [(s.t, s.cores[core]) for s in self.samples if len(s.cores) > core]
        best: float | None = None
        j = 0
        for i, (t1, (b1, n1)) in enumerate(points):
            while j < i and t1 - points[j][0] > window:
                j += 1
            t0, (b0, n0) = points[j]
            if t1 - t0 >= 0.8 * window and n1 > n0:
                share = (b1 - b0) / (n1 - n0)
                best = share if best is None else max(best, share)
        return best

    def cpu_share(self, pid: int, since: float = 0.0, until: float = float("inf")) -> float | None:
        """Mean share of one core used by ``pid`` between two monotonic times (None if unknown)."""
        points = [
            (s.t, s.cpu[pid]) for s in self.samples if since <= s.t <= until and s.cpu.get(pid) is not None
        ]
        if len(points) < 2:
            return None
        (t0, c0), (t1, c1) = points[0], points[-1]
        return (c1 - c0) / (t1 - t0) if t1 > t0 and c0 is not None and c1 is not None else None


def slope_per_hour(points: Sequence[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, value) points, per hour."""
    if len(points) < 3:
        return None
    n = len(points)
    mt = sum(t for t, _ in points) / n
    mv = sum(v for _, v in points) / n
    den = sum((t - mt) ** 2 for t, _ in points)
    if den == 0:
        return None
    return 3600.0 * sum((t - mt) * (v - mv) for t, v in points) / den


def envelope(points: Sequence[tuple[float, float]]) -> dict[str, float] | None:
    """How a memory series moves when it is a sawtooth (a process that allocates and frees in bursts): the
    lowest and highest value, and the highest of the first and of the last third. A leak raises the last
    third's peak; a bounded sawtooth does not, whatever a least-squares slope over a few teeth says."""
    if len(points) < 6:
        return None
    third = len(points) // 3
    values = [v for _, v in points]
    return {
        "low": min(values),
        "high": max(values),
        "first_peak": max(values[:third]),
        "last_peak": max(values[-third:]),
        "hours": (points[-1][0] - points[0][0]) / 3600.0,
    }


def no_growth(env: dict[str, float] | None, per_hour: float) -> bool | None:
    """True when the last third's peak is no higher than the first third's plus ``per_hour`` for the time
    between them: no growth above that rate detected."""
    if env is None:
        return None
    return env["last_peak"] <= env["first_peak"] + per_hour * env["hours"]


RSS_RESOLUTION = 0.5 * 1024 * 1024
"""A rise of a process's peak RSS this small between two thirds of a window says nothing either way: the
allocators grow and give back memory in steps (the coordinator at 1,000 simulated agents, flat by every
longer run, rose 0.43 MiB between the thirds of a 300 s window whose least-squares slope was -50 MiB/h)."""


def growth_verdict(env: dict[str, float] | None, per_hour: float) -> str | None:
    """``"flat"`` (no growth above ``per_hour`` detected, see :func:`no_growth`), ``"growing"`` (a rise
    above that rate and above :data:`RSS_RESOLUTION`), ``"unresolved"`` (a rise above the rate but within
    the resolution: the window is too short to tell that rate from the allocators' steps), or None (no
    series)."""
    if env is None:
        return None
    if no_growth(env, per_hour):
        return "flat"
    return "unresolved" if env["last_peak"] - env["first_peak"] <= RSS_RESOLUTION else "growing"


# --- trials


def core_share(before: list[tuple[int, int]], after: list[tuple[int, int]], core: int) -> float | None:
    """The share of time ``core`` was busy between two :func:`cores_busy` readings."""
    if len(before) <= core or len(after) <= core:
        return None
    (b0, n0), (b1, n1) = before[core], after[core]
    return (b1 - b0) / (n1 - n0) if n1 > n0 else None


def run_beside_target(cmd: Sequence[str], timeout: float) -> Measured:
    """:func:`run_measured`, plus how busy the target's core was (``target_busy``) and the share of the
    machine's time the hypervisor stole (``stolen``) meanwhile."""
    cores, stolen = cores_busy(), jiffies_stolen()
    done, cpu = run_measured(cmd, timeout)
    cpu["target_busy"] = core_share(cores, cores_busy(), int(TARGET_CORE)) or 0.0
    cpu["stolen"] = stolen_share(stolen, jiffies_stolen()) or 0.0
    return done, cpu


def wrk(url: str, connections: int, seconds: int) -> dict[str, Any]:
    cmd = ["taskset", "-c", GEN_CORE, "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", url + "/"]
    done, cpu = run_beside_target(cmd, timeout=seconds + 30)
    match = re.search(r"Requests/sec:\s+([\d.]+)", done.stdout)
    return {
        "cmd": " ".join(cmd),
        "rps": float(match.group(1)) if match else 0.0,
        "connections": connections,
        **cpu,
    }


def locust(url: str, users: int, seconds: int, work: Path) -> dict[str, Any]:
    prefix = work / f"locust-{users}"
    cmd = [
        *("taskset", "-c", GEN_CORE, str(LOCUST_VENV / "bin" / "locust"), "-f", str(BENCH / "locustfile.py")),
        *("--headless", "-u", str(users), "-r", str(users), "-t", f"{seconds}s", "--host", url),
        *("--only-summary", "--csv", str(prefix), "--loglevel", "WARNING"),
    ]
    _, cpu = run_beside_target(cmd, timeout=seconds + 60)
    rps = 0.0
    stats = Path(f"{prefix}_stats.csv")
    if stats.exists():
        lines = stats.read_text().splitlines()
        header = lines[0].split(",")
        for line in lines[1:]:
            cells = line.split(",")
            if len(cells) == len(header) and cells[header.index("Name")] == "Aggregated":
                rps = float(cells[header.index("Requests/s")])
    shown = " ".join(cmd).replace(str(ROOT) + "/", "").replace(str(work), "DIR")
    # Locust's CPU includes its start-up and shutdown around the run: a slight overestimate.
    return {"cmd": shown, "rps": rps, "users": users, **cpu}


def closed_loop(engine: str, url: str, connections: int, seconds: float) -> dict[str, Any]:
    cmd = [
        *("taskset", "-c", GEN_CORE, PY, str(BENCH / "closed_loop.py"), "--engine", engine),
        *("--connections", str(connections), "--duration", str(seconds), "--url", url),
    ]
    out, cpu = run_beside_target(cmd, timeout=seconds + 60)
    try:
        result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        result = {"rps": 0.0, "errors": {"crashed": out.stderr[-300:]}}
    result.update(cpu)  # includes start-up (imports, first connections): a slight overestimate
    result["cmd"] = f"taskset -c {GEN_CORE} python bench/closed_loop.py --engine {engine} " + (
        f"--connections {connections} --duration {seconds:g} --url URL"
    )
    return result


PROFILE_TOML = """\
name = "{name}"
target = "{target}"

[load]
arrival = "constant"
start_rate = {start_rate}
timeout = "5s"
max_in_flight = {max_in_flight}
stages = [{stages}]

{requests}
"""


def write_profile(
    path: Path,
    target: str,
    rate: float,
    seconds: int,
    names: int = 1,
    max_in_flight: int = 10_000,
    ramp: int = 0,
    path_: str = "/",
    requests: str | None = None,
) -> Path:
    """A constant-arrival profile: ``rate`` for ``seconds``, after a linear ramp from 0 over ``ramp`` s;
    ``requests`` replaces its ``[[requests]]`` (any tables after ``[load]``: flows, data)."""
    if requests is None and names == 1:
        requests = f'[[requests]]\nname = "home"\npath = "{path_}"\n'
    elif requests is None:
        requests = "\n".join(f'[[requests]]\nname = "r{i}"\npath = "/r{i}"\n' for i in range(names))
    r = round(rate, 1)
    hold = f'{{ duration = "{seconds}s", rate = {r} }}'
    stages = f'{{ duration = "{ramp}s", rate = {r} }}, {hold}' if ramp else hold
    path.write_text(
        PROFILE_TOML.format(
            name=path.stem,
            target=target,
            start_rate=0 if ramp else r,
            stages=stages,
            max_in_flight=max_in_flight,
            requests=requests,
        )
    )
    return path


@dataclass
class Trial:
    engine: str
    rate: float
    seconds: int
    results: dict[str, Any]
    agent_cpu: float | None
    coordinator_cpu: float | None
    cmd: str
    samples: list[Sample] = field(default_factory=list)
    agent_pid: int = 0
    coordinator_pid: int = 0
    out: Path | None = None
    cores_busy: list[float] = field(default_factory=list)
    ramp: int = 0
    target_busy: float | None = None  # the busiest window of the target's core (nginx, coordinator, kernel)
    stolen: float | None = None  # the share of the machine's time the hypervisor gave to someone else

    @property
    def rps(self) -> float:
        """Completions per second over the hold (after the ramp), from the per-second intervals."""
        hold = [
            i["ok"] + i["failed"]
            for i in self.results.get("intervals", [])
            if self.ramp <= i["t"] < self.ramp + self.seconds
        ]
        return sum(hold) / self.seconds if hold else float(self.results.get("rps", 0.0))

    @property
    def lag(self) -> dict[str, float]:
        lag: dict[str, float] = self.results.get("send_lag_ms") or {}
        return lag

    @property
    def max_connections(self) -> int | None:
        """The most connections nginx had open at once during the trial (sampled)."""
        seen = [s.connections for s in self.samples if s.connections is not None]
        return max(seen) if seen else None

    @property
    def agent_kernel(self) -> float | None:
        """The part of the agent's CPU spent in the kernel, over the whole trial."""
        pid = self.agent_pid
        points = [(s.cpu.get(pid), s.sys.get(pid)) for s in self.samples]
        points = [(c, k) for c, k in points if c is not None and k is not None]
        if len(points) < 2:
            return None
        (c0, k0), (c1, k1) = points[0], points[-1]
        return (k1 - k0) / (c1 - c0) if c1 > c0 else None  # type: ignore[operator]

    @property
    def per_cpu_second(self) -> float | None:
        """Requests completed per CPU-second of the agent at this rate (its efficiency)."""
        return self.rps / self.agent_cpu if self.agent_cpu else None

    @property
    def dropped(self) -> int:
        return int(self.results.get("totals", {}).get("dropped", 0))

    @property
    def failed(self) -> int:
        return int(self.results.get("totals", {}).get("failed", 0))

    @property
    def sustained(self) -> bool:
        """The saturation rule: no drops, p99 send lag <= 5 ms, no failures, and the rate achieved."""
        p99 = self.lag.get("p99")
        return (
            bool(self.results)
            and self.dropped == 0
            and self.failed == 0
            and p99 is not None
            and p99 <= 5.0
            and self.rps >= 0.98 * self.rate
        )

    @property
    def target_bound(self) -> bool:
        """Fell short (arrivals dropped, or the rate not achieved) while the target's core was full and the
        agent's was not: the target was the limit. A trial that fails on send lag alone is the agent's."""
        busy = self.target_busy
        return (
            not self.sustained
            and (self.dropped > 0 or self.rps < 0.98 * self.rate)
            and busy is not None
            and busy >= TARGET_FULL
            and self.agent_cpu is not None
            and self.agent_cpu < AGENT_FULL
        )

    @property
    def verdict(self) -> str:
        return "holds" if self.sustained else "target-bound" if self.target_bound else "saturated"


def open_trial(
    engine: str,
    url: str,
    rate: float,
    seconds: int,
    work: Path,
    *,
    agent_cmd: Sequence[str] | None = None,
    sample_every: float = 0.5,
    watch_files: Sequence[str] = (),
    ramp: int = 2,
    path: str = "/",
    requests: str | None = None,
) -> Trial:
    """One open-model run: ``loadgen coordinator`` (on the target's core) and one ``loadgen agent`` on the
    generator core, a linear ramp over ``ramp`` seconds then a constant arrival rate for ``seconds``; returns
    results.json and the CPU each process used during the run."""
    tag = f"{engine}-{int(rate)}-{seconds}s-{int(time.time() * 1000) % 100000}"
    out = work / tag
    out.mkdir(parents=True, exist_ok=True)
    profile = write_profile(
        work / f"{tag}.toml", url, rate, seconds, ramp=ramp, path_=path, requests=requests
    )
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    coord_cmd = [
        *("taskset", "-c", TARGET_CORE, *LOADGEN),
        *("coordinator", str(profile), "--bind", endpoint, "--expect-agents", "1"),
        *("--out", str(out), "--join-timeout", "30", "--engine", engine, "--seed", "1"),
    ]
    agent = list(agent_cmd) if agent_cmd else [*LOADGEN, "agent"]
    agent_full = [*NICE, "taskset", "-c", GEN_CORE, *agent, "--connect", endpoint, "--wait", "30"]
    with open(out / "coordinator.log", "w") as clog, open(out / "agent.log", "w") as alog:
        coord = subprocess.Popen(coord_cmd, stdout=clog, stderr=subprocess.STDOUT)
        agent_proc = subprocess.Popen(agent_full, stdout=alog, stderr=subprocess.STDOUT)
        files = [out / name for name in watch_files]
        try:
            with Sampler([agent_proc.pid, coord.pid], every=sample_every, files=files, nginx=url) as sampler:
                try:
                    coord.wait(timeout=ramp + seconds + 90)
                    agent_proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    log(f"trial {tag} did not finish in time; stopping it")
        finally:
            stop(agent_proc)
            stop(coord)
    results: dict[str, Any] = {}
    with contextlib.suppress(OSError, json.JSONDecodeError):
        results = json.loads((out / "results.json").read_text())
    agent_shown = " ".join(agent).replace(PY + " -m ", "").replace(PY, "python").replace(str(ROOT) + "/", "")
    shown = (
        f"taskset -c {TARGET_CORE} loadgen coordinator PROFILE --bind {endpoint} --expect-agents 1 "
        f"--engine {engine} --out DIR & "
        f"{' '.join(NICE)} taskset -c {GEN_CORE} {agent_shown} --connect {endpoint}"
    )
    return Trial(
        engine,
        rate,
        seconds,
        results,
        sampler.busiest_share(agent_proc.pid, max(1.0, seconds - 1.0)),
        sampler.busiest_share(coord.pid, max(1.0, seconds - 1.0)),
        shown,
        sampler.samples,
        agent_proc.pid,
        coord.pid,
        out,
        sampler.cores_busy,
        ramp,
        sampler.busiest_core(int(TARGET_CORE), max(1.0, seconds - 1.0)),
        sampler.stolen,
    )


# --- the coordinator with simulated agents


def start_sim_agents(
    endpoint: str, agents: int, seconds: int, rate: int, procs: int = 4
) -> list[subprocess.Popen[str]]:
    """``agents`` simulated agents (``bench/coord_sim.py``) joining the coordinator at ``endpoint``, in
    ``procs`` processes (the last takes the remainder), each at ``rate`` requests/s for ``seconds`` once the
    run starts; their JSON lines (``"started"``, ``"done"``) come on each process's stdout, as text."""
    per = agents // procs
    return [
        subprocess.Popen(
            [
                *(PY, str(BENCH / "coord_sim.py"), "--connect", endpoint),
                *("--agents", str(per if i < procs - 1 else agents - per * (procs - 1))),
                *("--first", str(i * per), "--duration", str(seconds), "--rate", str(rate)),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(procs)
    ]


def wait_or_stop(procs: Iterable[subprocess.Popen[Any]], within: float = 30.0) -> None:
    """Give each process ``within`` seconds to end by itself, then :func:`stop` it."""
    for proc in procs:
        try:
            proc.wait(timeout=within)
        except subprocess.TimeoutExpired:
            stop(proc)
