"""The coordinator's control socket: a ZeroMQ ROUTER, the :class:`loadgen.transport.ServerTransport` used
outside tests.

:meth:`ZmqServerTransport.open` binds (after the security setup, e.g. CURVE) and raises
:class:`~loadgen.errors.BindError` when it cannot, having closed everything it opened: a socket that failed to
bind would otherwise hold ``Context.term()`` forever. :meth:`close` is bounded in time on every path.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import zmq

from loadgen.errors import BindError
from loadgen.transport import Frames, Refusal
from loadgen.wire import MAX_MESSAGE_BYTES

LINGER_MS = 1000  # what close() waits, at most, for queued messages to leave
BATCH = 1000  # messages taken per recv() call at most, so the run loop keeps its beat under a flood


class SocketGuard(Protocol):
    """What securing the control socket leaves behind (e.g. the CURVE authenticator)."""

    def stop(self) -> None:
        """Called after the socket closes, before the context ends."""

    def refused(self) -> list[Any]:
        """Peers refused at the door so far (each with ``address`` and ``public_key``)."""


# Configures the control socket before it binds (e.g. CURVE).
SocketSetup = Callable[[zmq.Context[Any], zmq.Socket[Any]], SocketGuard | None]


class ZmqServerTransport:
    def __init__(self, ctx: zmq.Context[Any], sock: zmq.Socket[Any], guard: SocketGuard | None) -> None:
        self._ctx: zmq.Context[Any] | None = ctx
        self._sock: zmq.Socket[Any] | None = sock
        self._guard = guard
        self._endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)

    @classmethod
    def open(cls, bind: str, setup: SocketSetup | None = None) -> ZmqServerTransport:
        """A ROUTER bound to ``bind`` (a port of 0 picks a free one). Raises :class:`BindError`, or what
        ``setup`` raises (e.g. :class:`loadgen.security.SecurityError`), with nothing left open."""
        ctx: zmq.Context[Any] = zmq.Context()
        sock = ctx.socket(zmq.ROUTER)
        guard: SocketGuard | None = None
        try:
            sock.setsockopt(zmq.LINGER, LINGER_MS)
            sock.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
            sock.setsockopt(zmq.ROUTER_HANDOVER, 1)
            if setup is not None:
                guard = setup(ctx, sock)
            address = bind[:-2] + ":*" if bind.endswith(":0") else bind
            try:
                sock.bind(address)
            except zmq.ZMQError as exc:
                raise BindError(bind, exc.strerror or str(exc)) from exc
            return cls(ctx, sock, guard)
        except BaseException:
            sock.close(linger=0)
            if guard is not None:
                guard.stop()
            ctx.term()
            raise

    @property
    def endpoint(self) -> str:
        return self._endpoint

    def send(self, peer: str, data: bytes) -> bool:
        if self._sock is None:
            return False
        try:
            self._sock.send_multipart([peer.encode(), data], flags=zmq.NOBLOCK)
        except zmq.Again:
            return False
        return True

    def recv(self, timeout: float) -> list[Frames]:
        sock = self._sock
        if sock is None or not sock.poll(max(0, int(timeout * 1000)), zmq.POLLIN):
            return []
        out: list[Frames] = []
        while len(out) < BATCH:
            try:
                out.append(sock.recv_multipart(flags=zmq.NOBLOCK))
            except zmq.Again:
                break
        return out

    def refused(self) -> list[Refusal]:
        if self._guard is None:
            return []
        return [Refusal(r.address, r.public_key) for r in self._guard.refused()]

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close(linger=LINGER_MS)
            self._sock = None
        if self._guard is not None:
            self._guard.stop()
            self._guard = None
        if self._ctx is not None:
            self._ctx.term()
            self._ctx = None
