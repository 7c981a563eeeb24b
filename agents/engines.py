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
    """How an engine reaches the target besides its URL: the profile's ``[tls]`` (None: the defaults),
    where connections go instead of the URL's host and port (its ``resolve``; None: there), and the HTTP
    version and streams per connection of its ``[load]``."""

    tls: Tls | None = None
    connect_to: tuple[str, int] | None = None
    http_version: str = "1.1"
    max_streams: int | None = None


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
    CPU (see "Growth" in :mod:`agents.pool`). With ``http_version = "2"`` the engine is
    :class:`agents.h2_engine.H2Engine` whichever is named; ``"auto"`` over http is HTTP/1.1. Raises
    ValueError for what no engine does yet (``"auto"`` over https)."""
    cpu_clock = time.process_time
    tls, connect_to, http_version, max_streams = route
    if http_version == "auto" and target.lower().startswith("https:"):
        raise ValueError('http_version = "auto" over https is not supported yet: choose "1.1" or "2"')
    if http_version == "2":
        from agents.h2_engine import H2Engine

        h2: Engine = H2Engine(
            target,
            requests,
            sink,
            timeout=timeout,
            max_connections=max_connections,
            max_streams=max_streams,
            tls=tls,
            connect_to=connect_to,
        )
        return h2
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
