"""Which engine drives the requests: the factory the agent builds its engine with, by name."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from agents.engine import Engine, Sink
from loadgen.endpoint import Tls
from loadgen.errors import RunError
from loadgen.profile import RequestSpec


class Route(NamedTuple):
    """How an engine reaches the target besides its URL: the profile's ``[tls]`` (None: the defaults) and
    where connections go instead of the URL's host and port (its ``resolve``; None: there)."""

    tls: Tls | None = None
    connect_to: tuple[str, int] | None = None


DIRECT = Route()
"""The URL's host and port, the default TLS options."""

EngineFactory = Callable[[str, str, Sequence[RequestSpec], Sink, float, int, Route], Engine]
ENGINES = ("fast", "httpx")


def default_engine_factory(
    engine: str,
    target: str,
    requests: Sequence[RequestSpec],
    sink: Sink,
    timeout: float,
    max_connections: int,
    route: Route = DIRECT,
) -> Engine:
    """``fast``: uvloop protocol client with httptools (the default). ``httpx``: the full-featured client.
    Either's pool is given the process's CPU clock, so it opens no connection while the agent is short of
    CPU (see "Growth" in :mod:`agents.pool`)."""
    cpu_clock = time.process_time
    tls, connect_to = route
    cls: type[Any]
    if engine == "fast":
        from agents.fast_engine import FastEngine

        cls = FastEngine
    elif engine == "httpx":
        from agents.httpx_engine import HttpxEngine

        cls = HttpxEngine
    else:
        raise RunError(f"unknown engine {engine!r} (known: {', '.join(ENGINES)})")
    made: Engine = cls(
        target,
        requests,
        sink,
        timeout=timeout,
        max_connections=max_connections,
        cpu_clock=cpu_clock,
        tls=tls,
        connect_to=connect_to,
    )
    return made
