"""The engines' TLS context, built once per engine from the profile's ``[tls]``
(:class:`loadgen.endpoint.Tls`).

Nothing here runs per request: the context is made when the engine starts, and what it does per connection
(:class:`ResumingContext`) happens when a connection is opened.

Session resumption. asyncio (and uvloop) make the ``SSLObject`` of a connection inside ``create_connection``
and start the handshake at once, so a caller cannot set ``SSLObject.session`` on it; and the ssl module keeps
no client-side session cache, so without help every connection does a full handshake. Both event loops make
that object with ``context.wrap_bio(...)``, so :class:`ResumingContext` overrides it: each new connection is
given the session of the last connection that holds a resumable one (with TLS 1.3 the server's ticket arrives
after the handshake; by the time the next connection opens, the last one has read it). With
``session_resumption = false`` the context is a plain one that also asks for no tickets (``OP_NO_TICKET``):
every connection does a full handshake.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from typing import Any

from loadgen.endpoint import MIN_VERSIONS, Tls, load_client_cert

__all__ = ["ResumingContext", "client_context", "system_trust"]


class ResumingContext(ssl.SSLContext):
    """A client context whose connections resume the TLS session of the one opened before (see the module
    docstring). ``resumed_offers`` counts the connections it offered a session to."""

    _last: ssl.SSLObject | None = None
    _session: ssl.SSLSession | None = None
    resumed_offers = 0

    def wrap_bio(
        self,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        server_side: bool = False,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLObject:
        if session is None and not server_side:
            session = self._resumable()
        try:
            obj = super().wrap_bio(incoming, outgoing, server_side, server_hostname, session)
        except ValueError:  # a session the ssl module will not offer here: a full handshake instead
            if session is None:
                raise
            self._session = session = None
            obj = super().wrap_bio(incoming, outgoing, server_side, server_hostname)
        if session is not None:
            self.resumed_offers += 1
        self._last = obj
        return obj

    def _resumable(self) -> ssl.SSLSession | None:
        """The session of the last connection if the server gave a resumable one, else the one before."""
        last = self._last
        if last is not None:
            try:
                session = last.session
                version = last.version()
            except (ValueError, ssl.SSLError):  # its handshake never completed
                session, version = None, None
            if session is not None and version is not None and (session.has_ticket or version != "TLSv1.3"):
                self._session = session
        return self._session


def system_trust(ctx: ssl.SSLContext) -> None:
    """Trust the system's CAs (``ssl.create_default_context``'s choice)."""
    ctx.load_default_certs()


def client_context(tls: Tls | None, trust: Callable[[ssl.SSLContext], Any] = system_trust) -> ssl.SSLContext:
    """The client context for ``tls`` (None: the defaults); ``trust`` loads the CAs to verify against when
    the profile names no ``ca_file``. Raises ssl.SSLError for files the loader checked but the agent's ssl
    module refuses."""
    tls = tls or Tls()
    ctx: ssl.SSLContext
    if tls.session_resumption:
        ctx = ResumingContext(ssl.PROTOCOL_TLS_CLIENT)
    else:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.options |= ssl.OP_NO_TICKET
    if not tls.verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    elif tls.ca_file is not None:
        ctx.load_verify_locations(cadata=tls.ca_data.decode("ascii", errors="replace"))
    else:
        trust(ctx)
    if tls.min_version is not None:
        ctx.minimum_version = MIN_VERSIONS[tls.min_version]
    if tls.cert is not None:
        load_client_cert(ctx, tls.cert_data, tls.key_data)
    ctx.set_alpn_protocols(["http/1.1"])  # what both engines speak (httpcore offers the same)
    return ctx
