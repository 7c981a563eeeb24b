"""How a profile reaches its target: the ``[tls]`` table, ``resolve`` and ``auth``, as immutable values.

::

    resolve = { "api.example.com:443" = "127.0.0.1:8443" }   # connect there; Host and SNI stay the URL's
    auth = { bearer = "{{ env.TOKEN }}" }                     # or { basic = ["user", "{{ env.PASS }}"] }

    [tls]
    verify = true                # false: no certificate check (the results warn)
    ca_file = "ca.pem"           # trust these CAs (PEM) instead of the system's
    cert = "client.pem"          # a client certificate (PEM) ...
    key = "client.key"           # ... and its unencrypted private key (PEM)
    server_name = "api.internal" # SNI and the name the certificate must carry (default: the URL's host)
    min_version = "1.3"          # "1.2" or "1.3" (default: the ssl module's, TLS 1.2)
    session_resumption = true    # resume TLS sessions on new connections

The files are read where the profile is loaded (the coordinator), paths relative to the current directory,
and their bytes travel in the profile's wire form: agents on other machines need no copy. ``{{ env.NAME }}``
in ``auth`` is read from the loader's environment (:mod:`loadgen.env_refs`); the profile document keeps the
text as written and only the wire form carries the value. The validators raise :class:`OptionError` with
the field's dotted path; :mod:`loadgen.profile_file` adds the file.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import ssl
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from loadgen.env_refs import EnvRefError, env_names, expand_env
from loadgen.shapes import describe, suggestion

ENDPOINT_KEYS = ("tls", "resolve", "auth")
"""The profile's top-level keys this module reads."""
TLS_KEYS = ("verify", "ca_file", "cert", "key", "server_name", "min_version", "session_resumption")
AUTH_KEYS = ("bearer", "basic")
MIN_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
_HOST = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")
_CREDENTIAL = re.compile(r"[\x21-\x7e]+")  # a token68 or a password as a header can carry it: visible ASCII


class OptionError(ValueError):
    """A ``[tls]``, ``resolve`` or ``auth`` value is refused. ``field`` is its dotted path."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True)
class Tls:
    """The ``[tls]`` table: ``Tls(ca_file="ca.pem")``. The ``*_data`` fields are the files' bytes, read when
    the profile is built; they do not take part in equality and are never shown."""

    verify: bool = True
    ca_file: str | None = None
    cert: str | None = None
    key: str | None = None
    server_name: str | None = None
    min_version: str | None = None
    session_resumption: bool = True
    ca_data: bytes = field(default=b"", compare=False, repr=False)
    cert_data: bytes = field(default=b"", compare=False, repr=False)
    key_data: bytes = field(default=b"", compare=False, repr=False)

    def to_doc(self) -> dict[str, Any]:
        """The ``[tls]`` table, without the defaults."""
        doc: dict[str, Any] = {}
        for name in TLS_KEYS:
            value = getattr(self, name)
            if value != getattr(DEFAULT_TLS, name):
                doc[name] = value
        return doc

    def to_wire(self, secrets: bool = True) -> dict[str, Any]:
        """The wire form; without ``secrets`` the client key is left out (a checkpoint on disk)."""
        wire: dict[str, Any] = {name: getattr(self, name) for name in TLS_KEYS}
        wire |= {"ca_data": self.ca_data, "cert_data": self.cert_data}
        wire["key_data"] = self.key_data if secrets else b""
        return wire

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> Tls:
        """Raises KeyError/TypeError/ValueError on bad input (the wire layer's to map)."""

        def text(name: str) -> str | None:
            value = d[name]
            if value is not None and not isinstance(value, str):
                raise TypeError(f"tls.{name}: expected a string or nil")
            return value

        min_version = text("min_version")
        if min_version is not None and min_version not in MIN_VERSIONS:
            raise ValueError(f"tls.min_version {min_version!r} unknown")
        return cls(
            verify=bool(d["verify"]),
            ca_file=text("ca_file"),
            cert=text("cert"),
            key=text("key"),
            server_name=text("server_name"),
            min_version=min_version,
            session_resumption=bool(d["session_resumption"]),
            ca_data=bytes(d["ca_data"]),
            cert_data=bytes(d["cert_data"]),
            key_data=bytes(d["key_data"]),
        )


DEFAULT_TLS = Tls()


@dataclass(frozen=True)
class Auth:
    """``auth``: ``Auth(bearer="{{ env.TOKEN }}")`` or ``Auth(basic=("user", "{{ env.PASS }}"))``.

    ``header`` is the ``Authorization`` value with the environment's values in it, set when the profile is
    built; it does not take part in equality and is never shown."""

    bearer: str | None = None
    basic: tuple[str, str] | None = None
    header: str = field(default="", compare=False, repr=False)

    def to_doc(self) -> dict[str, Any]:
        """The ``auth`` table as written (references, not their values)."""
        if self.basic is not None:
            return {"basic": list(self.basic)}
        return {"bearer": self.bearer}

    def to_wire(self, secrets: bool = True) -> dict[str, Any]:
        return {
            "bearer": self.bearer,
            "basic": None if self.basic is None else list(self.basic),
            "header": self.header if secrets else "",
        }

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> Auth:
        basic = d["basic"]
        header = d["header"]
        if not isinstance(header, str) or any(c in header for c in "\r\n\0"):
            raise ValueError("auth.header: not a header value")
        if basic is not None:
            user, password = basic
            return cls(basic=(str(user), str(password)), header=header)
        return cls(bearer=str(d["bearer"]), header=header)


# --- validation (the loader's)


def parse_tls(value: object) -> Tls:
    """The ``[tls]`` table, its files read and checked. Raises OptionError."""
    if isinstance(value, Tls):
        value = value.to_doc()
    if not isinstance(value, dict):
        raise OptionError("tls", f'expected a table like {{ ca_file = "ca.pem" }}, got {describe(value)}')
    for key in value:
        if key not in TLS_KEYS:
            raise OptionError(f"tls.{key}", "unknown key" + suggestion(str(key), TLS_KEYS))
    verify = _bool(value.get("verify", True), "tls.verify")
    resumption = _bool(value.get("session_resumption", True), "tls.session_resumption")
    min_version = value.get("min_version")
    if min_version is not None and min_version not in MIN_VERSIONS:
        hint = ' (write it as a string: "1.3")' if isinstance(min_version, float) else ""
        raise OptionError("tls.min_version", f'expected "1.2" or "1.3", got {describe(min_version)}{hint}')
    server_name = value.get("server_name")
    if server_name is not None and (not isinstance(server_name, str) or not _HOST.fullmatch(server_name)):
        raise OptionError(
            "tls.server_name", f"expected a host name like 'api.example.com', got {describe(server_name)}"
        )
    paths = {name: _path(value.get(name), f"tls.{name}") for name in ("ca_file", "cert", "key")}
    if not verify and paths["ca_file"] is not None:
        raise OptionError(
            "tls.ca_file", "has no effect with verify = false (nothing is verified): remove one"
        )
    if (paths["cert"] is None) != (paths["key"] is None):
        given, missing = ("cert", "key") if paths["key"] is None else ("key", "cert")
        raise OptionError(
            f"tls.{missing}", f"missing; tls.{given} needs tls.{missing} (a client certificate and its key)"
        )
    data = {name: _read(path, f"tls.{name}") for name, path in paths.items() if path is not None}
    tls = Tls(
        verify=verify,
        ca_file=paths["ca_file"],
        cert=paths["cert"],
        key=paths["key"],
        server_name=server_name,
        min_version=min_version,
        session_resumption=resumption,
        ca_data=data.get("ca_file", b""),
        cert_data=data.get("cert", b""),
        key_data=data.get("key", b""),
    )
    _check_loadable(tls)
    return tls


def parse_resolve(value: object) -> tuple[tuple[str, str], ...]:
    """``resolve``: ``host:port`` to ``host:port`` pairs. Raises OptionError."""
    if not isinstance(value, dict):
        raise OptionError(
            "resolve",
            f'expected a table like {{ "api.example.com:443" = "127.0.0.1:8443" }}, got {describe(value)}',
        )
    pairs = []
    for key, to in value.items():
        where = f'resolve."{key}"'
        split_address(_address(key, where, "key"), where)
        split_address(_address(to, where, "value"), where)
        pairs.append((key, to))
    return tuple(pairs)


def parse_auth(value: object, environ: Mapping[str, str]) -> Auth:
    """``auth``, its ``{{ env.NAME }}`` references filled from ``environ``. Raises OptionError (naming the
    variable, never its value)."""
    if isinstance(value, Auth):
        value = value.to_doc()
    if not isinstance(value, dict):
        raise OptionError(
            "auth", f'expected a table like {{ bearer = "{{{{ env.TOKEN }}}}" }}, got {describe(value)}'
        )
    for key in value:
        if key not in AUTH_KEYS:
            raise OptionError(f"auth.{key}", "unknown key" + suggestion(str(key), AUTH_KEYS))
    if len(value) != 1:
        raise OptionError(
            "auth", "give either bearer or basic, not both" if value else "empty; give bearer or basic"
        )
    if "bearer" in value:
        template = _template(value["bearer"], "auth.bearer")
        token = _expanded(template, environ, "auth.bearer")
        return Auth(bearer=template, header=f"Bearer {token}")
    basic = value["basic"]
    if not isinstance(basic, list | tuple) or len(basic) != 2:
        raise OptionError("auth.basic", f'expected ["user", "password"], got {describe(basic)}')
    user_t, password_t = (_template(item, f"auth.basic[{i}]") for i, item in enumerate(basic))
    user = _expanded(user_t, environ, "auth.basic[0]")
    if ":" in user:
        raise OptionError("auth.basic[0]", "a user name for basic auth must not contain ':'")
    password = _expanded(password_t, environ, "auth.basic[1]", spaces=True)
    credentials = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return Auth(basic=(user_t, password_t), header=f"Basic {credentials}")


def _bool(value: object, field: str) -> bool:
    if not isinstance(value, bool):
        raise OptionError(field, f"expected true or false, got {describe(value)}")
    return value


def _path(value: object, field: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or not value.isprintable():
        raise OptionError(field, f"expected the path of a PEM file, got {describe(value)}")
    return value


def _read(path: str, field: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise OptionError(field, f"cannot read {path!r}: {exc.strerror or exc}") from None


def _check_loadable(tls: Tls) -> None:
    """Refuse, before any traffic, files the agents' ssl module would refuse."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if tls.ca_file is not None:
        try:
            ctx.load_verify_locations(cadata=_pem(tls.ca_data))
        except (ssl.SSLError, ValueError) as exc:
            raise OptionError(
                "tls.ca_file", f"{tls.ca_file!r} holds no PEM certificate the ssl module accepts ({exc})"
            ) from None
    if tls.cert is not None:
        try:
            load_client_cert(ctx, tls.cert_data, tls.key_data)
        except ssl.SSLError as exc:
            raise OptionError(
                "tls.key",
                f"{tls.cert!r} and {tls.key!r} are not a PEM certificate and its unencrypted key "
                f"({exc.reason or exc})",
            ) from None


def _pem(data: bytes) -> str:
    return data.decode("ascii", errors="replace")


def _address(value: object, where: str, what: str) -> str:
    if not isinstance(value, str):
        raise OptionError(where, f"expected host:port as the {what}, got {describe(value)}")
    return value


def split_address(text: str, where: str = "resolve") -> tuple[str, int]:
    """``("host", port)`` of ``host:port`` (``[::1]:8443`` for IPv6). Raises OptionError."""
    try:
        parts = urlsplit("//" + text)
        port = parts.port
    except ValueError:
        port = None
        parts = urlsplit("")
    host = parts.hostname
    if port is None or not host or parts.netloc != text or "@" in text or port == 0:
        raise OptionError(where, f"expected host:port like '127.0.0.1:8443' or '[::1]:8443', got {text!r}")
    return host, port


def _template(value: object, field: str) -> str:
    if not isinstance(value, str) or not value:
        raise OptionError(field, f'expected text such as "{{{{ env.TOKEN }}}}", got {describe(value)}')
    return value


def _expanded(template: str, environ: Mapping[str, str], field: str, *, spaces: bool = False) -> str:
    try:
        value = expand_env(template, environ)
    except EnvRefError as exc:
        raise OptionError(field, f"environment variable {exc.name} is not set") from None
    if "{{" in value and not env_names(template):
        raise OptionError(field, "only {{ env.NAME }} references are expanded here")
    allowed = _CREDENTIAL.fullmatch(value.replace(" ", "x") if spaces else value)
    if not allowed:
        source = f" (from {', '.join(env_names(template))})" if env_names(template) else ""
        raise OptionError(
            field, f"the value{source} is empty or holds spaces, control or non-ASCII characters"
        )
    return value


def reach_lines(
    target: str, tls: Tls | None, resolve: Sequence[tuple[str, str]], auth: Auth | None
) -> list[str]:
    """How ``target`` is reached, one line per setting that is not the default (for ``loadgen plan``); an
    ``auth`` value is named by its references, never shown."""
    parts = urlsplit(target)
    host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
    lines = []
    to = connect_address(resolve, host, port)
    if to is not None:
        lines.append(f"connects to {to[0]}:{to[1]} (resolve), Host and SNI {host}")
    if tls is not None and parts.scheme == "https":
        said = [] if tls.verify else ["certificates NOT verified"]
        said += [f"CAs from {tls.ca_file}"] if tls.ca_file else []
        said += [f"client certificate {tls.cert}"] if tls.cert else []
        said += [f"server name {tls.server_name}"] if tls.server_name else []
        said += [f"TLS {tls.min_version} or later"] if tls.min_version else []
        said += [] if tls.session_resumption else ["no session resumption"]
        lines.append("tls: " + "; ".join(said))
    if auth is not None:
        text = auth.bearer if auth.bearer is not None else " ".join(auth.basic or ())
        names = env_names(text)
        source = f"from the environment ({', '.join(names)})" if names else "written in the profile"
        lines.append(f"auth: {'bearer' if auth.bearer is not None else 'basic'}, {source}")
    return lines


# --- what the agents do with them


def connect_address(resolve: Sequence[tuple[str, str]], host: str, port: int) -> tuple[str, int] | None:
    """Where a connection to ``host:port`` goes instead, per ``resolve`` (curl's ``--resolve``); None: there.
    Host names compare without case."""
    for key, to in resolve:
        k_host, k_port = split_address(key)
        if k_port == port and k_host.lower() == host.lower():
            return split_address(to)
    return None


@contextlib.contextmanager
def _private_file(data: bytes) -> Iterator[str]:
    """A file only this user can read, holding ``data``, removed on exit."""
    fd, name = tempfile.mkstemp(prefix="loadgen-tls-", suffix=".pem")  # mode 0600
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        yield name
    finally:
        os.unlink(name)


def _no_password() -> bytes:
    raise ssl.SSLError("the key is encrypted; give an unencrypted key")


def load_client_cert(ctx: ssl.SSLContext, cert: bytes, key: bytes) -> None:
    """Load a client certificate and key from memory (the ssl module reads them only from files: each goes
    to a private temporary file, deleted once loaded). Raises ssl.SSLError."""
    with _private_file(cert) as cert_file, _private_file(key) as key_file:
        ctx.load_cert_chain(cert_file, key_file, password=_no_password)
