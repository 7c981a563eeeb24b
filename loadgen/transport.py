"""The control channel's seam: what the coordinator and the agent need from a message transport, and an
in-memory implementation of both ends.

The coordinator holds a :class:`ServerTransport` (one socket, many peers named by identity; ZeroMQ's ROUTER in
:mod:`coordinator.zmq_transport`); an agent holds a :class:`ClientTransport` (one peer, the coordinator;
ZeroMQ's DEALER in :mod:`agents.zmq_transport`). Both carry opaque encoded messages (:mod:`loadgen.wire`);
validation is the caller's.

:class:`MemoryNetwork` joins the two in one process, with no sockets: the coordinator's ``recv`` waits by
calling the network's ``idle`` hook, which in a virtual-time run advances the agents' event loop (see
:mod:`loadgen.virtual_time`). Messages are delivered in order, never lost, unless a test cuts a peer off.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

Frames = list[bytes]


@dataclass(frozen=True)
class Refusal:
    """A peer the transport's guard turned away at the door (e.g. an unknown CURVE key)."""

    address: str
    public_key: str


class ServerTransport(Protocol):
    """The coordinator's end. Never raises for a peer's misbehaviour: a message is the caller's to judge."""

    @property
    def endpoint(self) -> str:
        """Where agents reach it (the address actually bound)."""

    def send(self, peer: str, data: bytes) -> bool:
        """Queue ``data`` for ``peer`` without blocking; False when it could not be queued (dropped)."""

    def recv(self, timeout: float) -> list[Frames]:
        """Messages received, waiting up to ``timeout`` seconds for the first; each is its frames, the
        sender's identity first (``[identity, data]`` for a well-formed one). Empty when none came."""

    def refused(self) -> list[Refusal]:
        """Every peer refused at the door so far, oldest first."""

    def close(self) -> None:
        """Release the socket; bounded in time whatever is still queued. Idempotent."""


class ClientTransport(Protocol):
    """An agent's end."""

    async def send(self, data: bytes) -> None:
        """Send ``data`` to the coordinator; may wait while no coordinator is connected."""

    async def recv(self, timeout: float) -> bytes | None:
        """The next message from the coordinator, or None after ``timeout`` seconds."""

    def close(self) -> None:
        """Release the socket; bounded in time whatever is still queued. Idempotent."""


# --- in memory -------------------------------------------------------------------------------------------


@dataclass
class _Peer:
    identity: str
    inbox: deque[bytes] = field(default_factory=deque)
    waiter: asyncio.Event | None = None
    connected: bool = True


class MemoryNetwork:
    """One coordinator and any number of agents in one process.

    ``idle(timeout, mail)`` is called when the coordinator waits with nothing to read: it must let the
    agents run for up to ``timeout`` seconds of the clock and return early once the event ``mail`` is set (a
    message for the coordinator arrived); :meth:`loadgen.virtual_time.VirtualTimeLoop.advance` does. The
    default does nothing (a caller that feeds the coordinator itself)."""

    def __init__(self, idle: Callable[[float, asyncio.Event], None] | None = None) -> None:
        self._idle = idle or (lambda timeout, mail: None)
        self._mail = asyncio.Event()
        self._server_inbox: deque[Frames] = deque()
        self._peers: dict[str, _Peer] = {}
        self.server = MemoryServerTransport(self)
        self.sent_to: dict[str, int] = {}  # messages the coordinator sent, by peer (for tests)

    def client(self, identity: str) -> MemoryClientTransport:
        """A new agent end named ``identity`` (a reconnection under the same name replaces the old one)."""
        self._peers[identity] = _Peer(identity)
        return MemoryClientTransport(self, identity)

    def cut(self, identity: str) -> None:
        """The agent ``identity`` vanishes: nothing it sends arrives and nothing reaches it (a killed
        process, a pulled cable)."""
        peer = self._peers.get(identity)
        if peer is not None:
            peer.connected = False

    def take(self, identity: str) -> list[bytes]:
        """Everything the coordinator sent to ``identity`` and it has not read yet, oldest first, leaving its
        inbox empty: a synchronous reader, for agents simulated without an event loop. Raises KeyError for
        an identity no :meth:`client` was made for."""
        inbox = self._peers[identity].inbox
        out = list(inbox)
        inbox.clear()
        return out

    @property
    def server_has_mail(self) -> bool:
        return bool(self._server_inbox)

    # the ends call these

    def _to_server(self, identity: str, data: bytes) -> None:
        peer = self._peers.get(identity)
        if peer is not None and peer.connected:
            self._server_inbox.append([identity.encode(), data])
            self._mail.set()

    def _to_client(self, identity: str, data: bytes) -> bool:
        peer = self._peers.get(identity)
        if peer is None or not peer.connected:
            return True  # like ROUTER: a message to an unknown peer vanishes without an error
        self.sent_to[identity] = self.sent_to.get(identity, 0) + 1
        peer.inbox.append(data)
        if peer.waiter is not None:
            peer.waiter.set()
        return True

    def _server_recv(self, timeout: float) -> list[Frames]:
        if not self._server_inbox:
            self._idle(timeout, self._mail)
        out = list(self._server_inbox)
        self._server_inbox.clear()
        self._mail.clear()
        return out

    def inject(self, frames: Frames) -> None:
        """Deliver raw ``frames`` to the coordinator as if a peer sent them (malformed ones included)."""
        self._server_inbox.append(frames)
        self._mail.set()

    def new_server(self) -> MemoryServerTransport:
        """A new coordinator end in place of the old one (a restarted coordinator); the agents' ends stay."""
        self.server = MemoryServerTransport(self)
        self._server_inbox.clear()
        self._mail.clear()
        return self.server


class MemoryServerTransport:
    def __init__(self, network: MemoryNetwork, endpoint: str = "memory://coordinator") -> None:
        self._net = network
        self._endpoint = endpoint
        self.refusals: list[Refusal] = []  # a test may add some, as an authenticator would
        self.closed = False

    @property
    def endpoint(self) -> str:
        return self._endpoint

    def send(self, peer: str, data: bytes) -> bool:
        return self._net._to_client(peer, data)

    def recv(self, timeout: float) -> list[Frames]:
        return self._net._server_recv(timeout)

    def refused(self) -> list[Refusal]:
        return list(self.refusals)

    def close(self) -> None:
        self.closed = True


class MemoryClientTransport:
    def __init__(self, network: MemoryNetwork, identity: str) -> None:
        self._net = network
        self.identity = identity
        self.closed = False

    async def send(self, data: bytes) -> None:
        self._net._to_server(self.identity, data)

    async def recv(self, timeout: float) -> bytes | None:
        peer = self._net._peers[self.identity]
        if not peer.inbox and timeout > 0:
            peer.waiter = asyncio.Event()
            try:
                await asyncio.wait_for(peer.waiter.wait(), timeout)
            except TimeoutError:
                pass
            finally:
                peer.waiter = None
        return peer.inbox.popleft() if peer.inbox else None

    def close(self) -> None:
        self.closed = True
