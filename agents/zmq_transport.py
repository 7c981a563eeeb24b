"""The agent's end of the control channel over ZeroMQ: a DEALER socket named by the agent's id, connected to
the coordinator's ROUTER (see :class:`loadgen.transport.ClientTransport`).

Made without I/O; :meth:`ZmqClientTransport.open` makes the context and the socket, applies the caller's
``socket_setup`` (CURVE keys, :func:`loadgen.security.apply_client`) and connects. :meth:`close` is bounded in
time whatever is still queued: the socket lingers at most :data:`LINGER` seconds, then the context ends, so an
agent never hangs on its way out behind a coordinator that is gone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import zmq
import zmq.asyncio

from loadgen.errors import RunError

LINGER = 2.0  # seconds unsent messages may hold up close()


class ZmqClientTransport:
    def __init__(
        self,
        endpoint: str,
        identity: str,
        socket_setup: Callable[[zmq.Socket[Any]], None] | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.identity = identity
        self._socket_setup = socket_setup
        self._ctx: zmq.asyncio.Context | None = None
        self._sock: zmq.asyncio.Socket | None = None

    def open(self) -> ZmqClientTransport:
        """Make the socket and connect it (the connection itself comes up in the background). Raises
        :class:`RunError` if the endpoint cannot be used; whatever was made is released first."""
        if self._ctx is not None:
            raise RuntimeError("already open")
        self._ctx = ctx = zmq.asyncio.Context()
        try:
            self._sock = sock = ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.IDENTITY, self.identity.encode())
            sock.setsockopt(zmq.LINGER, int(LINGER * 1000))
            if self._socket_setup is not None:
                self._socket_setup(sock)
            sock.connect(self.endpoint)
        except zmq.ZMQError as exc:
            self.close()
            raise RunError(f"cannot connect to {self.endpoint}: {exc}") from exc
        except BaseException:
            self.close()
            raise
        return self

    def _socket(self) -> zmq.asyncio.Socket:
        if self._sock is None:
            raise RuntimeError("the transport is not open")
        return self._sock

    async def send(self, data: bytes) -> None:
        await self._socket().send(data)

    async def recv(self, timeout: float) -> bytes | None:
        sock = self._socket()
        if not await sock.poll(timeout=max(0, int(timeout * 1000))):
            return None
        data: bytes = await sock.recv()
        return data

    def close(self) -> None:
        sock, self._sock = self._sock, None
        ctx, self._ctx = self._ctx, None
        if sock is not None:
            sock.close(linger=int(LINGER * 1000))
        if ctx is not None:
            ctx.term()  # waits for the socket's linger, no longer
