"""Reading ``[[flows]]`` and ``[[data]]`` from a profile document, for :mod:`loadgen.profile_file`.

The format (see docs/profiles.md, "User journeys")::

    [[data]]
    file = "users.csv"          # header row = variable names; relative to the profile file
    mode = "sequential"         # or "random"

    [[flows]]
    name = "purchase"           # unique among flows and requests; no '.'
    weight = 3                  # > 0, in the same mix as [[requests]]
    cookies = true              # each instance keeps its own cookie jar (default true)

    [[flows.steps]]
    name = "login"              # unique in the flow; the step's results are under "purchase.login"
    method = "POST"
    path = "/login"             # path, header values and body may hold {{ templates }}
    body = '{"user": "{{ user }}", "password": "{{ password }}"}'
    capture = { token = "$.token", item = "$.items[0].id", sid = "cookie:session" }
    check = { status = [200], contains = "token", json = { "$.user" = "alice" } }

    [[flows.steps]]
    pause = "1s..3s"            # "2s" fixed, "1s..3s" uniform, "exp(2s)" exponential with that mean

Every variable a template reads must be defined before the step: a ``[[data]]`` column, a capture of an
earlier step of the same flow, or ``env.NAME`` (read from the environment here, when the profile is loaded;
a variable that is not set refuses the profile).
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import re
from collections.abc import Mapping
from pathlib import Path

from loadgen import captures, code_refs
from loadgen.flows import (
    DATA_MODES,
    MAX_DATA_BYTES,
    ON_EXHAUSTED,
    Capture,
    Check,
    DataSource,
    Flow,
    Pause,
    Step,
)
from loadgen.profile import Request
from loadgen.profile_file import (
    _check_keys,
    _duration,
    _Invalid,
    _one_line,
    _request,
    _string,
    _table,
)
from loadgen.shapes import describe
from loadgen.templates import Template, TemplateError, compile_template

FLOW_KEYS = ("name", "weight", "cookies", "steps", "function")
STEP_KEYS = ("name", "method", "path", "headers", "body", "cost", "capture", "check", "pause")
CHECK_KEYS = ("status", "contains", "json")
DATA_KEYS = ("file", "mode", "on_exhausted")
_VAR = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PAUSE_RANGE = re.compile(r"\s*(\S+?)\s*\.\.\s*(\S+)\s*")
_PLACEHOLDER = re.compile(r"\{\{.*?\}\}", re.DOTALL)
_PAUSE_EXP = re.compile(r"\s*exp\(\s*(\S+?)\s*\)\s*")


def parse_data(value: object, base: Path) -> tuple[DataSource, ...]:
    """The ``[[data]]`` array; files are read relative to ``base``."""
    if not isinstance(value, list):
        raise _Invalid("data", f"expected an array of tables ([[data]]), got {describe(value)}")
    sources = []
    total = 0
    seen: dict[str, str] = {}
    for i, item in enumerate(value):
        field = f"data[{i}]"
        if isinstance(item, DataSource):  # from code, read already (a copy of a profile)
            sources.append(item)
            continue
        table = _table(item, field)
        _check_keys(table, DATA_KEYS, field)
        if "file" not in table:
            raise _Invalid(f"{field}.file", 'missing; e.g. file = "users.csv"')
        name = _string(table["file"], f"{field}.file")
        mode = _choice(table.get("mode", "sequential"), DATA_MODES, f"{field}.mode")
        on_exhausted = _choice(table.get("on_exhausted", "wrap"), ON_EXHAUSTED, f"{field}.on_exhausted")
        if on_exhausted != "wrap" and mode != "unique":
            raise _Invalid(
                f"{field}.on_exhausted",
                f'{on_exhausted!r} is for mode = "unique"; {mode} rows are reused from the first',
            )
        columns, rows = _read_csv(base / name, f"{field}.file")
        for column in columns:
            if column in seen:
                raise _Invalid(f"{field}.file", f"column {column!r} is also a column of {seen[column]}")
            seen[column] = field
        total += sum(len(cell.encode("utf-8")) for row in rows for cell in row)
        if total > MAX_DATA_BYTES:
            raise _Invalid(
                f"{field}.file",
                f"test data over {MAX_DATA_BYTES // (1024 * 1024)} MiB in all; it travels to every agent",
            )
        sources.append(DataSource(name, columns, rows, mode, on_exhausted))
    return tuple(sources)


def _choice(value: object, known: tuple[str, ...], field: str) -> str:
    text = _string(value, field)
    if text not in known:
        raise _Invalid(field, f"expected one of {', '.join(repr(k) for k in known)}, got {text!r}")
    return text


def _read_csv(path: Path, field: str) -> tuple[tuple[str, ...], tuple[tuple[str, ...], ...]]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise _Invalid(field, f"no such file: {str(path)!r}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise _Invalid(field, f"cannot read {str(path)!r}: {exc}") from None
    reader = csv.reader(io.StringIO(text))
    try:
        table = [row for row in reader if row]
    except csv.Error as exc:
        raise _Invalid(field, f"{str(path)!r} is not valid CSV: {exc}") from None
    if not table:
        raise _Invalid(field, f"{str(path)!r} is empty; the first row names the columns")
    header = tuple(c.strip() for c in table[0])
    for column in header:
        if not _VAR.fullmatch(column):
            raise _Invalid(
                field,
                f"{str(path)!r}: the first row must name the columns (letters, digits, _), got {column!r}",
            )
    if len(set(header)) != len(header):
        raise _Invalid(field, f"{str(path)!r}: a column name is given twice in the header row")
    rows = table[1:]
    if not rows:
        raise _Invalid(field, f"{str(path)!r} has a header row but no data rows")
    for n, row in enumerate(rows, start=2):
        if len(row) != len(header):
            raise _Invalid(field, f"{str(path)!r} row {n} has {len(row)} cells; the header has {len(header)}")
    return header, tuple(tuple(r) for r in rows)


def parse_flows(
    value: object, request_names: set[str], data: tuple[DataSource, ...], environ: Mapping[str, str]
) -> tuple[tuple[Flow, ...], tuple[Request, ...], dict[str, str]]:
    """The flows, their steps' requests (named ``<flow>.<step>``) and the environment variables the
    templates read (name -> value)."""
    if not isinstance(value, list):
        raise _Invalid("flows", f"expected an array of tables ([[flows]]), got {describe(value)}")
    columns = {c for d in data for c in d.columns}
    flows: list[Flow] = []
    requests: list[Request] = []
    env: dict[str, str] = {}
    names = set(request_names)
    for i, item in enumerate(value):
        field = f"flows[{i}]"
        table = _table(item, field)
        _check_keys(table, FLOW_KEYS, field)
        if "name" not in table:
            raise _Invalid(f"{field}.name", 'missing; e.g. name = "checkout"')
        name = _one_line(table["name"], f"{field}.name")
        if "." in name:
            raise _Invalid(
                f"{field}.name", f"must not contain '.' (step results are named <flow>.<step>), got {name!r}"
            )
        if name in names:
            raise _Invalid(f"{field}.name", f"{name!r} is already the name of a flow or request")
        names.add(name)
        weight = table.get("weight", 1)
        if isinstance(weight, bool) or not isinstance(weight, int | float) or not 0 < weight < float("inf"):
            raise _Invalid(f"{field}.weight", f"expected a number > 0, got {describe(weight)}")
        cookies = table.get("cookies", True)
        if not isinstance(cookies, bool):
            raise _Invalid(f"{field}.cookies", f"expected true or false, got {describe(cookies)}")
        steps_value = table.get("steps")
        if "function" in table:
            flows.append(_python_flow(table, field, name, float(weight), cookies))
            names.update(flows[-1].step_results)
            continue
        if not isinstance(steps_value, list) or not steps_value:
            raise _Invalid(f"{field}.steps", "missing or empty; add [[flows.steps]] tables")
        defined = set(columns)
        steps: list[Step] = []
        for j, step_item in enumerate(steps_value):
            where = f"{field}.steps[{j}]"
            step, request = _step(_table(step_item, where), where, name, j, defined, environ, env)
            if any(s.name == step.name for s in steps):
                raise _Invalid(f"{where}.name", f"duplicate step name {step.name!r} in flow {name!r}")
            steps.append(step)
            if request is not None:
                requests.append(request)
                names.add(request.name)
        if not any(s.request is not None for s in steps):
            raise _Invalid(f"{field}.steps", "a flow needs at least one request step")
        flows.append(Flow(name, float(weight), tuple(steps), cookies))
    return tuple(flows), tuple(requests), env


def _python_flow(table: Mapping[str, object], field: str, name: str, weight: float, cookies: bool) -> Flow:
    """A flow written in Python: ``function`` names it, ``steps`` lists the names its calls may give."""
    function = table["function"]
    if callable(function):  # a profile built in code may give the function itself
        try:
            function = code_refs.ref_of(function)
        except ValueError as exc:
            raise _Invalid(f"{field}.function", str(exc)) from None
    ref = _string(function, f"{field}.function")
    try:
        code_refs.check_ref(ref)
    except ValueError as exc:
        raise _Invalid(f"{field}.function", str(exc)) from None
    steps = table.get("steps")
    example = 'steps = ["login", "buy"]'
    if not isinstance(steps, list) or not steps or not all(isinstance(s, str) for s in steps):
        raise _Invalid(f"{field}.steps", f"a Python flow lists the names of its steps, e.g. {example}")
    for j, step in enumerate(steps):
        if not _VAR.fullmatch(step):
            raise _Invalid(f"{field}.steps[{j}]", f"a step name is letters, digits and _, got {step!r}")
        if step in steps[:j]:
            raise _Invalid(f"{field}.steps[{j}]", f"duplicate step name {step!r}")
    return Flow(name, weight, tuple(Step(s) for s in steps), cookies, ref)


def _step(
    table: Mapping[str, object],
    where: str,
    flow: str,
    index: int,
    defined: set[str],
    environ: Mapping[str, str],
    env: dict[str, str],
) -> tuple[Step, Request | None]:
    _check_keys(table, STEP_KEYS, where)
    name = _one_line(table["name"], f"{where}.name") if "name" in table else f"step{index + 1}"
    if "." in name:
        raise _Invalid(f"{where}.name", f"must not contain '.', got {name!r}")
    if "pause" in table:
        others = [k for k in table if k not in ("pause", "name")]
        if others:
            raise _Invalid(f"{where}.{others[0]}", "a pause step takes only pause (and name)")
        return Step(name, pause=_pause(table["pause"], f"{where}.pause")), None
    if "path" not in table:
        raise _Invalid(
            f"{where}.path", 'missing; a step is a request (path = "/...") or a pause (pause = "1s")'
        )
    fields = {k: v for k, v in table.items() if k not in ("capture", "check")} | {"name": f"{flow}.{name}"}
    path = fields["path"]
    if isinstance(path, str):  # checked with each placeholder standing for one character
        fields["path"] = _PLACEHOLDER.sub("x", path)
    checked = _request(fields, where)
    request = Request(
        path if isinstance(path, str) else checked.path,
        name=checked.name,
        method=checked.method,
        headers=checked.headers,
        body=checked.body,
        cost=checked.cost,
    )
    for field, text in _template_fields(request, where):
        try:
            template = compile_template(text)
        except TemplateError as exc:
            raise _Invalid(field, str(exc)) from None
        _check_defined(template, field, flow, defined, environ, env)
    capture = _captures(table.get("capture", {}), f"{where}.capture")
    check = _check(table.get("check", {}), f"{where}.check")
    defined.update(c.var for c in capture)
    return Step(name, request=request.name, capture=capture, check=check), request


def _template_fields(request: Request, where: str) -> list[tuple[str, str]]:
    fields = [(f"{where}.path", request.path)]
    fields += [(f"{where}.headers.{k}", v) for k, v in request.headers]
    with contextlib.suppress(UnicodeDecodeError):  # bytes from code: sent as they are, never a template
        fields.append((f"{where}.body", request.body.decode("utf-8")))
    return fields


def _check_defined(
    template: Template,
    field: str,
    flow: str,
    defined: set[str],
    environ: Mapping[str, str],
    env: dict[str, str],
) -> None:
    for var in template.variables():
        if var.startswith("env."):
            key = var[4:]
            if key not in environ:
                raise _Invalid(field, f"{{{{ {var} }}}}: the environment variable {key} is not set")
            env[var] = environ[key]
        elif var not in defined:
            raise _Invalid(
                field,
                f"{{{{ {var} }}}} is not defined: no [[data]] column and no capture of an earlier step "
                f"of flow {flow!r} is called {var!r}",
            )


def _captures(value: object, field: str) -> tuple[Capture, ...]:
    table = _table(value, field, '{ token = "$.token" }')
    out = []
    for var, expr in table.items():
        where = f"{field}.{var}"
        if not _VAR.fullmatch(var) or var.startswith("env"):
            raise _Invalid(where, "a variable name is letters, digits and _ (and not env)")
        text = _string(expr, where)
        try:
            source, body = captures.capture_of(text)
            capture = Capture(var, source, body)
            captures.compile_capture(capture)
        except ValueError as exc:
            raise _Invalid(where, str(exc)) from None
        out.append(capture)
    return tuple(out)


def _check(value: object, field: str) -> Check:
    table = _table(value, field, "{ status = [200] }")
    _check_keys(table, CHECK_KEYS, field)
    status_value = table.get("status", [])
    statuses = status_value if isinstance(status_value, list) else [status_value]
    for s in statuses:
        if isinstance(s, bool) or not isinstance(s, int) or not 100 <= s <= 599:
            raise _Invalid(
                f"{field}.status", f"expected status codes 100..599 like [200, 201], got {describe(s)}"
            )
    contains = None if "contains" not in table else _string(table["contains"], f"{field}.contains")
    json_checks = []
    for path, expected in _table(table.get("json", {}), f"{field}.json", '{ "$.ok" = true }').items():
        try:
            captures.parse_json_path(path)
        except ValueError as exc:
            raise _Invalid(f"{field}.json", str(exc)) from None
        json_checks.append((path, expected))
    return Check(tuple(s for s in statuses if isinstance(s, int)), contains, tuple(json_checks))


def _pause(value: object, field: str) -> Pause:
    if isinstance(value, int | float) and not isinstance(value, bool):
        text = f"{value}s"
    else:
        text = _string(value, field)
    if m := _PAUSE_EXP.fullmatch(text):
        mean = _duration(m.group(1), field)
        if mean <= 0:
            raise _Invalid(field, "an exponential pause needs a mean above 0s")
        return Pause("exponential", mean, mean)
    if m := _PAUSE_RANGE.fullmatch(text):
        low, high = _duration(m.group(1), field), _duration(m.group(2), field)
        if low > high:
            raise _Invalid(field, f"the range {text!r} ends before it starts")
        return Pause("uniform", low, high)
    seconds = _duration(text, field)
    return Pause("fixed", seconds, seconds)


def environment() -> Mapping[str, str]:
    """The environment templates' ``env.NAME`` are read from (the coordinator's)."""
    return os.environ
