"""``{{ ... }}`` templates in a flow step's path, headers and body: compiled once, rendered per step.

A template is text with placeholders::

    /buy/{{ item }}                       a flow variable (captured, or a column of a [[data]] source)
    {{ uuid }}                            a new random UUID (version 4) each time
    {{ random_int(1, 1000) }}             a whole number drawn uniformly, both ends included
    {{ random_choice("a", "b") }}         one of the given strings
    {{ counter }}                         1, 2, 3 ... per agent, one step after another
    {{ env.NAME }}                        the coordinator's environment variable, read at the start

Nothing executable travels: a template is parsed into literal text and these few kinds of placeholder, on the
coordinator (which refuses a bad one with the field and reason) and again on each agent. Rendering is a loop
over the parts with the flow instance's variables; a template without placeholders renders to itself.
"""

from __future__ import annotations

import random
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

BUILTINS = ("uuid", "counter", "random_int", "random_choice", "env.NAME")

_PLACEHOLDER = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ENV = re.compile(r"env\.([A-Za-z_][A-Za-z0-9_]*)")
_CALL = re.compile(r"([a-z_]+)\s*\((.*)\)", re.DOTALL)
_INT_ARG = re.compile(r"\s*(-?\d+)\s*")
_STRING_ARG = re.compile(r'\s*"((?:[^"\\]|\\.)*)"\s*')


class TemplateError(ValueError):
    """A template that cannot be compiled; the message is the reason, for a profile error."""


class RenderContext:
    """What rendering draws on besides the flow's variables: the agent's random source and counter."""

    __slots__ = ("counter", "rng")

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.counter = 0


@dataclass(frozen=True)
class Var:
    """A flow variable (or ``env.NAME``, which the profile supplies as a variable of that name)."""

    name: str


@dataclass(frozen=True)
class Call:
    """A built-in: ``uuid``, ``counter``, ``random_int(low, high)``, ``random_choice(...)``."""

    kind: str
    args: tuple[int | str, ...] = ()


Part = str | Var | Call


@dataclass(frozen=True)
class Template:
    """Compiled text; :attr:`static` when it holds no placeholder (rendering is then the text itself)."""

    text: str
    parts: tuple[Part, ...]

    @property
    def static(self) -> bool:
        return all(isinstance(p, str) for p in self.parts)

    def variables(self) -> tuple[str, ...]:
        """The variables it reads, in order of first use (``env.NAME`` included)."""
        return tuple(dict.fromkeys(p.name for p in self.parts if isinstance(p, Var)))

    def render(self, values: Mapping[str, str], ctx: RenderContext) -> str:
        """The text with every placeholder filled. A variable missing from ``values`` raises KeyError (the
        caller counts it against the step: validation makes sure something defines every variable, but a
        capture may still have found nothing)."""
        out: list[str] = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
            elif isinstance(part, Var):
                out.append(values[part.name])
            else:
                out.append(_call(part, ctx))
        return "".join(out)


def _call(call: Call, ctx: RenderContext) -> str:
    kind = call.kind
    if kind == "uuid":
        return str(uuid.UUID(int=ctx.rng.getrandbits(128), version=4))
    if kind == "counter":
        ctx.counter += 1
        return str(ctx.counter)
    if kind == "random_int":
        low, high = call.args
        assert isinstance(low, int) and isinstance(high, int)
        return str(ctx.rng.randint(low, high))
    return str(ctx.rng.choice(call.args))  # random_choice


def compile_template(text: str) -> Template:
    """Parse ``text``. Raises :class:`TemplateError` naming the placeholder and what is wrong with it."""
    parts: list[Part] = []
    pos = 0
    for m in _PLACEHOLDER.finditer(text):
        if m.start() > pos:
            parts.append(text[pos : m.start()])
        parts.append(_placeholder(m.group(1).strip(), m.group(0)))
        pos = m.end()
    rest = text[pos:]
    if "{{" in rest:
        raise TemplateError(f"unclosed '{{{{' in {text!r}; write placeholders as {{{{ name }}}}")
    if rest:
        parts.append(rest)
    merged: list[Part] = []
    for part in parts:  # adjacent literal text as one piece
        if isinstance(part, str) and merged and isinstance(merged[-1], str):
            merged[-1] += part
        else:
            merged.append(part)
    return Template(text, tuple(merged))


def _placeholder(expr: str, whole: str) -> Part:
    if not expr:
        raise TemplateError(f"empty placeholder {whole!r}")
    if m := _ENV.fullmatch(expr):
        return Var(f"env.{m.group(1)}")
    if expr in ("uuid", "counter"):
        return Call(expr)
    if m := _CALL.fullmatch(expr):
        kind, args = m.group(1), m.group(2)
        if kind == "random_int":
            ints = [_INT_ARG.fullmatch(a) for a in args.split(",")]
            if len(ints) != 2 or not all(ints):
                raise TemplateError(f"{whole!r}: random_int takes two whole numbers, e.g. random_int(1, 100)")
            low, high = (int(i.group(1)) for i in ints if i)
            if low > high:
                raise TemplateError(f"{whole!r}: random_int's low end {low} is above its high end {high}")
            return Call("random_int", (low, high))
        if kind == "random_choice":
            choices = _strings(args)
            if not choices:
                raise TemplateError(
                    f'{whole!r}: random_choice takes quoted strings, e.g. random_choice("a", "b")'
                )
            return Call("random_choice", tuple(choices))
        raise TemplateError(f"{whole!r}: unknown function {kind!r}; the built-ins are {', '.join(BUILTINS)}")
    if _NAME.fullmatch(expr):
        return Var(expr)
    raise TemplateError(
        f"{whole!r} is not a variable name or a built-in ({', '.join(BUILTINS)}); "
        "variable names are letters, digits and _"
    )


def _strings(args: str) -> list[str]:
    out: list[str] = []
    pos = 0
    while pos < len(args):
        m = _STRING_ARG.match(args, pos)
        if m is None:
            return []
        out.append(re.sub(r"\\(.)", r"\1", m.group(1)))
        pos = m.end()
        if pos < len(args):
            if args[pos] != ",":
                return []
            pos += 1
    return out
