"""Actions at chosen moments of a run: the caller's functions, called on the profile's clock.

A spike test does something at the peak (fail over a database, deploy, scale a pool) and then reads what it
did to the latencies. An :class:`Action` is a function or a coroutine function with the run time it is due
at. Actions run in the caller's process, beside the coordinator, never on the agents (nothing executable
travels). Each runs in its own thread when its time comes, so a slow one delays neither the run nor the next
action; a coroutine runs on the caller's event loop when the run was started from async code, else on a loop
of its own. Each is recorded in the run's events: ``action_started`` when it is called, ``action_finished``
with its ``outcome`` (``ok``, ``error`` with the error, or ``stopped the run``) and how long it took, so every
timeline of the HTML report marks it. An action that raises is recorded and the run goes on, unless it was
given ``on_error="stop"`` or raised :class:`StopRun`.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from loadgen.durations import parse_duration

OnError = Literal["continue", "stop"]


class StopRun(Exception):
    """Raise from an action to end the run there (the message is the reason the results give)."""


@dataclass(frozen=True)
class Action:
    """Call ``fn`` (no arguments; a function or a coroutine function) at ``at`` seconds into the run."""

    at: float
    fn: Callable[[], Any]
    name: str
    on_error: OnError = "continue"

    @classmethod
    def make(
        cls,
        at: str | float,
        fn: Callable[[], Any],
        *,
        name: str | None = None,
        on_error: OnError = "continue",
    ) -> Action:
        """An action from a run time (``"1m30s"`` or seconds) and a callable; ``name`` defaults to the
        function's name. Raises ValueError or TypeError for what cannot be an action."""
        if not callable(fn):
            raise TypeError(f"an action must be callable, got {type(fn).__name__}")
        if on_error not in ("continue", "stop"):
            raise ValueError(f"on_error must be 'continue' or 'stop', got {on_error!r}")
        seconds = parse_duration(at)
        return cls(seconds, fn, name or str(getattr(fn, "__name__", "action")), on_error)


def actions_from(given: Mapping[str | float, Callable[[], Any]] | Iterable[Action] | None) -> list[Action]:
    """Actions from a ``{"1m": fn}`` mapping or a list of :class:`Action`."""
    if given is None:
        return []
    if isinstance(given, Mapping):
        return [Action.make(at, fn) for at, fn in given.items()]
    return list(given)


def check_within(actions: Iterable[Action], duration: float) -> None:
    """Every action must fall inside the profile: at or after 0 s and before its end."""
    for a in actions:
        if not 0 <= a.at < duration:
            raise ValueError(
                f"action {a.name!r} at {a.at:g} s is outside the profile, which lasts {duration:g} s"
            )


Post = Callable[..., None]  # post(t, kind, **fields): record an event at run time t


class ActionRunner:
    """Calls the actions when they are due, on ``clock`` (the coordinator's), each in its own thread."""

    def __init__(
        self,
        actions: Iterable[Action],
        *,
        post: Post,
        stop: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self._actions = sorted(actions, key=lambda a: a.at)
        self._post = post
        self._stop = stop
        self._clock = clock
        self._loop = loop
        self._start_at = 0.0
        self._over = threading.Event()
        self._lock = threading.Lock()
        self._running: dict[int, Action] = {}  # id of the action's thread -> the action
        self._launched = 0  # how many of the actions (in time order) were called
        self._scheduler: threading.Thread | None = None

    def start(self, start_at: float) -> None:
        """The run started at ``start_at`` on the clock: from now on, call each action when it is due."""
        if not self._actions:
            return
        self._start_at = start_at
        self._scheduler = threading.Thread(target=self._schedule, name="loadgen-actions", daemon=True)
        self._scheduler.start()

    def _schedule(self) -> None:
        for action in self._actions:
            while (wait := self._start_at + action.at - self._clock()) > 0:
                if self._over.wait(min(wait, 0.05)):
                    return
            with self._lock:
                if self._over.is_set():
                    return
                thread = threading.Thread(
                    target=self._call, args=(action,), name=f"loadgen-action-{action.name}", daemon=True
                )
                thread.start()
                assert thread.ident is not None
                self._running[thread.ident] = action
                self._launched += 1

    def _call(self, action: Action) -> None:
        began = self._clock()
        self._post(began - self._start_at, "action_started", name=action.name, at=action.at)
        outcome, error, stop = "ok", None, None
        try:
            self._result(action.fn())
        except StopRun as exc:
            outcome, stop = "stopped the run", str(exc) or f"action {action.name!r} stopped the run"
        except Exception as exc:
            outcome, error = "error", f"{type(exc).__name__}: {exc}"
            if action.on_error == "stop":
                stop = f"action {action.name!r} failed: {error}"
        ended = self._clock()
        with self._lock:
            self._running.pop(threading.get_ident(), None)
            if not self._over.is_set():
                fields: dict[str, Any] = {
                    "name": action.name,
                    "outcome": outcome,
                    "seconds": round(ended - began, 3),
                }
                if error is not None:
                    fields["error"] = error
                self._post(ended - self._start_at, "action_finished", **fields)
        if stop is not None:
            self._stop(stop)

    def _result(self, value: Any) -> None:
        if not inspect.isawaitable(value):
            return
        if self._loop is not None and self._loop.is_running():
            asyncio.run_coroutine_threadsafe(_awaited(value), self._loop).result()
        else:
            asyncio.run(_awaited(value))

    def finish(self, now: float) -> None:
        """The run is ending (``now`` on the clock): call nothing more, and record the actions that are still
        running or never started, so the results account for every action."""
        with self._lock:
            if self._over.is_set():
                return
            self._over.set()
            t = now - self._start_at
            for action in self._running.values():
                self._post(
                    t, "action_finished", name=action.name, outcome="still running at the end of the run"
                )
            for action in self._actions[self._launched :]:
                self._post(t, "action_skipped", name=action.name, at=action.at, reason="the run ended first")


async def _awaited(value: Any) -> Any:
    return await value
