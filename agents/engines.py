"""Which engine drives the requests: the factory the agent builds its engine with, by name."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from agents.engine import Engine, Sink
from agents.http_request import split_target
from agents.tls import client_context
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

log = logging.getLogger(__name__)

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
    :class:`agents.h2_engine.H2Engine` whichever is named; ``"auto"`` over http is HTTP/1.1, over https it
    must be agreed first (:func:`negotiate`)."""
    cpu_clock = time.process_time
    tls, connect_to, http_version, max_streams = route
    if http_version == "auto" and target.lower().startswith("https:"):
        raise ValueError('http_version = "auto" over https is agreed first: see negotiate()')
    if http_version == "2":
        from agents.h2_engine import H2Engine

        if engine == "httpx":
            from agents.proxy import environment_proxy

            proxy = environment_proxy(target)
            if proxy is not None:  # going around it silently could reach the target by another path
                raise ValueError(
                    f"the environment sets a proxy for {target} ({proxy.split('@')[-1]}), and HTTP/2 does "
                    'not go through proxies here: use http_version = "1.1" with --engine httpx, or unset it'
                )

        h2: Engine = H2Engine(
            target,
            requests,
            sink,
            timeout=timeout,
            max_connections=max_connections,
            max_streams=max_streams,
            cpu_clock=cpu_clock,
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


async def negotiate(target: str, route: Route, timeout: float) -> str:
    """The HTTP version of ``http_version = "auto"``: over https, ask the server by ALPN on one connection
    (offering h2 and http/1.1) and return ``"2"`` if it picks h2, else ``"1.1"``; over http, ``"1.1"``
    (h2c is spoken only when asked for, with ``"2"``). A server that cannot be reached, or does not
    finish the handshake within ``timeout``, is spoken to in HTTP/1.1 (logged): its failures show in the
    run as the HTTP/1.1 engine counts them."""
    scheme, host, port, _ = split_target(target)
    if scheme != "https":
        return "1.1"
    context = client_context(route.tls)
    context.set_alpn_protocols(["h2", "http/1.1"])
    address, connect_port = route.connect_to or (host, port)
    server_name = route.tls.server_name if route.tls is not None and route.tls.server_name else host
    try:
        async with asyncio.timeout(timeout):
            transport, _ = await asyncio.get_running_loop().create_connection(
                asyncio.Protocol, address, connect_port, ssl=context, server_hostname=server_name
            )
    except (OSError, TimeoutError) as exc:
        log.warning("could not ask %s which HTTP version it speaks (%s): using HTTP/1.1", target, exc)
        return "1.1"
    ssl_object = transport.get_extra_info("ssl_object")
    agreed = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
    transport.abort()
    log.info("%s agreed to %s by ALPN", target, agreed or "nothing (HTTP/1.1)")
    return "2" if agreed == "h2" else "1.1"
