"""The control channel's security: CurveZMQ key pairs, the coordinator's allow-list, the agent's pinned key.

With CURVE every message between coordinator and agents is encrypted, the coordinator accepts only agents
whose public keys are in a folder it was given (checked by a ZAP handler, pyzmq's ``ThreadAuthenticator``,
on the coordinator's context) and an agent completes the handshake only with the coordinator whose public
key it was given. Without CURVE the channel is plain TCP, allowed on loopback and elsewhere only with
``--insecure`` (:func:`check_plain_allowed`).

Keys are ZMQ certificate files, as ``zmq.auth.create_certificates`` writes them: ``NAME.key`` holds the
public key and is handed out; ``NAME.key_secret`` holds both keys and stays with its owner (mode 0600).

Order on the coordinator: ``ServerAuth.start()``, then ``apply()`` on the socket before ``bind()``; on
shutdown close the socket, ``ServerAuth.stop()``, then ``ctx.term()`` (the authenticator's sockets live on
the context, so ``term()`` waits for ``stop()``). On an agent: ``apply_client()`` before ``connect()``.

Everything here raises :class:`SecurityError` for a key or option the user has to fix.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq
from zmq.auth.certs import load_certificate
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils import z85

from loadgen.errors import LoadgenError

log = logging.getLogger("loadgen.security")

ZAP_DOMAIN = "loadgen"
"""The ZAP domain of the coordinator's socket; the allow-list is configured for this domain only."""

PUBLIC_SUFFIX = ".key"
SECRET_SUFFIX = ".key_secret"
_KEY_TEXT_LENGTH = 40  # a 32-byte Curve25519 key in Z85

_SERVER_OPTIONS = "the coordinator's --secret-key FILE and --authorized-agents DIR"
_CLIENT_OPTIONS = "the agent's --secret-key FILE and --coordinator-key FILE"


class SecurityError(LoadgenError):
    """A key file, key folder or security option is missing or wrong; the message says what to do."""


# --- key files -----------------------------------------------------------------------------------------


def generate_keypair(directory: Path, name: str) -> tuple[Path, Path]:
    """Write a new CURVE key pair as ``directory/NAME.key`` (public) and ``NAME.key_secret`` (mode 0600).

    Creates ``directory`` if needed. Never overwrites a file. Returns ``(public_file, secret_file)``.
    """
    if not name or name in {".", ".."} or "/" in name or os.sep in name or "\0" in name:
        raise SecurityError(f"key name {name!r} is not a plain file name; use something like 'agent-1'")
    public_file = directory / f"{name}{PUBLIC_SUFFIX}"
    secret_file = directory / f"{name}{SECRET_SUFFIX}"
    for path in (public_file, secret_file):
        if path.exists():
            raise SecurityError(f"{path} already exists; remove it first or choose another name")
    public_key, secret_key = zmq.curve_keypair()
    public_text = public_key.decode("ascii")
    secret_text = secret_key.decode("ascii")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        _write_new(secret_file, _certificate(name, "Secret", public_text, secret_text), 0o600)
        try:
            _write_new(public_file, _certificate(name, "Public", public_text, None), 0o644)
        except BaseException:
            secret_file.unlink(missing_ok=True)
            raise
    except FileExistsError as exc:
        raise SecurityError(f"{exc.filename} already exists; remove it first or choose another name") from exc
    except OSError as exc:
        raise SecurityError(f"cannot write the key pair to {directory}: {exc.strerror or exc}") from exc
    return public_file, secret_file


def _certificate(name: str, kind: str, public_text: str, secret_text: str | None) -> str:
    """A ZMQ certificate (the zcert text format ``zmq.auth.load_certificate`` reads)."""
    lines = [f"#   ZeroMQ CURVE {kind} Certificate ({name}), made by loadgen keys generate"]
    if secret_text is None:
        lines.append("#   Give this file to the peers that must recognise this key.")
    else:
        lines.append("#   Keep this file private: never copy it to another machine or loosen its mode.")
    lines += ["", "metadata", "curve", f'    public-key = "{public_text}"']
    if secret_text is not None:
        lines.append(f'    secret-key = "{secret_text}"')
    return "\n".join(lines) + "\n"


def _write_new(path: Path, text: str, mode: int) -> None:
    """Create ``path`` with ``mode`` (less the umask) from its first byte; O_EXCL: fails if it exists."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(text)


def _check_key_text(key: bytes, path: Path, what: str) -> bytes:
    if len(key) != _KEY_TEXT_LENGTH or any(c not in z85.Z85CHARS for c in key):
        raise SecurityError(
            f"{path}: the {what} is not a 40-character Z85 CURVE key; regenerate the key pair"
        )
    return key


def _load(path: Path) -> tuple[bytes, bytes | None]:
    """(public key, secret key or None) as Z85 bytes, or SecurityError saying what is wrong with the file."""
    if not path.is_file():
        raise SecurityError(f"key file {path} does not exist; make one with `loadgen keys generate`")
    try:
        public, secret = load_certificate(path)
    except ValueError as exc:
        raise SecurityError(f"{path} is not a ZMQ key file (no public-key line)") from exc
    except (OSError, UnicodeError) as exc:
        raise SecurityError(f"cannot read key file {path}: {exc}") from exc
    _check_key_text(public, path, "public key")
    if secret is not None:
        _check_key_text(secret, path, "secret key")
    return public, secret


def _load_keypair(path: Path) -> tuple[bytes, bytes]:
    public, secret = _load(path)
    if secret is None:
        raise SecurityError(
            f"{path} holds only a public key; pass the matching {SECRET_SUFFIX} file as --secret-key"
        )
    if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("secret key file %s is accessible to other users; run chmod 600 on it", path)
    return public, secret


def _load_public(path: Path) -> bytes:
    public, secret = _load(path)
    if secret is not None:
        raise SecurityError(
            f"{path} contains a secret key; give agents only the public {PUBLIC_SUFFIX} file "
            "and keep the secret one on the coordinator"
        )
    return public


def _load_allow_list(directory: Path) -> set[bytes]:
    if not directory.is_dir():
        raise SecurityError(f"authorized agents folder {directory} does not exist or is not a folder")
    files = sorted(p for p in directory.glob(f"*{PUBLIC_SUFFIX}") if p.is_file())
    if not files:
        raise SecurityError(
            f"authorized agents folder {directory} has no {PUBLIC_SUFFIX} files; "
            f"copy each agent's public NAME{PUBLIC_SUFFIX} into it"
        )
    return {_load(p)[0] for p in files}


# --- configuration values ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerSecurity:
    """The coordinator's CURVE settings."""

    secret_file: Path  # the coordinator's NAME.key_secret
    clients_dir: Path  # a folder of agents' public .key files allowed to connect


@dataclass(frozen=True)
class ClientSecurity:
    """An agent's CURVE settings."""

    secret_file: Path  # the agent's own NAME.key_secret
    server_public_file: Path  # the coordinator's NAME.key (public)


@dataclass(frozen=True)
class RefusedAgent:
    """A peer the coordinator refused because its public key is not on the allow-list."""

    address: str  # the peer's IP address as ZAP reports it
    public_key: str  # Z85 text, ready to compare with a .key file


# --- plain channels ------------------------------------------------------------------------------------


def is_loopback_endpoint(endpoint: str) -> bool:
    """True if ``endpoint`` cannot be reached from another machine (loopback TCP, ipc://, inproc://).

    Wildcards (``tcp://*``, ``tcp://0.0.0.0``, ``tcp://[::]``), interface names and other hosts are not.
    A ``tcp://source;destination`` endpoint is loopback only if both parts are.
    """
    scheme, sep, rest = endpoint.partition("://")
    scheme = scheme.lower()
    if not sep:
        return False
    if scheme in {"ipc", "inproc"}:
        return True
    if scheme != "tcp" or not rest:
        return False
    return all(_is_loopback_host(_host_of(part)) for part in rest.split(";"))


def _host_of(address: str) -> str:
    if address.startswith("["):
        return address[1 : address.find("]")] if "]" in address else ""
    host, colon, _port = address.rpartition(":")
    return host if colon else address


def _is_loopback_host(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


def check_plain_allowed(endpoint: str, insecure: bool) -> str | None:
    """Decide whether the control channel may run without CURVE on ``endpoint``.

    Returns None when it may silently (loopback), a warning to print when it may because of ``--insecure``,
    and raises :class:`SecurityError` otherwise.
    """
    if is_loopback_endpoint(endpoint):
        return None
    if insecure:
        return (
            f"WARNING: control channel on {endpoint} is neither authenticated nor encrypted (--insecure): "
            "anyone who can reach it can give agents orders or read results; "
            "use CURVE keys (`loadgen keys generate`) outside a trusted network"
        )
    raise SecurityError(
        f"the control channel on {endpoint} is not on loopback and has no keys: make key pairs with "
        f"`loadgen keys generate` and pass {_SERVER_OPTIONS}, and {_CLIENT_OPTIONS}; "
        "or pass --insecure to run it unauthenticated and unencrypted"
    )


# --- the coordinator's side ----------------------------------------------------------------------------


class _AllowListAuthenticator(ThreadAuthenticator):
    """pyzmq's ZAP thread, plus a record (and one warning each) of peers refused for an unknown key."""

    def __init__(self, context: zmq.Context[Any]) -> None:
        super().__init__(context=context, log=logging.getLogger("loadgen.security.zap"))
        self._lock = threading.Lock()
        self._refused: dict[RefusedAgent, int] = {}

    async def handle_zap_message(self, msg: list[bytes]) -> None:
        self._note_refusal(msg)  # before the reply, so the record exists once the peer learns the outcome
        await super().handle_zap_message(msg)

    def _note_refusal(self, msg: list[bytes]) -> None:
        # ZAP request: version, request id, domain, address, routing id, mechanism, credentials...
        if len(msg) != 7 or msg[5] != b"CURVE" or len(msg[6]) != 32:
            return
        domain = msg[2].decode("utf-8", "replace") or "*"
        key = z85.encode(msg[6])
        if key in self.certs.get(domain, {}):  # the same test pyzmq's handler applies to this request
            return
        refused = RefusedAgent(msg[3].decode("utf-8", "replace"), key.decode("ascii"))
        with self._lock:
            seen = self._refused.get(refused, 0)
            self._refused[refused] = seen + 1
        if seen == 0:
            log.warning(
                "refused an agent with an unknown key from %s (public key %s); to accept it, put its "
                "%s file in the authorized agents folder",
                refused.address,
                refused.public_key,
                PUBLIC_SUFFIX,
            )
        else:  # a refused peer retries every reconnect interval: one warning is enough
            log.debug("refused %s again (attempt %d)", refused.address, seen + 1)

    def refused(self) -> list[RefusedAgent]:
        with self._lock:
            return list(self._refused)


class ServerAuth:
    """Applies CURVE server settings to a socket and runs the ZAP authenticator that enforces the allow-list.

    The authenticator is a thread serving the ZAP endpoint of ``ctx``; there can be one per context.
    Usable as a context manager (``start()``/``stop()``).
    """

    def __init__(self, ctx: zmq.Context[Any], security: ServerSecurity) -> None:
        self._ctx = ctx
        self.security = security
        self._auth: _AllowListAuthenticator | None = None
        self._keypair: tuple[bytes, bytes] | None = None

    def start(self) -> None:
        """Check the key files and start the authenticator. Raises :class:`SecurityError`."""
        if self._auth is not None:
            raise RuntimeError("ServerAuth is already started")
        keypair = _load_keypair(self.security.secret_file)
        allowed = _load_allow_list(self.security.clients_dir)
        auth = _AllowListAuthenticator(self._ctx)
        try:
            auth.start()
        except zmq.ZMQError as exc:
            auth.stop()
            raise SecurityError(f"cannot start the agent authenticator: {exc}") from exc
        auth.configure_curve(domain=ZAP_DOMAIN, location=self.security.clients_dir)
        if not auth.certs.get(ZAP_DOMAIN):  # pyzmq logs and carries on if the folder fails to load
            auth.stop()
            raise SecurityError(f"cannot load the agents' public keys from {self.security.clients_dir}")
        self._keypair = keypair
        self._auth = auth
        log.info("accepting %d agent key(s) from %s", len(allowed), self.security.clients_dir)

    def apply(self, sock: zmq.Socket[Any]) -> None:
        """Make ``sock`` a CURVE server checked by this authenticator. Call after start(), before bind()."""
        if self._auth is None or self._keypair is None:
            # libzmq lets every CURVE client in when no ZAP handler runs, so this must not happen silently
            raise RuntimeError("ServerAuth.apply() before start(): the socket would accept any key")
        public, secret = self._keypair
        sock.setsockopt(zmq.CURVE_SERVER, 1)
        sock.setsockopt(zmq.CURVE_SECRETKEY, secret)
        sock.setsockopt(zmq.CURVE_PUBLICKEY, public)
        sock.setsockopt(zmq.ZAP_DOMAIN, ZAP_DOMAIN.encode())

    def refused(self) -> list[RefusedAgent]:
        """Distinct peers refused so far for an unknown key, oldest first (thread-safe)."""
        return [] if self._auth is None else self._auth.refused()

    def stop(self) -> None:
        """Stop the authenticator thread and close its sockets (joins the thread). Idempotent."""
        auth, self._auth = self._auth, None
        self._keypair = None
        if auth is not None:
            auth.stop()

    def __enter__(self) -> ServerAuth:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


# --- an agent's side -----------------------------------------------------------------------------------


def apply_client(sock: zmq.Socket[Any], security: ClientSecurity) -> None:
    """Make ``sock`` a CURVE client that talks only to the coordinator key given. Call before connect()."""
    server_public = _load_public(security.server_public_file)
    public, secret = _load_keypair(security.secret_file)
    if public == server_public:
        raise SecurityError(
            f"{security.secret_file} is the coordinator's own key pair; give the agent its own "
            "(`loadgen keys generate`) and put its public key in the authorized agents folder"
        )
    sock.setsockopt(zmq.CURVE_SERVERKEY, server_public)
    sock.setsockopt(zmq.CURVE_PUBLICKEY, public)
    sock.setsockopt(zmq.CURVE_SECRETKEY, secret)


def server_socket_setup(
    endpoint: str, secret_key: Path | None, authorized: Path | None, insecure: bool
) -> tuple[Callable[[zmq.Context[Any], zmq.Socket[Any]], ServerAuth] | None, str | None]:
    """How a coordinator's control socket is secured, from the operator's options: CURVE with an allow-list
    when keys are given (both or neither), else plain TCP where :func:`check_plain_allowed` allows it.
    Returns the socket setup (None for plain) and a warning to show, if any. Raises SecurityError."""
    if secret_key is not None or authorized is not None:
        if secret_key is None or authorized is None:
            raise SecurityError("the secret key and the authorized agents' folder go together")
        sec = ServerSecurity(Path(secret_key), Path(authorized))

        def setup(ctx: zmq.Context[Any], sock: zmq.Socket[Any]) -> ServerAuth:
            auth = ServerAuth(ctx, sec)
            auth.start()
            auth.apply(sock)
            return auth

        return setup, None
    return None, check_plain_allowed(endpoint, insecure)
