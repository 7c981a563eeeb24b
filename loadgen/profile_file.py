"""Reading a profile from TOML and validating every field into a :class:`~loadgen.profile.Profile`.

Every problem raises :class:`~loadgen.errors.ProfileError` with the file, the field as a dotted path
(``load.stages[2].duration``, ``requests[1].weight``; indexes count from 0) and a one-line reason.
The format::

    name = "checkout"                    # default: the file name without extension
    target = "http://127.0.0.1:8080"     # http(s) base URL; a target override replaces it
    thresholds = ["p95 < 500ms"]         # checked against loadgen.thresholds' grammar
    abort_on_fail = false                # stop early once a threshold is already lost ...
    abort_grace = "30s"                  # ... but not in the first 30 s
    budget = 50.0                        # stop when the cost of completed requests exceeds this

    [load]
    arrival = "poisson"                  # or "constant"
    start_rate = 0                       # requests/s at t=0 (not with a shape, which starts from 0)
    timeout = "10s"                      # per request, > 0
    max_in_flight = 10000                # integer >= 1
    max_connections = 200                # integer 1..max_in_flight (default: as many as in flight)
    http_version = "1.1"                 # or "2" (h2 by ALPN; h2c on http://) or "auto" (the server picks)
    max_streams_per_connection = 100     # HTTP/2, integer >= 1 (default: what the server allows)
    stages = [{ duration = "30s", rate = 200 }]   # or a [load.shape] table, see loadgen.shapes

    [[requests]]
    name = "home"                        # default "METHOD path"; unique
    method = "GET"                       # uppercase token
    path = "/"                           # required, starts with "/"
    weight = 1                           # > 0
    headers = { "content-type" = "application/json" }   # Latin-1 values; no Transfer-Encoding
    body = "..."                         # sent as UTF-8
    cost = 0.002                         # price of one request, >= 0 (default 0)

``[tls]``, ``resolve`` and ``auth`` (how the target is reached) are :mod:`loadgen.endpoint`'s.

A target ending in ``/`` is stored without it, so that request paths can be appended.

Whatever an agent's engines would refuse when they build the requests (a header value outside Latin-1, a
control character, a host name that is not ASCII, a ``Content-Length`` that does not match the body) is
refused here, before the run, so that a profile that loads is a profile every agent can send.

A profile built in Python (:class:`~loadgen.profile.Profile`, :mod:`loadgen.loads`) is checked here too, from
the same document, so that both give the same fields and reasons.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from loadgen.curve import RateCurve
from loadgen.durations import parse_duration
from loadgen.endpoint import DEFAULT_TLS, ENDPOINT_KEYS, OptionError, parse_auth, parse_resolve, parse_tls
from loadgen.errors import ProfileError
from loadgen.flows import DataSource, Flow
from loadgen.profile import ARRIVAL_KINDS, HTTP_VERSIONS, Load, Profile, Request, Stage
from loadgen.shapes import SHAPE_KINDS, ShapeError, describe, expand_shape, parse_rate, suggestion
from loadgen.thresholds import parse_threshold, scope_problem

TOP_KEYS = (
    "name",
    "target",
    "thresholds",
    "abort_on_fail",
    "abort_grace",
    "budget",
    "load",
    "requests",
    "flows",
    "data",
)
LOAD_KEYS = (
    "arrival",
    "start_rate",
    "timeout",
    "max_in_flight",
    "max_connections",
    "http_version",
    "max_streams_per_connection",
    "stages",
    "shape",
)
STAGE_KEYS = ("duration", "rate")
REQUEST_KEYS = ("name", "method", "path", "weight", "headers", "body", "cost")

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# A header value as RFC 9110 allows it: visible ASCII, Latin-1 beyond it (obs-text), spaces and tabs inside.
_FIELD_VALUE = re.compile(r"(?:[\x21-\x7e\x80-\xff](?:[ \t]*[\x21-\x7e\x80-\xff])*)?")
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_STAGE_EXAMPLE = '{ duration = "30s", rate = 100 }'
_HEADERS_EXAMPLE = '{ "content-type" = "application/json" }'


class _Invalid(Exception):
    """Raised by the field readers; :func:`parse_profile` adds the file name."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(field, reason)
        self.field = field
        self.reason = reason


def load_profile(path: str | Path, target: str | None = None) -> Profile:
    """Read and validate the profile at ``path``; ``target`` replaces the file's target.

    Raises ProfileError.
    """
    file = str(path)
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError as exc:
        raise ProfileError(file, "", "no such file") from exc
    except IsADirectoryError as exc:
        raise ProfileError(file, "", "is a directory, not a profile file") from exc
    except OSError as exc:
        raise ProfileError(file, "", f"cannot read: {exc.strerror or exc}") from exc
    try:
        text = data.decode("utf-8-sig")  # a byte-order mark, as some editors write, is fine
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ProfileError(file, "", "not UTF-8 text", line=line) from exc
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _syntax_error(file, text, exc) from exc
    return parse_profile(doc, file, target)


def _syntax_error(file: str, text: str, exc: tomllib.TOMLDecodeError) -> ProfileError:
    message = str(exc)
    line: int | None = None
    if m := re.search(r" \(at line (\d+), column (\d+)\)$", message):
        line = int(m.group(1))
        message = f"{message[: m.start()]} at column {m.group(2)}"
    elif message.endswith(" (at end of document)"):
        line = max(len(text.splitlines()), 1)
        message = message.removesuffix(" (at end of document)") + " at end of file"
    return ProfileError(file, "", f"invalid TOML: {message[:1].lower()}{message[1:]}", line=line)


def parse_profile(
    doc: Mapping[str, object],
    file: str,
    target: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Profile:
    """Validate a parsed TOML document. ``file`` names it in errors and gives the default name; ``environ``
    (default: this process's) fills ``{{ env.NAME }}`` in ``auth``.

    :class:`~loadgen.profile.Profile` validates a profile built in code here too, from its :meth:`to_doc`
    (where a body may also be bytes, and headers ``(name, value)`` pairs).
    """
    try:
        profile = _profile(doc, file, target)
        return _endpoint(profile, doc, os.environ if environ is None else environ)
    except (_Invalid, OptionError) as exc:
        raise ProfileError(file, exc.field, exc.reason) from None


def _endpoint(profile: Profile, doc: Mapping[str, object], environ: Mapping[str, str]) -> Profile:
    """``profile`` with the document's ``[tls]``, ``resolve`` and ``auth`` (see :mod:`loadgen.endpoint`)."""
    return profile._with(
        tls=None if "tls" not in doc or (tls := parse_tls(doc["tls"])) == DEFAULT_TLS else tls,
        resolve=parse_resolve(doc["resolve"]) if "resolve" in doc else (),
        auth=parse_auth(doc["auth"], environ) if "auth" in doc else None,
    )


def parse_load(table: Mapping[str, object], file: str) -> Load:
    """Validate a ``[load]`` table alone (the shapes of :mod:`loadgen.loads`); errors name ``file``."""
    try:
        return _load(_table(table, "load"))
    except _Invalid as exc:
        raise ProfileError(file, exc.field, exc.reason) from None


def check_target(value: object, file: str) -> str:
    """``value`` checked as a target override, without a trailing ``/``. Raises ProfileError."""
    try:
        return _target(value, "target")
    except _Invalid as exc:
        raise ProfileError(file, "target", f"{exc.reason} (in the target override)") from None


def _profile(doc: Mapping[str, object], file: str, override: str | None) -> Profile:
    _check_keys(doc, (*TOP_KEYS, *ENDPOINT_KEYS), "")
    name = Path(file).stem
    if "name" in doc:
        name = _one_line(doc["name"], "name")
    target = _target(doc["target"], "target") if "target" in doc else None
    if override is not None:
        try:
            target = _target(override, "target")
        except _Invalid as exc:
            raise _Invalid("target", f"{exc.reason} (in the target override)") from None
    if target is None:
        raise _Invalid("target", 'missing; set target = "http://host:port" or give a target override')
    if "load" not in doc:
        raise _Invalid("load", "missing; add a [load] table with stages or a shape")
    load = _load(_table(doc["load"], "load"))
    requests = _requests(doc.get("requests")) if "requests" in doc or "flows" not in doc else ()
    flows, data, env = _journeys(doc, file, requests)
    requests += tuple(r for f in flows for r in f[1])
    names = tuple(r.name for r in requests) + tuple(n for f in flows for n in (*f[0].step_results, f[0].name))
    return Profile._valid(
        name=name,
        target=target,
        load=load,
        requests=requests,
        flows=tuple(f[0] for f in flows),
        data=data,
        env=env,
        thresholds=_thresholds(doc.get("thresholds", []), names),
        source=file,
        abort_on_fail=_bool(doc.get("abort_on_fail", False), "abort_on_fail"),
        abort_grace=_duration(doc.get("abort_grace", "0s"), "abort_grace"),
        budget=None if "budget" not in doc else _non_negative(doc["budget"], "budget"),
    )


def _journeys(
    doc: Mapping[str, object], file: str, requests: tuple[Request, ...]
) -> tuple[list[tuple[Flow, tuple[Request, ...]]], tuple[DataSource, ...], tuple[tuple[str, str], ...]]:
    """The ``[[flows]]`` (each with its steps' requests) and ``[[data]]`` of ``doc`` (see
    :mod:`loadgen.flow_file`), and the environment variables their templates read."""
    if "flows" not in doc:
        if "data" in doc:
            raise _Invalid("data", "test data is for flows; add [[flows]] whose steps use its columns")
        return [], (), ()
    from loadgen import flow_file  # it imports this module's field readers

    data = flow_file.parse_data(doc["data"], Path(file).parent) if "data" in doc else ()
    flows, steps, env = flow_file.parse_flows(
        doc["flows"], {r.name for r in requests}, data, flow_file.environment()
    )
    by_flow = [(f, tuple(r for r in steps if r.name.startswith(f.name + "."))) for f in flows]
    return by_flow, data, tuple(sorted(env.items()))


def _bool(value: object, field: str) -> bool:
    if not isinstance(value, bool):
        raise _Invalid(field, f"expected true or false, got {describe(value)}")
    return value


def _non_negative(value: object, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < float("inf"):
        raise _Invalid(field, f"expected a number >= 0, got {describe(value)}")
    return float(value)


def _path(prefix: str, key: str) -> str:
    key = key if _BARE_KEY.fullmatch(key) else f'"{key}"'
    return f"{prefix}.{key}" if prefix else key


def _check_keys(table: Mapping[str, object], known: tuple[str, ...], prefix: str) -> None:
    for key in table:
        if key not in known:
            raise _Invalid(_path(prefix, key), "unknown key" + suggestion(key, known))


def _table(value: object, field: str, example: str = "") -> Mapping[str, object]:
    if not isinstance(value, dict):
        like = f" like {example}" if example else ""
        raise _Invalid(field, f"expected a table{like}, got {describe(value)}")
    return value


def _string(value: object, field: str) -> str:
    if not isinstance(value, str):
        raise _Invalid(field, f"expected a string, got {describe(value)}")
    return value


def _one_line(value: object, field: str) -> str:
    text = _string(value, field)
    if not text.strip():
        raise _Invalid(field, "must not be empty")
    if not text.isprintable():
        raise _Invalid(field, "must be one line of printable text")
    return text


def _rate(value: object, field: str) -> float:
    try:
        return parse_rate(value)
    except ValueError as exc:
        raise _Invalid(field, str(exc)) from None


def _duration(value: object, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise _Invalid(field, f"expected a duration such as '30s' or '1m30s', got {describe(value)}")
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise _Invalid(field, str(exc)) from None


def _target(value: object, field: str) -> str:
    text = _string(value, field)
    if not text or any(c.isspace() for c in text):
        raise _Invalid(field, f"must be a URL like 'http://host:8080' without spaces, got {text!r}")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise _Invalid(field, f"invalid URL {text!r}: {exc}") from None
    if parts.scheme not in ("http", "https") or not text.lower().startswith(parts.scheme + "://"):
        raise _Invalid(field, f"must start with http:// or https://, got {text!r}")
    if not parts.hostname:
        raise _Invalid(field, f"has no host: {text!r}")
    if not parts.hostname.isascii():
        raise _Invalid(field, f"host {parts.hostname!r} is not ASCII; {_ascii_host(parts.hostname)}")
    if port == 0 or (port is None and parts.netloc.endswith(":")):
        raise _Invalid(field, f"invalid port in {text!r}; expected 1 to 65535")
    if parts.username is not None:
        raise _Invalid(field, "must not contain credentials; send them in a request header")
    if parts.query or parts.fragment or text.endswith(("?", "#")):
        raise _Invalid(field, "must not have a query or fragment; put those in the request paths")
    return text.rstrip("/")


def _ascii_host(host: str) -> str:
    try:
        return f"write it as {host.encode('idna').decode('ascii')!r} (its IDNA form)"
    except UnicodeError:
        return "write an internationalised name in its IDNA form (xn--...)"


def _thresholds(value: object, names: tuple[str, ...]) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise _Invalid(
            "thresholds", f'expected an array of strings like ["p95 < 500ms"], got {describe(value)}'
        )
    exprs = tuple(_string(item, f"thresholds[{i}]") for i, item in enumerate(value))
    for i, expr in enumerate(exprs):
        try:
            th = parse_threshold(expr)
        except ValueError as exc:
            raise _Invalid(f"thresholds[{i}]", str(exc)) from None
        if (problem := scope_problem(th, names)) is not None:
            raise _Invalid(f"thresholds[{i}]", f"threshold {expr!r}: {problem}")
    return exprs


def _load(table: Mapping[str, object]) -> Load:
    _check_keys(table, LOAD_KEYS, "load")
    arrival = _string(table.get("arrival", "poisson"), "load.arrival")
    if arrival not in ARRIVAL_KINDS:
        raise _Invalid(
            "load.arrival", f"unknown arrival kind {arrival!r}" + suggestion(arrival, ARRIVAL_KINDS)
        )
    start_rate = _rate(table.get("start_rate", 0), "load.start_rate")
    timeout = _duration(table.get("timeout", "10s"), "load.timeout")
    if timeout <= 0:
        raise _Invalid("load.timeout", "must be longer than 0s")
    max_in_flight = table.get("max_in_flight", 10_000)
    if isinstance(max_in_flight, bool) or not isinstance(max_in_flight, int) or max_in_flight < 1:
        raise _Invalid("load.max_in_flight", f"expected a whole number >= 1, got {describe(max_in_flight)}")
    max_connections = table.get("max_connections")
    if max_connections is not None:
        if isinstance(max_connections, bool) or not isinstance(max_connections, int) or max_connections < 1:
            raise _Invalid(
                "load.max_connections", f"expected a whole number >= 1, got {describe(max_connections)}"
            )
        if max_connections > max_in_flight:
            raise _Invalid(
                "load.max_connections",
                f"{max_connections} is more than load.max_in_flight ({max_in_flight}): a connection carries "
                "one request at a time, so the extra ones would never be used",
            )
    http_version = table.get("http_version", "1.1")
    if http_version not in HTTP_VERSIONS:
        shown = repr(http_version) if isinstance(http_version, str) else describe(http_version)
        raise _Invalid(
            "load.http_version", f"expected one of {', '.join(map(repr, HTTP_VERSIONS))}, got {shown}"
        )
    max_streams = table.get("max_streams_per_connection")
    if max_streams is not None:
        if isinstance(max_streams, bool) or not isinstance(max_streams, int) or max_streams < 1:
            raise _Invalid(
                "load.max_streams_per_connection",
                f"expected a whole number >= 1, got {describe(max_streams)}",
            )
        if http_version == "1.1":
            raise _Invalid(
                "load.max_streams_per_connection",
                'applies to HTTP/2 only: set http_version = "2" or "auto"',
            )
    if "stages" in table and "shape" in table:
        raise _Invalid("load.shape", "give either stages or a shape, not both")
    if "shape" in table:
        if "start_rate" in table:
            raise _Invalid("load.start_rate", "cannot be combined with a shape, which starts from 0")
        field, stages = "load.shape", _shape(table["shape"])
    elif "stages" in table:
        field, stages = "load.stages", _stages(table["stages"])
    else:
        raise _Invalid(
            "load.stages", f"missing; give stages = [{_STAGE_EXAMPLE}, ...] or a [load.shape] table"
        )
    curve = RateCurve(start_rate, stages)
    if curve.duration <= 0:
        raise _Invalid(field, "total duration is 0s; at least one stage must last longer than 0s")
    if curve.total <= 0:
        raise _Invalid(field, "the rate is 0 throughout; no request would be sent")
    return Load(
        arrival=arrival,
        start_rate=start_rate,
        timeout=timeout,
        max_in_flight=max_in_flight,
        stages=stages,
        max_connections=max_connections,
        http_version=str(http_version),
        max_streams_per_connection=max_streams,
    )


def _stages(value: object) -> tuple[Stage, ...]:
    if not isinstance(value, list):
        raise _Invalid(
            "load.stages", f"expected an array of tables like {_STAGE_EXAMPLE}, got {describe(value)}"
        )
    if not value:
        raise _Invalid("load.stages", f"empty; give at least one stage like {_STAGE_EXAMPLE}")
    stages = []
    for i, item in enumerate(value):
        field = f"load.stages[{i}]"
        table = _table(item, field, _STAGE_EXAMPLE)
        _check_keys(table, STAGE_KEYS, field)
        for key in STAGE_KEYS:
            if key not in table:
                raise _Invalid(f"{field}.{key}", f"missing; each stage is a table like {_STAGE_EXAMPLE}")
        stages.append(
            Stage(_duration(table["duration"], f"{field}.duration"), _rate(table["rate"], f"{field}.rate"))
        )
    return tuple(stages)


def _shape(value: object) -> tuple[Stage, ...]:
    table = _table(value, "load.shape")
    if "kind" not in table:
        raise _Invalid("load.shape.kind", f"missing; one of {', '.join(SHAPE_KINDS)}")
    kind = _string(table["kind"], "load.shape.kind")
    try:
        return expand_shape(kind, {k: v for k, v in table.items() if k != "kind"})
    except ShapeError as exc:
        raise _Invalid(_path("load.shape", exc.param), exc.reason) from None


def _requests(value: object) -> tuple[Request, ...]:
    if value is None:
        raise _Invalid("requests", "missing; add at least one [[requests]] table")
    if not isinstance(value, list):
        raise _Invalid("requests", f"expected an array of tables ([[requests]]), got {describe(value)}")
    if not value:
        raise _Invalid("requests", "empty; add at least one [[requests]] table")
    specs: list[Request] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(value):
        spec = _request(_table(item, f"requests[{i}]"), f"requests[{i}]")
        if spec.name in seen:
            other = f"requests[{seen[spec.name]}]"
            reason = f"duplicate name {spec.name!r} (also {other}); give each request its own name"
            raise _Invalid(f"requests[{i}].name", reason)
        seen[spec.name] = i
        specs.append(spec)
    return tuple(specs)


def _request(table: Mapping[str, object], field: str) -> Request:
    _check_keys(table, REQUEST_KEYS, field)
    method = _string(table.get("method", "GET"), f"{field}.method")
    if not _TOKEN.fullmatch(method) or method != method.upper():
        raise _Invalid(
            f"{field}.method", f"expected an uppercase HTTP method like 'GET' or 'POST', got {method!r}"
        )
    if "path" not in table:
        raise _Invalid(f"{field}.path", 'missing; e.g. path = "/"')
    path = _string(table["path"], f"{field}.path")
    if not path.startswith("/"):
        raise _Invalid(f"{field}.path", f"must start with '/', got {path!r}")
    if any(c.isspace() or not c.isprintable() for c in path) or "#" in path:
        raise _Invalid(f"{field}.path", f"must not contain spaces, control characters or '#'; got {path!r}")
    weight = table.get("weight", 1)
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not 0 < weight < float("inf"):
        raise _Invalid(f"{field}.weight", f"expected a number > 0, got {describe(weight)}")
    name = _one_line(table["name"], f"{field}.name") if "name" in table else f"{method} {path}"
    headers = _headers(table.get("headers", {}), f"{field}.headers")
    body = _body(table.get("body", ""), f"{field}.body")
    _check_framing(headers, body, f"{field}.headers")
    return Request(
        name=name,
        method=method,
        path=path,
        headers=headers,
        body=body,
        weight=float(weight),
        cost=_non_negative(table.get("cost", 0), f"{field}.cost"),
    )


def _headers(value: object, field: str) -> tuple[tuple[str, str], ...]:
    # A tuple of pairs comes from code (TOML gives lists), where a name can be given twice.
    pairs = value if isinstance(value, tuple) else _table(value, field, _HEADERS_EXAMPLE).items()
    headers = []
    seen: dict[str, str] = {}
    for key, item in pairs:
        if not isinstance(key, str):
            raise _Invalid(field, f"header names must be strings, got {describe(key)}")
        where = _path(field, key)
        if not _TOKEN.fullmatch(key):
            raise _Invalid(where, f"invalid header name {key!r}; use letters, digits and !#$%&'*+-.^_`|~")
        if key.lower() in seen:
            raise _Invalid(where, f"header given twice (also as {seen[key.lower()]!r}); names ignore case")
        seen[key.lower()] = key
        headers.append((key, _header_value(_string(item, where), where)))
    return tuple(headers)


def _header_value(text: str, where: str) -> str:
    """``text`` if HTTP/1.1 can carry it as a header value (both engines send header bytes as Latin-1)."""
    if any(c in text for c in "\r\n\0"):
        raise _Invalid(where, "header values must not contain line breaks or NUL")
    if bad := next((c for c in text if ord(c) > 0xFF), None):
        raise _Invalid(
            where,
            f"header values are sent as Latin-1 and {bad!r} (U+{ord(bad):04X}) is not Latin-1; "
            "percent-encode or base64 it",
        )
    if _FIELD_VALUE.fullmatch(text) is None:
        if text != text.strip(" \t"):
            raise _Invalid(where, f"header values must not begin or end with spaces or tabs, got {text!r}")
        raise _Invalid(where, f"header values must not contain control characters, got {text!r}")
    return text


def _check_framing(headers: tuple[tuple[str, str], ...], body: bytes, field: str) -> None:
    """The engines send every body whole, framed by a ``Content-Length`` they compute: a header that says
    otherwise would leave the server waiting for bytes that never come, or reading ours as a next request."""
    for key, text in headers:
        where = _path(field, key)
        if key.lower() == "transfer-encoding":
            raise _Invalid(
                where, "not supported: loadgen sends each body whole, with a Content-Length; remove it"
            )
        if key.lower() == "content-length" and text != str(len(body)):
            raise _Invalid(
                where,
                f"{text!r} does not match the body ({len(body)} bytes as UTF-8); "
                "leave it out and loadgen sets it",
            )


def _body(value: object, field: str) -> bytes:
    if isinstance(value, bytes):  # from code: sent as it is
        return value
    try:
        return _string(value, field).encode("utf-8")
    except UnicodeEncodeError:
        raise _Invalid(field, "is not valid Unicode text") from None
