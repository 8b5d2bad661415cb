"""What every exsf command shares: the error an operator sees, and the two output forms
(a readable table by default, JSON with --json for scripts)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import orjson


class CliError(Exception):
    """Bad input or a refused action: main() prints `exsf: <message>` on one line and exits 2."""


def print_json(value: Any) -> None:
    sys.stdout.write(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n")


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]], indent: str = "") -> None:
    cells = [[str(h) for h in headers], *[[str(c) for c in r] for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for r in cells:
        print(indent + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def print_fields(pairs: Sequence[tuple[str, object]]) -> None:
    width = max((len(k) for k, _ in pairs), default=0)
    for k, v in pairs:
        print(f"{k.ljust(width)}  {v}")
