"""The CURVE control channel: key files, the allow-list, the pinned coordinator key, encryption on the wire."""

from __future__ import annotations

import asyncio
import logging
import os
import select
import shutil
import socket
import stat
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import zmq
import zmq.asyncio
from zmq.auth.certs import load_certificate
from zmq.utils.monitor import recv_monitor_message

from loadgen.errors import LoadgenError
from loadgen.security import (
    ClientSecurity,
    SecurityError,
    ServerAuth,
    ServerSecurity,
    apply_client,
    check_plain_allowed,
    generate_keypair,
    is_loopback_endpoint,
)

WAIT_MS = 3000  # upper bound for things that happen in milliseconds on loopback
QUIET_MS = 300  # how long "nothing arrives" is watched after the handshake has failed

# --- key files ------------------------------------------------------------------------------------------


def test_generate_keypair_writes_a_zmq_certificate_pair(tmp_path: Path) -> None:
    public_file, secret_file = generate_keypair(tmp_path / "keys", "agent-1")

    assert public_file == tmp_path / "keys" / "agent-1.key"
    assert secret_file == tmp_path / "keys" / "agent-1.key_secret"
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    public, no_secret = load_certificate(public_file)
    same_public, secret = load_certificate(secret_file)
    assert no_secret is None
    assert public == same_public
    assert secret is not None
    assert len(public) == len(secret) == 40
    assert zmq.curve_public(secret) == public  # the pair belongs together


def test_generate_keypair_refuses_to_overwrite(tmp_path: Path) -> None:
    public_file, secret_file = generate_keypair(tmp_path, "coordinator")
    before = (public_file.read_bytes(), secret_file.read_bytes())

    with pytest.raises(SecurityError, match="already exists"):
        generate_keypair(tmp_path, "coordinator")
    assert (public_file.read_bytes(), secret_file.read_bytes()) == before

    secret_file.unlink()  # a half pair left behind is not overwritten either
    with pytest.raises(SecurityError, match=r"coordinator\.key already exists"):
        generate_keypair(tmp_path, "coordinator")
    assert not secret_file.exists()


@pytest.mark.parametrize("name", ["", ".", "..", "a/b"])
def test_generate_keypair_refuses_a_name_that_is_not_a_file_name(tmp_path: Path, name: str) -> None:
    with pytest.raises(SecurityError, match="not a plain file name"):
        generate_keypair(tmp_path, name)


def test_security_error_is_a_loadgen_error() -> None:
    assert issubclass(SecurityError, LoadgenError)


# --- plain channels -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("endpoint", "loopback"),
    [
        ("tcp://127.0.0.1:5555", True),
        ("tcp://127.0.0.1:*", True),
        ("tcp://127.1.2.3:5555", True),
        ("tcp://localhost:5555", True),
        ("tcp://LOCALHOST:5555", True),
        ("tcp://[::1]:5555", True),
        ("tcp://[::ffff:127.0.0.1]:5555", True),
        ("tcp://127.0.0.1:0;127.0.0.1:5555", True),
        ("ipc:///tmp/loadgen.sock", True),
        ("inproc://control", True),
        ("tcp://0.0.0.0:5555", False),
        ("tcp://*:5555", False),
        ("tcp://[::]:5555", False),
        ("tcp://10.0.0.5:5555", False),
        ("tcp://coordinator.example:5555", False),
        ("tcp://lo:5555", False),
        ("tcp://127.0.0.1:0;10.0.0.5:5555", False),
        ("tcp://localhost.evil.example:5555", False),
        ("udp://127.0.0.1:5555", False),
        ("127.0.0.1:5555", False),
        ("", False),
    ],
)
def test_is_loopback_endpoint(endpoint: str, loopback: bool) -> None:
    assert is_loopback_endpoint(endpoint) is loopback


@pytest.mark.parametrize("insecure", [False, True])
def test_plain_on_loopback_is_allowed_silently(insecure: bool) -> None:
    assert check_plain_allowed("tcp://127.0.0.1:5555", insecure) is None


def test_plain_elsewhere_with_insecure_returns_a_warning() -> None:
    warning = check_plain_allowed("tcp://0.0.0.0:5555", insecure=True)

    assert warning is not None
    assert warning.startswith("WARNING: control channel on tcp://0.0.0.0:5555 is neither authenticated")
    assert "--insecure" in warning


def test_plain_elsewhere_without_insecure_is_refused_with_the_options_to_use() -> None:
    with pytest.raises(SecurityError) as info:
        check_plain_allowed("tcp://10.0.0.5:5555", insecure=False)

    message = str(info.value)
    for option in ("--secret-key", "--authorized-agents", "--coordinator-key", "--insecure", "keys generate"):
        assert option in message


# --- key problems the user has to fix -------------------------------------------------------------------


@dataclass(frozen=True)
class Keys:
    dir: Path
    clients_dir: Path

    def secret(self, name: str) -> Path:
        return self.dir / f"{name}.key_secret"

    def public(self, name: str) -> Path:
        return self.dir / f"{name}.key"

    def server(self) -> ServerSecurity:
        return ServerSecurity(self.secret("server"), self.clients_dir)

    def client(self, name: str = "agent", server: str = "server") -> ClientSecurity:
        return ClientSecurity(self.secret(name), self.public(server))


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    directory = tmp_path_factory.mktemp("keys")
    for name in ("server", "agent", "stranger"):
        generate_keypair(directory, name)
    clients = directory / "authorized"
    clients.mkdir()
    shutil.copy(directory / "agent.key", clients / "agent.key")
    return Keys(directory, clients)


@pytest.fixture
def ctx() -> Iterator[zmq.Context[Any]]:
    context: zmq.Context[Any] = zmq.Context()
    yield context
    context.term()


def test_server_refuses_an_empty_or_missing_allow_list(
    keys: Keys, ctx: zmq.Context[Any], tmp_path: Path
) -> None:
    with pytest.raises(SecurityError, match=r"has no \.key files"):
        ServerAuth(ctx, ServerSecurity(keys.secret("server"), tmp_path)).start()
    with pytest.raises(SecurityError, match="does not exist"):
        ServerAuth(ctx, ServerSecurity(keys.secret("server"), tmp_path / "missing")).start()


def test_server_refuses_an_unreadable_allow_list_file(
    keys: Keys, ctx: zmq.Context[Any], tmp_path: Path
) -> None:
    (tmp_path / "garbage.key").write_text("not a certificate\n")
    with pytest.raises(SecurityError, match=r"garbage\.key is not a ZMQ key file"):
        ServerAuth(ctx, ServerSecurity(keys.secret("server"), tmp_path)).start()

    (tmp_path / "garbage.key").write_text('curve\n    public-key = "tooshort"\n')
    with pytest.raises(SecurityError, match="not a 40-character Z85 CURVE key"):
        ServerAuth(ctx, ServerSecurity(keys.secret("server"), tmp_path)).start()


def test_server_needs_its_secret_key(keys: Keys, ctx: zmq.Context[Any]) -> None:
    with pytest.raises(SecurityError, match="holds only a public key"):
        ServerAuth(ctx, ServerSecurity(keys.public("server"), keys.clients_dir)).start()
    with pytest.raises(SecurityError, match="does not exist"):
        ServerAuth(ctx, ServerSecurity(keys.dir / "nope.key_secret", keys.clients_dir)).start()


def test_server_auth_apply_before_start_is_a_bug(keys: Keys, ctx: zmq.Context[Any]) -> None:
    sock = ctx.socket(zmq.ROUTER)
    try:
        with pytest.raises(RuntimeError, match="before start"):
            ServerAuth(ctx, keys.server()).apply(sock)
    finally:
        sock.close(linger=0)


def test_server_auth_constructor_has_no_side_effects(
    keys: Keys, ctx: zmq.Context[Any], tmp_path: Path
) -> None:
    auth = ServerAuth(ctx, ServerSecurity(tmp_path / "missing", tmp_path / "missing"))  # nothing checked yet
    assert auth.refused() == []
    auth.stop()  # stopping what never started is fine


def test_client_key_problems(keys: Keys, ctx: zmq.Context[Any]) -> None:
    sock = ctx.socket(zmq.DEALER)
    try:
        with pytest.raises(SecurityError, match="does not exist"):
            apply_client(sock, ClientSecurity(keys.secret("agent"), keys.dir / "missing.key"))
        with pytest.raises(SecurityError, match="contains a secret key"):
            apply_client(sock, ClientSecurity(keys.secret("agent"), keys.secret("server")))
        with pytest.raises(SecurityError, match="holds only a public key"):
            apply_client(sock, ClientSecurity(keys.public("agent"), keys.public("server")))
        with pytest.raises(SecurityError, match="the coordinator's own key pair"):
            apply_client(sock, ClientSecurity(keys.secret("server"), keys.public("server")))
    finally:
        sock.close(linger=0)


def test_a_secret_key_readable_by_others_is_warned_about(
    keys: Keys, ctx: zmq.Context[Any], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    loose = tmp_path / "agent.key_secret"
    shutil.copy(keys.secret("agent"), loose)
    os.chmod(loose, 0o644)
    sock = ctx.socket(zmq.DEALER)
    try:
        with caplog.at_level(logging.WARNING, logger="loadgen.security"):
            apply_client(sock, ClientSecurity(loose, keys.public("server")))
    finally:
        sock.close(linger=0)
    assert "accessible to other users" in caplog.text


# --- real sockets on loopback ---------------------------------------------------------------------------


@dataclass
class Server:
    sock: zmq.Socket[bytes]
    endpoint: str
    auth: ServerAuth | None
    monitor: zmq.Socket[bytes]

    def handshake_event(self) -> int:
        """The first handshake outcome the server sees (success or the kind of failure)."""
        wanted = {
            zmq.EVENT_HANDSHAKE_SUCCEEDED,
            zmq.EVENT_HANDSHAKE_FAILED_AUTH,
            zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL,
            zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL,
        }
        while self.monitor.poll(WAIT_MS):
            event = int(recv_monitor_message(self.monitor)["event"])
            if event in wanted:
                return event
        raise AssertionError("no handshake within the time limit")


@contextmanager
def serving(ctx: zmq.Context[Any], security: ServerSecurity | None, port: int = 0) -> Iterator[Server]:
    """A ROUTER bound on loopback, with CURVE and the allow-list when ``security`` is given."""
    auth = None if security is None else ServerAuth(ctx, security)
    sock: zmq.Socket[bytes] = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    monitor: zmq.Socket[bytes] | None = None
    try:
        if auth is not None:
            auth.start()
            auth.apply(sock)
        monitor = sock.get_monitor_socket()
        sock.bind(f"tcp://127.0.0.1:{port or '*'}")
        yield Server(sock, sock.getsockopt_string(zmq.LAST_ENDPOINT), auth, monitor)
    finally:
        if monitor is not None:
            sock.disable_monitor()
            monitor.close(linger=0)
        sock.close(linger=0)
        if auth is not None:
            auth.stop()


@contextmanager
def connected(
    ctx: zmq.Context[Any], endpoint: str, security: ClientSecurity | None
) -> Iterator[zmq.Socket[bytes]]:
    sock: zmq.Socket[bytes] = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        if security is not None:
            apply_client(sock, security)
        sock.connect(endpoint)
        yield sock
    finally:
        sock.close(linger=0)


def round_trip(server: Server, client: zmq.Socket[bytes], payload: bytes) -> None:
    client.send(payload)
    assert server.sock.poll(WAIT_MS), "the server received nothing"
    ident, data = server.sock.recv_multipart()
    assert data == payload
    server.sock.send_multipart([ident, b"reply:" + payload])
    assert client.poll(WAIT_MS), "the client received no reply"
    assert client.recv() == b"reply:" + payload


def assert_nothing_through(server: Server, client: zmq.Socket[bytes], failure: int) -> None:
    client.send(b"let me in", flags=zmq.NOBLOCK)
    assert server.handshake_event() == failure
    assert server.sock.poll(QUIET_MS) == 0


@pytest.mark.integration
def test_an_authorized_agent_and_the_coordinator_talk(keys: Keys, ctx: zmq.Context[Any]) -> None:
    with serving(ctx, keys.server()) as server, connected(ctx, server.endpoint, keys.client()) as client:
        round_trip(server, client, b"hello")
        assert server.handshake_event() == zmq.EVENT_HANDSHAKE_SUCCEEDED
        assert server.sock.getsockopt(zmq.MECHANISM) == zmq.CURVE
        assert server.sock.getsockopt(zmq.CURVE_SERVER) == 1
        assert client.getsockopt(zmq.MECHANISM) == zmq.CURVE
        assert client.getsockopt(zmq.CURVE_SERVER) == 0
        assert server.auth is not None
        assert server.auth.refused() == []


@pytest.mark.integration
def test_an_agent_with_an_unknown_key_gets_nothing_through_and_is_logged(
    keys: Keys, ctx: zmq.Context[Any], caplog: pytest.LogCaptureFixture
) -> None:
    stranger_public = load_certificate(keys.public("stranger"))[0].decode()
    with (
        caplog.at_level(logging.WARNING, logger="loadgen.security"),
        serving(ctx, keys.server()) as server,
        connected(ctx, server.endpoint, keys.client("stranger")) as client,
    ):
        assert_nothing_through(server, client, zmq.EVENT_HANDSHAKE_FAILED_AUTH)
        assert server.auth is not None
        refused = server.auth.refused()
    assert [(r.address, r.public_key) for r in refused] == [("127.0.0.1", stranger_public)]
    warnings = [r.getMessage() for r in caplog.records if r.name == "loadgen.security"]
    assert len(warnings) == 1
    assert "refused an agent with an unknown key from 127.0.0.1" in warnings[0]
    assert stranger_public in warnings[0]


@pytest.mark.integration
def test_an_agent_given_the_wrong_coordinator_key_gets_nothing_through(
    keys: Keys, ctx: zmq.Context[Any]
) -> None:
    with (
        serving(ctx, keys.server()) as server,
        connected(ctx, server.endpoint, keys.client(server="stranger")) as client,
    ):
        assert_nothing_through(server, client, zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL)


@pytest.mark.integration
def test_a_plain_agent_gets_nothing_through_to_a_curve_coordinator(keys: Keys, ctx: zmq.Context[Any]) -> None:
    with serving(ctx, keys.server()) as server, connected(ctx, server.endpoint, None) as client:
        assert_nothing_through(server, client, zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL)


@pytest.mark.integration
def test_an_asyncio_agent_socket_works(keys: Keys, ctx: zmq.Context[Any]) -> None:
    async def agent(endpoint: str, server: Server) -> bytes:
        actx = zmq.asyncio.Context()
        sock = actx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        try:
            apply_client(sock, keys.client())
            sock.connect(endpoint)
            await sock.send(b"ping")
            assert server.sock.poll(WAIT_MS)
            ident, _ = server.sock.recv_multipart()
            server.sock.send_multipart([ident, b"pong"])
            assert await sock.poll(WAIT_MS)
            return await sock.recv()
        finally:
            sock.close(linger=0)
            actx.term()

    with serving(ctx, keys.server()) as server:
        assert asyncio.run(agent(server.endpoint, server)) == b"pong"


class Relay:
    """A TCP relay on 127.0.0.1 in front of ``target_port`` that keeps a copy of every byte it forwards."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.forwarded = bytearray()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._peer: dict[socket.socket, socket.socket] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="relay", daemon=True)

    def __enter__(self) -> Relay:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        assert not self._thread.is_alive()
        for sock in [self._listener, *self._peer]:
            sock.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            readable, _, _ = select.select([self._listener, *self._peer], [], [], 0.02)
            for sock in readable:
                if sock is self._listener:
                    downstream, _ = self._listener.accept()
                    upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
                    self._peer[downstream], self._peer[upstream] = upstream, downstream
                    continue
                other = self._peer.get(sock)
                if other is None:  # closed together with its partner in this round
                    continue
                try:
                    data = sock.recv(65536)
                    if data:
                        other.sendall(data)
                except OSError:
                    data = b""
                if not data:
                    for s in (sock, other):
                        del self._peer[s]
                        s.close()
                    continue
                self.forwarded += data


MARKER = b"MARKER-plaintext-order-7f3a9c"


def port_of(endpoint: str) -> int:
    return int(endpoint.rsplit(":", 1)[1])


@pytest.mark.integration
def test_the_relay_sees_the_marker_on_a_plain_channel(ctx: zmq.Context[Any]) -> None:
    with (
        serving(ctx, None) as server,
        Relay(port_of(server.endpoint)) as relay,
        connected(ctx, f"tcp://127.0.0.1:{relay.port}", None) as client,
    ):
        round_trip(server, client, MARKER)
    assert MARKER in relay.forwarded  # so the relay would catch it if CURVE let it through


@pytest.mark.integration
def test_curve_traffic_does_not_show_the_plaintext(keys: Keys, ctx: zmq.Context[Any]) -> None:
    with (
        serving(ctx, keys.server()) as server,
        Relay(port_of(server.endpoint)) as relay,
        connected(ctx, f"tcp://127.0.0.1:{relay.port}", keys.client()) as client,
    ):
        round_trip(server, client, MARKER)  # so the messages did pass through the relay
    assert relay.forwarded
    assert MARKER not in relay.forwarded
    assert b"reply:" not in relay.forwarded
