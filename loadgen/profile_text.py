"""Writing a profile's TOML document (:meth:`loadgen.profile.Profile.to_doc`) as TOML text.

The standard library reads TOML but does not write it; this writes exactly the types a profile holds
(text, booleans, whole numbers, floats, arrays and tables of them) so that
:func:`~loadgen.profile_file.load_profile` reads the text back into an equal profile. Durations are written
as ``"1m30s"`` when that form is exact, else as seconds; a request's defaults (no headers, no body, no cost)
are left out.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from loadgen.durations import format_duration, parse_duration

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_ESCAPES = {"\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r", '"': '\\"', "\\": "\\\\"}
_TOP = ("name", "target", "thresholds", "abort_on_fail", "abort_grace", "budget")
_DURATIONS = ("abort_grace", "timeout", "duration")


def write_toml(doc: Mapping[str, Any]) -> str:
    """The TOML text of a profile document. Raises ValueError for what TOML cannot hold."""
    lines = [f"{key} = {_value(doc[key], key)}" for key in (*_TOP, "resolve", "auth") if key in doc]
    load = doc["load"]
    lines += ["", "[load]"]
    lines += [f"{key} = {_value(value, key)}" for key, value in load.items() if key != "stages"]
    lines.append("stages = [")
    lines += [f"  {_value(stage, 'stage')}," for stage in load["stages"]]
    lines.append("]")
    for i, request in enumerate(doc.get("requests", [])):
        lines += ["", "[[requests]]", *_request_lines(request, f"requests[{i}]")]
    for data in doc.get("data", []):
        lines += ["", "[[data]]", *(f"{_key(k)} = {_value(v, k)}" for k, v in data.items())]
    for i, flow in enumerate(doc.get("flows", [])):
        code = "function" in flow  # a flow written in Python: its steps are names
        lines += [
            "",
            "[[flows]]",
            *(f"{_key(k)} = {_value(v, k)}" for k, v in flow.items() if code or k != "steps"),
        ]
        for j, step in enumerate([] if code else flow["steps"]):
            lines += ["", "[[flows.steps]]", *_request_lines(step, f"flows[{i}].steps[{j}]")]
    if "tls" in doc:
        lines += ["", "[tls]", *(f"{key} = {_value(value, key)}" for key, value in doc["tls"].items())]
    return "\n".join(lines) + "\n"


def _request_lines(request: Mapping[str, Any], field: str) -> list[str]:
    lines = []
    for key, value in request.items():
        if key == "body" and isinstance(value, bytes):
            raise ValueError(
                f"{field}.body: {len(value)} bytes that are not UTF-8 text cannot be written to "
                "a TOML profile (its strings are Unicode text)"
            )
        if (key, value) in (("headers", {}), ("body", ""), ("cost", 0)):
            continue
        lines.append(f"{_key(key)} = {_value(value, key)}")
    return lines


def _value(value: object, key: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _duration(value) if key in _DURATIONS else _float(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(item, key) for item in value) + "]"
    if isinstance(value, Mapping):
        items = ", ".join(f"{_key(k)} = {_value(v, k)}" for k, v in value.items())
        return "{ " + items + " }" if items else "{}"
    raise ValueError(f"{key}: a {type(value).__name__} cannot be written to TOML")


def _duration(seconds: float) -> str:
    """``"1m30s"`` when it reads back as exactly ``seconds``, else the number."""
    if math.isfinite(seconds) and seconds >= 0:
        text = format_duration(seconds)
        if parse_duration(text) == seconds:
            return _string(text)
    return _float(seconds)


def _float(value: float) -> str:
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return repr(value)  # "1.0", "1e-05", "1.5e+20": all TOML floats, read back exactly


def _key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else _string(key)


def _string(text: str) -> str:
    """A TOML basic string: quotes, backslashes and control characters escaped."""
    out = []
    for c in text:
        if c in _ESCAPES:
            out.append(_ESCAPES[c])
        elif c < " " or c == "\x7f":
            out.append(f"\\u{ord(c):04X}")
        elif 0xD800 <= ord(c) <= 0xDFFF:
            raise ValueError(f"{text!r} holds a lone surrogate (U+{ord(c):04X}), which TOML cannot hold")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'
