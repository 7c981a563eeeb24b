"""``{{ env.NAME }}`` references in profile text: which variables a text names, and the text with them filled.

Pure functions over a text and a mapping (the caller passes ``os.environ`` or a test's dict), so that every
part of a profile that reads the environment does it the same way, with the same errors::

    >>> expand_env("Bearer {{ env.TOKEN }}", {"TOKEN": "s3cret"})
    'Bearer s3cret'
    >>> env_names("{{env.USER}}:{{ env.PASS }}")
    ('USER', 'PASS')

A reference is ``{{``, optional spaces, ``env.``, a name (letters, digits and ``_``, not starting with a
digit), optional spaces, ``}}``. Other ``{{ ... }}`` text is left as it is, for whoever reads the result to
refuse or expand. The values are taken as they are: nothing in them is expanded again.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

__all__ = ["ENV_REF", "EnvRefError", "env_names", "expand_env", "has_env_refs"]

ENV_REF = re.compile(r"\{\{\s*env\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
"""One reference; group 1 is the variable's name."""


class EnvRefError(ValueError):
    """A text names a variable the environment does not have. ``name`` is the variable."""

    def __init__(self, name: str) -> None:
        super().__init__(f"environment variable {name} is not set (named by {{{{ env.{name} }}}})")
        self.name = name


def env_names(text: str) -> tuple[str, ...]:
    """The variables ``text`` names, in order of first appearance, each once."""
    return tuple(dict.fromkeys(m.group(1) for m in ENV_REF.finditer(text)))


def has_env_refs(text: str) -> bool:
    """Whether ``text`` names any variable."""
    return ENV_REF.search(text) is not None


def expand_env(text: str, environ: Mapping[str, str]) -> str:
    """``text`` with every reference replaced by its variable's value. Raises :class:`EnvRefError` for the
    first variable ``environ`` does not hold (an empty value is a value)."""
    for name in env_names(text):
        if name not in environ:
            raise EnvRefError(name)
    return ENV_REF.sub(lambda m: environ[m.group(1)], text)
