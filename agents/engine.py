"""The engine interface: how the agent's arrival loop hands requests to an HTTP client.

The arrival loop calls :meth:`Engine.submit` at (or just after) each arrival's intended send time. The engine
never blocks and never raises there: it sends on an idle keep-alive connection, or queues the request until a
connection frees up or a new one is open, and reports every outcome exactly once to its :class:`Sink`.

Both engines share one connection-pool policy, :class:`agents.pool.Pool` (which connection takes which
request, when to open one more, what times out), one engine around it,
:class:`agents.pooled_engine.PooledEngine`, and one request builder, :mod:`agents.http_request`; they differ
in the wire protocol under them. ``tests/test_engines.py``
checks every engine against the same conformance suite.

Times are seconds on the engine's clock (``time.monotonic`` unless a clock is injected); the agent's recorder
turns them into latencies: response time from ``intended``, service time from ``sent``.

Error categories reported to :meth:`Sink.error`:

- ``timeout``       no complete response within the request timeout (counted from submit)
- ``connect``       the connection could not be opened (refused, unreachable, timed out)
- ``dns``           the target's name did not resolve (see :func:`connect_first`)
- ``tls_verify``    the server's certificate failed verification (untrusted, expired, wrong name)
- ``tls_handshake`` any other TLS handshake failure (no common version or cipher, a refused client
  certificate, an alert)
- ``reset``         the connection broke while the request was outstanding
- ``protocol``      the response could not be parsed

A connection that fails to open fails the oldest request waiting for it (see
:meth:`agents.pool.Pool.open_failed`), with the category of :func:`connect_category`.
"""

from __future__ import annotations

import asyncio
import math
import socket
import ssl
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    from agents.http_request import RequestHead
    from loadgen.profile import RequestSpec

ERROR_CATEGORIES = ("timeout", "connect", "dns", "tls_verify", "tls_handshake", "reset", "protocol")

MAX_OPENING = 16
"""Connections an engine opens at the same time, at most: a backlog after a stall is served by the
connections there are while a few more open, instead of thousands of connects taking the event loop."""


def no_arrivals() -> float:
    """``Due.release`` while no arrival loop runs: nothing is due, ever."""
    return math.inf


async def wait_drained(in_flight: Callable[[], int], clock: Callable[[], float], deadline: float) -> None:
    """Wait until ``in_flight()`` is 0 or ``clock()`` reaches ``deadline`` (every engine's ``drain``)."""
    while in_flight():
        left = deadline - clock()
        if left <= 0:
            return
        await asyncio.sleep(min(left, 0.005))


class Due:
    """When the arrival loop's next arrival is due (``at``) and how to send it (``release()``, which returns
    when the next one is due and sets ``at`` again).

    The arrival loop wakes on a timer, which fires only between event-loop iterations; an engine that reads
    the clock as each response comes in calls ``release`` once ``at`` has passed, so that under load (an
    iteration serving hundreds of responses) arrivals go out between its callbacks instead of after all of
    them. ``at`` is on the arrival loop's clock, which in the agent is the engines' (``time.monotonic``);
    ``release`` decides what is due by that clock alone, so an early call only costs the call."""

    __slots__ = ("at", "release")

    def __init__(self) -> None:
        self.at = math.inf
        self.release: Callable[[], float] = no_arrivals


class Sink(Protocol):
    """Receives every outcome; called on the event loop thread, must be cheap."""

    def response(self, req: int, intended: float, sent: float, done: float, status: int) -> None:
        """A complete response arrived (any status; the sink decides what counts as a failure)."""

    def error(self, req: int, intended: float, sent: float, done: float, category: str) -> None:
        """The request failed without a response. ``sent`` is 0.0 if it was never written."""


class Engine(Protocol):
    """An HTTP client driven by the arrival loop. Created without side effects; I/O starts in ``start``."""

    due: Due
    """Set by the arrival loop. An engine that can, calls ``due.release()`` from its response callback when
    the time it read for the response is ``due.at`` or later; one that never does leaves the arrivals to
    the loop's timer."""

    async def start(self) -> None:
        """Prepare (resolve the target, open a first connection). Raises ``ConnectionError`` if the target
        cannot be reached at all."""

    def submit(self, req: int, intended: float) -> None:
        """Start request number ``req`` (an index into the profile's requests). Never blocks, never raises."""

    @property
    def in_flight(self) -> int:
        """Requests submitted whose outcome has not yet been reported (queued or on the wire)."""

    @property
    def connections(self) -> int:
        """Connections open now (not counting those being opened)."""

    @property
    def opened(self) -> int:
        """Connections opened since the start (a TLS connection: its handshake done)."""

    @property
    def open_failures(self) -> Mapping[str, int]:
        """Attempts to open a connection that failed since the start, by error category."""

    @property
    def peak_streams(self) -> int:
        """HTTP/2: the most streams open at once on one connection since the start (0: HTTP/1.1)."""

    async def drain(self, deadline: float) -> None:
        """Wait until nothing is in flight or the clock reaches ``deadline``."""

    async def aclose(self) -> None:
        """Close every connection. Requests still in flight are not reported (they stay ``in_flight``)."""


HEAD = 1
"""A request flag (:meth:`Slots.put`): the request is a HEAD, its response has no body."""
READ = 2
"""A request flag: hand the response's headers and body over in :attr:`Slots.reply` (a flow step that
captures, checks or keeps cookies)."""


READ_LIMIT = 1024 * 1024
"""Bytes of a body kept for a :data:`READ` request (captures and checks see these; the rest is read and
dropped): a thousand flow instances in flight must not hold a gigabyte of bodies."""


class Reply:
    """The headers and body of the last response read in full (a request flagged :data:`READ`; the body's
    first :data:`READ_LIMIT` bytes): set just before the sink hears of that response, valid until the
    sink's callback returns."""

    __slots__ = ("body", "headers")

    def __init__(self) -> None:
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = b""


class Slots(Protocol):
    """What an engine offers for requests made while the run goes on (the steps of user journeys, see
    :mod:`agents.flow_runner`): request numbers past the profile's own, each given its bytes before it is
    submitted. Per request it costs a list assignment; the profile's own requests are unaffected."""

    reply: Reply

    def reserve(self, n: int) -> int:
        """Add ``n`` request numbers (before :meth:`Engine.start`); returns the first."""

    def head_of(self, spec: RequestSpec) -> RequestHead:
        """What ``spec`` sends to this engine's target (a template's text, for a step to fill)."""

    def prepare(self, head: RequestHead) -> object:
        """``head`` in this engine's wire form. Raises ValueError for what it cannot send."""

    def prepared(self, req: int) -> object:
        """The wire form of the profile's request ``req``, built in the constructor."""

    def put(self, req: int, prepared: object, flags: int) -> None:
        """Request number ``req`` sends ``prepared`` (from :meth:`prepare` or :meth:`prepared`) from now on;
        ``flags``: :data:`HEAD`, :data:`READ`."""


T = TypeVar("T")


def connect_category(exc: BaseException) -> str:
    """The error category of a connection that could not be opened (see the module docstring)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return "tls_verify"
    if isinstance(exc, ssl.SSLError):
        return "tls_handshake"
    if isinstance(exc, socket.gaierror):
        return "dns"
    return "connect"


class Unreachable(ConnectionError):
    """No address of the target accepted a connection. ``address`` is the first one resolved (None: the name
    did not resolve): the engine keeps it, so that later arrivals fail as ``category`` errors (or succeed
    once the target comes up; a name that did not resolve is resolved again for each new connection until
    it does)."""

    def __init__(self, message: str, address: str | None, category: str = "connect") -> None:
        super().__init__(message)
        self.address = address
        self.category = category


async def connect_first(
    target: str, host: str, port: int, connect: Callable[[str], Awaitable[T]]
) -> tuple[str, T]:
    """Resolve ``host`` once and try its addresses in order with ``connect(address)``; return the first
    address that accepts, with what ``connect`` returned. Every later connection goes to that address: DNS
    is resolved once per engine, at the start, not per connection.

    Raises :class:`Unreachable` if the name does not resolve (``address`` None, category ``dns``) or no
    address accepts (the category of the last failure).
    """
    try:
        infos = await resolve(host, port)
    except OSError as exc:
        raise Unreachable(f"cannot resolve {target}: {exc}", None, "dns") from exc
    failure: OSError | None = None
    for address in dict.fromkeys(str(info[4][0]) for info in infos):
        try:
            return address, await connect(address)
        except OSError as exc:  # TimeoutError included
            failure = exc
    assert failure is not None
    reason = str(failure) or type(failure).__name__
    category = connect_category(failure)
    raise Unreachable(f"cannot connect to {target}: {reason}", str(infos[0][4][0]), category) from failure


async def resolve(host: str, port: int) -> list[tuple[Any, ...]]:
    """The addresses of ``host`` (getaddrinfo's). Raises OSError (``socket.gaierror``)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    if not infos:
        raise socket.gaierror(f"{host} has no address")
    return infos
