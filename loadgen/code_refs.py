"""Flows written in Python: ``"package.module:function"`` references, how an agent finds the function, and
the hash by which the coordinator checks that every agent runs the same code.

Code never travels: the profile names a function that is already installed on every agent (the same package,
the same version). When an agent joins a run with such flows, the coordinator asks it for the hash of each
function's module source (:func:`code_hash`, SHA-256 of the file's bytes) and admits it only if the hashes
agree with the other agents': two agents running different versions of a journey would make one run of two
different tests.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import re
from collections.abc import Callable
from typing import Any

_REF = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*")


class CodeError(Exception):
    """A flow function that cannot be used; the message says why."""


def check_ref(ref: str) -> str:
    """``ref`` if it has the form ``package.module:function``; raises ValueError otherwise."""
    if not _REF.fullmatch(ref):
        raise ValueError(f"expected 'package.module:function', got {ref!r}")
    return ref


def ref_of(fn: Callable[..., Any]) -> str:
    """The reference of a module-level function (for a profile built in code). Raises ValueError for one
    that agents could not find by name (a lambda, a nested function, a method)."""
    module, name = getattr(fn, "__module__", None), getattr(fn, "__qualname__", "")
    if not module or not name or "<" in name or "." in name or module == "__main__":
        raise ValueError(
            f"{fn!r} is not a module-level function of an importable module; agents import flows by "
            "'package.module:function'"
        )
    return f"{module}:{name}"


def resolve(ref: str) -> Callable[..., Any]:
    """The async function ``ref`` names. Raises :class:`CodeError` naming what is missing."""
    module_name, _, name = check_ref(ref).partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # an import can raise anything
        raise CodeError(
            f"cannot import {module_name!r} for flow {ref!r}: {type(exc).__name__}: {exc}"
        ) from None
    fn = getattr(module, name, None)
    if fn is None:
        raise CodeError(f"module {module_name!r} has no {name!r} (flow {ref!r})")
    if not inspect.iscoroutinefunction(fn):
        raise CodeError(f"flow {ref!r} must be an async function (async def {name}(session): ...)")
    return fn  # type: ignore[no-any-return]


def code_hash(ref: str) -> str:
    """SHA-256 of the source of the module that holds ``ref``'s function. Raises :class:`CodeError`."""
    fn = resolve(ref)
    try:
        path = inspect.getsourcefile(fn)
    except TypeError:
        path = None
    if path is None:
        raise CodeError(f"flow {ref!r}: its module's source file cannot be found, so it cannot be checked")
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def hashes(refs: list[str]) -> tuple[dict[str, str], str]:
    """``(ref -> hash, problem)``: every hash, or the first problem found (then the hashes are partial)."""
    out: dict[str, str] = {}
    for ref in refs:
        try:
            out[ref] = code_hash(ref)
        except (CodeError, ValueError, OSError) as exc:
            return out, str(exc)
    return out, ""
