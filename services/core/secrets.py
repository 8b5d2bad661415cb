"""Secret references and the values they resolve to.

Configuration never holds a secret, only a reference: `env:NAME` (an environment variable)
or `file:/path` (a mounted Kubernetes Secret). `Secret` wraps a resolved value so that it
cannot leak through repr/str into a log line, an exception or an event.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


class SecretError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Secret:
    _value: str

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__


def resolve_secret(ref: str) -> Secret:
    """Resolve `env:NAME`, `file:/path` or (for local demos only) `literal:value`."""
    scheme, sep, rest = ref.partition(":")
    if not sep or not rest:
        raise SecretError(f"secret reference {ref.split(':')[0]!r}... must look like env:NAME or file:/path")
    if scheme == "env":
        value = os.environ.get(rest)
        if value is None:
            raise SecretError(f"secret reference env:{rest}: environment variable is not set")
        return Secret(value)
    if scheme == "file":
        try:
            return Secret(Path(rest).read_text().strip())
        except OSError as exc:
            raise SecretError(f"secret reference file:{rest}: cannot read ({exc.strerror})") from None
    if scheme == "literal":
        return Secret(rest)
    raise SecretError(f"secret reference scheme {scheme!r} is unknown (use env: or file:)")
