"""Flows written in Python: ``"package.module:function"`` references, how an agent finds the function, and
the hash by which the coordinator checks that every agent runs the same code.

Code never travels: the profile names a function that is already installed on every agent (the same package,
the same version). When an agent joins a run with such flows, the coordinator asks it for the hash of each
function's source (:func:`code_hash`: the SHA-256 of its package's Python files) and admits it only if the
hashes agree with the other agents': two agents running different versions of a journey would make one run
of two different tests.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

MAX_HASHED_FILES = 2000
"""A flow package with more Python files than this is refused (its hash would be slow, and it is likely an
application rather than load-test code)."""
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
    """SHA-256 of the source ``ref``'s function runs: the ``.py`` files of the package that holds its module
    (its directory and those below, by path relative to it, so a helper module beside the flow counts too),
    or the module's file alone if it is not in a package. Raises :class:`CodeError`."""
    fn = resolve(ref)
    try:
        path = inspect.getsourcefile(fn)
    except TypeError:
        path = None
    if path is None:
        raise CodeError(f"flow {ref!r}: its module's source file cannot be found, so it cannot be checked")
    source = Path(path)
    in_package = "." in ref.partition(":")[0] or source.name == "__init__.py"
    files = sorted(source.parent.rglob("*.py")) if in_package else [source]
    if len(files) > MAX_HASHED_FILES:
        raise CodeError(
            f"flow {ref!r}: its package {source.parent} holds over {MAX_HASHED_FILES} Python files; put the "
            "flows in a package of their own"
        )
    digest = hashlib.sha256()
    for file in files:
        name = file.relative_to(source.parent).as_posix().encode()
        digest.update(len(name).to_bytes(4, "big") + name)
        content = file.read_bytes()
        digest.update(len(content).to_bytes(8, "big") + content)
    return digest.hexdigest()


def hashes(refs: list[str]) -> tuple[dict[str, str], str]:
    """``(ref -> hash, problem)``: every hash, or the first problem found (then the hashes are partial)."""
    out: dict[str, str] = {}
    for ref in refs:
        try:
            out[ref] = code_hash(ref)
        except (CodeError, ValueError, OSError) as exc:
            return out, str(exc)
    return out, ""
