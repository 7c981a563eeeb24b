"""Running a profile from Python: ``loadgen.run``, ``loadgen.arun`` and the live handle ``loadgen.start``.

The coordinator runs in this process, in a thread of its own; the agents are real agent processes, started
here (``agents=N``, like ``loadgen run``) or already waiting elsewhere (``bind=..., expect_agents=N``, like
``loadgen coordinator``, with the same security options). The caller's thread keeps the handle:
:class:`Run` says how far the run is, gives the merged figures so far, waits for a point of the profile,
stops the run, and runs the caller's actions at their moments (:mod:`loadgen.actions`).

No agent process outlives a call: whether the run ends, fails, is stopped, or the caller's block raises or
is interrupted with Ctrl-C, the local agents are told to stop and, if they do not leave in time, killed.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from coordinator.aggregate import ClosedInterval
from coordinator.config import CoordinatorConfig
from coordinator.coordinator import Coordinator
from coordinator.local_agents import LocalAgents
from loadgen.actions import Action, ActionRunner, actions_from, check_within
from loadgen.durations import parse_duration
from loadgen.histogram import new_histogram
from loadgen.profile import Profile
from loadgen.results_model import ResultsDoc
from loadgen.run_results import Percentiles, Results, Window
from loadgen.security import server_socket_setup

if TYPE_CHECKING:
    from coordinator.metrics_server import RunMetrics

log = logging.getLogger("loadgen.run")

LOCAL_BIND = "tcp://127.0.0.1:0"
LEAVE_WITHIN = 15.0  # seconds the local agents get to leave by themselves once the run is over
STOP_WITHIN = 20.0  # seconds a stopped run gets to finish cleanly before its agents are killed

_live: weakref.WeakSet[Run] = weakref.WeakSet()


@atexit.register
def _kill_leftovers() -> None:
    for run in list(_live):
        run._kill_agents()


@dataclass(frozen=True)
class Snapshot:
    """The run so far: ``elapsed`` seconds since the start, the totals of the seconds closed so far, and
    ``last``: the last few seconds with exact percentiles. Seconds close about two seconds after they end
    (when every agent has reported them)."""

    elapsed: float
    closed_seconds: int
    scheduled: int
    ok: int
    failed: int
    dropped: int
    latency: Percentiles  # over every second closed so far
    last: Window


class _Observer:
    """Fed by the coordinator's thread (:class:`~coordinator.coordinator.RunObserver`)."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.lock = threading.Lock()
        self.counts = [0, 0, 0, 0]  # scheduled, ok, failed, dropped of the closed seconds
        self.latency = new_histogram()
        self.closed = 0
        self.last_index = -1

    def started(self, start_at: float) -> None:
        self.run._started(start_at)

    def second(self, c: ClosedInterval) -> None:
        s = c.summary
        self.run.store.add(c.index, s, c.by_name, c.service_by_name)
        with self.lock:
            for i, key in enumerate(("scheduled", "ok", "failed", "dropped")):
                self.counts[i] += int(s[key])
            self.latency.add(c.latency)
            self.closed += 1
            self.last_index = max(self.last_index, c.index)

    def finishing(self) -> None:
        self.run._finishing()


class Run:
    """A run going on in this process. Use :func:`start` to make one."""

    def __init__(
        self,
        profile: Profile,
        *,
        agents: int | None = None,
        bind: str | None = None,
        expect_agents: int | None = None,
        out: str | Path | None = None,
        actions: Mapping[str | float, Callable[[], Any]] | Iterable[Action] | None = None,
        engine: str = "fast",
        seed: int | None = None,
        target: str | None = None,
        join_timeout: float | None = None,
        agent_timeout: float = 3.0,
        coordinator_timeout: float = 10.0,
        secret_key: str | Path | None = None,
        authorized_agents: str | Path | None = None,
        insecure: bool = False,
        progress: Callable[[str], None] | None = None,
        metrics_bind: str | int | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        if not isinstance(profile, Profile):
            raise TypeError(f"profile must be a loadgen.Profile, got {type(profile).__name__}")
        if target is not None:
            profile = profile.with_target(target)
        n_local = (0 if bind else 2) if agents is None else agents
        expected = expect_agents if expect_agents is not None else n_local
        if n_local < 0 or expected < 1 or n_local > expected:
            raise ValueError(
                f"agents={n_local}, expect_agents={expected}: the run needs at least one agent, "
                "and no more local ones than it expects"
            )
        if engine not in ("fast", "httpx"):
            raise ValueError(f"engine must be 'fast' or 'httpx', got {engine!r}")
        metrics_at = None
        if metrics_bind is not None:
            from coordinator.metrics_server import parse_metrics_bind

            metrics_at = parse_metrics_bind(str(metrics_bind))  # 9464 as well as ":9464"
        self.profile = profile
        self.actions = [*getattr(profile, "actions", ()), *actions_from(actions)]
        check_within(self.actions, profile.load.duration)
        self.out = Path(out) if out is not None else None
        endpoint = bind or LOCAL_BIND
        setup, warning = server_socket_setup(
            endpoint,
            Path(secret_key) if secret_key else None,
            Path(authorized_agents) if authorized_agents else None,
            insecure,
        )
        self._say = progress or log.info
        if warning:
            self._say(warning)
        config = CoordinatorConfig(
            bind=endpoint,
            expect_agents=expected,
            out_dir=self.out,
            join_timeout=join_timeout if join_timeout is not None else (300.0 if bind else 30.0),
            coordinator_timeout=coordinator_timeout,
            agent_timeout=agent_timeout,
            seed=seed,
            progress_every=5.0,
            engine=engine,
        )
        from loadgen.seconds_store import SecondsStore

        self.store = SecondsStore()
        self._observer = _Observer(self)
        self._coord = Coordinator(
            profile, config, progress=self._say, socket_setup=setup, observer=self._observer
        )
        self._loop = loop
        self._clock = time.monotonic
        self._start_at: float | None = None
        self._done = threading.Event()
        self._async_done: asyncio.Event | None = asyncio.Event() if loop is not None else None
        self._error: BaseException | None = None
        self._doc: ResultsDoc | None = None
        self.results: Results | None = None
        self._agents: LocalAgents | None = None
        self._runner = ActionRunner(
            self.actions, post=self._coord.post_event, stop=self._coord.stop, clock=self._clock, loop=loop
        )
        self._metrics: RunMetrics | None = None
        self.metrics_url: str | None = None
        """Where the run's Prometheus metrics are served (``metrics_bind=``), else None."""
        try:
            self.endpoint = self._coord.bind()
            if metrics_at is not None:
                self._metrics = self._serve_metrics(*metrics_at)
            self._agents = LocalAgents(self.endpoint, n_local) if n_local else None
        except BaseException:
            self._coord.close()
            if self._metrics is not None:
                self._metrics.close(linger=0)
            self.store.close()
            raise
        _live.add(self)
        self._thread = threading.Thread(target=self._main, name="loadgen-coordinator", daemon=True)
        self._thread.start()

    def _serve_metrics(self, host: str, port: int) -> RunMetrics:
        from coordinator.metrics_server import RunMetrics, exposure_warning

        metrics = RunMetrics(self._coord, host, port)
        self.metrics_url = metrics.start()
        self._say(f"metrics at {self.metrics_url}")
        self._say(f"live page at {metrics.page_url}")
        warning = exposure_warning(host)
        if warning:
            self._say(warning)
        return metrics

    # --- the coordinator's thread ------------------------------------------------------------------------

    def _main(self) -> None:
        try:
            self._doc = self._coord.run()
            if self._metrics is not None:
                self._metrics.end(self._doc)
            if self.out is not None:
                from loadgen.reports.files import write_reports

                write_reports(self.out, self._doc)
        except BaseException as exc:  # handed to the caller's thread by wait()
            self._error = exc
        finally:
            self._runner.finish(self._clock())
            self._coord.close()
            if self._agents is not None:
                self._agents.wait(LEAVE_WITHIN)
            self._done.set()
            if self._loop is not None and self._async_done is not None:
                with contextlib.suppress(RuntimeError):  # the caller's loop is closed: nobody waits there
                    self._loop.call_soon_threadsafe(self._async_done.set)
            if self._metrics is not None:  # after the end: until the final figures are scraped, or a while
                self._metrics.close()

    def _started(self, start_at: float) -> None:
        self._start_at = start_at
        self._runner.start(start_at)

    def _finishing(self) -> None:
        self._runner.finish(self._clock())

    def _kill_agents(self) -> None:
        if self._agents is not None:
            self._agents.kill()

    # --- the caller's side -------------------------------------------------------------------------------

    @property
    def agent_pids(self) -> list[int]:
        """The local agent processes' ids (empty when the agents run elsewhere)."""
        return self._agents.pids if self._agents is not None else []

    @property
    def started(self) -> bool:
        return self._start_at is not None

    @property
    def done(self) -> bool:
        return self._done.is_set()

    @property
    def elapsed(self) -> float:
        """Seconds of the profile's clock so far (0 before the start; the agents share this clock)."""
        if self._start_at is None:
            return 0.0
        return max(0.0, self._clock() - self._start_at)

    def stop(self, reason: str = "stopped by the caller") -> None:
        """End the run early; it still finishes with results (``aborted`` gives ``reason``)."""
        self._coord.stop(reason)

    def snapshot(self, last: str | float = 10.0) -> Snapshot:
        """The merged figures so far, and those of the last ``last`` seconds closed."""
        span = parse_duration(last)
        obs = self._observer
        with obs.lock:
            counts = list(obs.counts)
            so_far = new_histogram()
            so_far.add(obs.latency)
            end = obs.last_index + 1
            closed = obs.closed
        start = max(0.0, end - span)
        window = Window.of(start, float(end), self.store.merged(start, end))
        scheduled, ok, failed, dropped = counts
        return Snapshot(self.elapsed, closed, scheduled, ok, failed, dropped, Percentiles.of(so_far), window)

    def point(self, at: str | float | None = None, *, stage: int | None = None) -> float:
        """A point of the profile in run seconds: a time (``"30s"``) or the start of stage ``stage``."""
        if (at is None) == (stage is None):
            raise TypeError("give either a time or stage=N")
        if stage is None:
            return parse_duration(at)  # type: ignore[arg-type]
        stages = self.profile.load.stages
        if not 0 <= stage < len(stages):
            raise ValueError(
                f"stage {stage} is not one of the profile's {len(stages)} stages (0..{len(stages) - 1})"
            )
        return sum(s.duration for s in stages[:stage])

    def wait_until(self, at: str | float | None = None, *, stage: int | None = None) -> bool:
        """Block until the run reaches ``at`` (``"30s"``, seconds) or the start of stage ``stage``; False if
        the run ended first."""
        t = self.point(at, stage=stage)
        while not self._done.is_set():
            remaining = self._until(t)
            if remaining <= 0:
                return True
            self._done.wait(min(remaining, 0.05))
        return False

    async def await_until(self, at: str | float | None = None, *, stage: int | None = None) -> bool:
        """:meth:`wait_until` for async code."""
        t = self.point(at, stage=stage)
        while not self._done.is_set():
            remaining = self._until(t)
            if remaining <= 0:
                return True
            await asyncio.sleep(min(remaining, 0.05))
        return False

    def _until(self, t: float) -> float:
        """Seconds until run time ``t`` (a guess of 0.05 before the start is known)."""
        if self._start_at is None:
            return 0.05
        return self._start_at + t - self._clock()

    def wait(self, timeout: float | None = None) -> Results:
        """Wait for the end and return the results (raises what made the run fail). Ctrl-C while waiting
        stops the run, waits for its agents to leave (or kills them), then raises KeyboardInterrupt."""
        deadline = None if timeout is None else self._clock() + timeout
        try:
            while not self._done.wait(0.1):
                if deadline is not None and self._clock() >= deadline:
                    raise TimeoutError(f"the run did not end within {timeout:g} s")
        except KeyboardInterrupt:
            self._abandon("interrupted by the operator", operator=True)
            raise
        return self._outcome()

    async def await_end(self) -> Results:
        """:meth:`wait` for async code; cancelling it stops the run (and its agents) before it returns."""
        assert self._async_done is not None, (
            "start the run from async code (loadgen.start inside a coroutine)"
        )
        try:
            await self._async_done.wait()
        except asyncio.CancelledError:
            self._coord.stop("cancelled by the caller")
            await asyncio.to_thread(self._done.wait, STOP_WITHIN)
            self._kill_agents()
            raise
        return self._outcome()

    def _abandon(self, reason: str, *, operator: bool = False) -> None:
        """Stop the run because the caller is leaving (``operator``: by Ctrl-C); within bounds, whatever
        happens."""
        if not (operator and self._coord.interrupt()):
            self._coord.stop(reason)
        try:
            self._done.wait(STOP_WITHIN)
        except KeyboardInterrupt:
            pass  # a second Ctrl-C: leave now
        finally:
            self._kill_agents()

    def _outcome(self) -> Results:
        if self.results is not None:
            return self.results
        _live.discard(self)
        if self._error is not None:
            raise self._error
        assert self._doc is not None
        agg = self._coord.agg
        self.results = Results(
            self._doc,
            latency=agg.latency,
            service=agg.service,
            latency_by_name={name: t.latency for name, t in agg.names.items()},
            service_by_name={name: t.service for name, t in agg.names.items()},
            store=self.store,
            out=self.out,
        )
        return self.results

    def __enter__(self) -> Run:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is not None:
            interrupted = isinstance(exc, KeyboardInterrupt)
            self._abandon(f"the caller's block raised {type(exc).__name__}", operator=interrupted)
            return
        self.wait()

    async def __aenter__(self) -> Run:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is not None:
            self._coord.stop(f"the caller's block raised {type(exc).__name__}")
            await asyncio.to_thread(self._done.wait, STOP_WITHIN)
            self._kill_agents()
            return
        await self.await_end()


def start(profile: Profile, **options: Any) -> Run:
    """Start ``profile`` and return its live handle (see :func:`run` for the options)::

    with loadgen.start(profile, agents=2) as run:
        run.wait_until("30s")
        failover()
    run.results.latency.p99
    """
    try:
        loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    return Run(profile, loop=loop, **options)


def run(profile: Profile, **options: Any) -> Results:
    """Run ``profile`` to its end and return its :class:`~loadgen.run_results.Results`.

    Options: ``agents`` (local agent processes, default 2), or ``bind`` and ``expect_agents`` for a fleet
    started with ``loadgen agent --connect``, with ``secret_key``/``authorized_agents``/``insecure`` as on the
    CLI; ``out`` (write results.json and the reports there, as the CLI does); ``actions`` (``{"1m": fn}``);
    ``engine``, ``seed``, ``target``, ``join_timeout``, ``agent_timeout``, ``coordinator_timeout``,
    ``progress`` (a function given each progress line; default: the ``loadgen.run`` logger),
    ``metrics_bind`` (``"HOST:PORT"``, ``":PORT"``: serve Prometheus metrics there, ``Run.metrics_url``).
    Raises :class:`~loadgen.errors.ProfileError` for a bad profile,
    :class:`~loadgen.errors.JoinTimeout` when the agents do not arrive, :class:`~loadgen.errors.RunError`
    when the run cannot complete.
    """
    return Run(profile, **options).wait()


async def arun(profile: Profile, **options: Any) -> Results:
    """:func:`run` for async code (coroutine actions run on the caller's event loop)."""
    handle = Run(profile, loop=asyncio.get_running_loop(), **options)
    return await handle.await_end()


__all__ = ["Run", "Snapshot", "arun", "run", "start"]
