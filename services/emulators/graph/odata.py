"""The OData query options the emulator understands: $select, $expand of
singleValueExtendedProperties (with an id filter), and the $filter forms exsf uses."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from services.emulators.graph.store import Item
from services.emulators.graph.wire import Ctx, GraphError

_EXT_EXPAND = re.compile(r"singleValueExtendedProperties(?:\(\s*\$filter\s*=\s*(.*)\))?$", re.IGNORECASE)
_ID_EQ = re.compile(r"^\s*id\s+eq\s+'((?:[^']|'')*)'\s*$", re.IGNORECASE)
_ANY_EXT = re.compile(
    r"^\s*singleValueExtendedProperties/any\(\s*(\w+)\s*:\s*\1/id\s+eq\s+'((?:[^']|'')*)'\s+and\s+"
    r"\1/value\s+eq\s+'((?:[^']|'')*)'\s*\)\s*$",
    re.IGNORECASE,
)
_ANY_CAT = re.compile(r"^\s*categories/any\(\s*(\w+)\s*:\s*\1\s+eq\s+'((?:[^']|'')*)'\s*\)\s*$", re.IGNORECASE)
_PROP_EQ = re.compile(r"^\s*(\w+)\s+eq\s+'((?:[^']|'')*)'\s*$")


def _unq(s: str) -> str:
    return s.replace("''", "'")


def _split_top_level(value: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in value:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    if cur:
        parts.append(cur)
    return [p.strip() for p in parts if p.strip()]


def ext_expand(query: dict[str, str]) -> list[str] | None:
    """None: no extended properties requested; []: all of them; else the requested ids."""
    raw = query.get("$expand")
    if not raw:
        return None
    for part in _split_top_level(raw):
        m = _EXT_EXPAND.match(part)
        if not m:
            continue
        if not m.group(1):
            return []
        ids = []
        for clause in re.split(r"\s+or\s+", m.group(1), flags=re.IGNORECASE):
            idm = _ID_EQ.match(clause)
            if not idm:
                raise GraphError(400, "BadRequest", "Unsupported $filter on singleValueExtendedProperties.")
            ids.append(_unq(idm.group(1)))
        return ids
    return None


def render_item(query: dict[str, str], it: Item, base: dict[str, Any] | None = None) -> dict[str, Any]:
    out = base if base is not None else it.render()
    if "linkedResources" in out and "linkedresources" not in (query.get("$expand") or "").lower():
        out.pop("linkedResources")
    wanted = ext_expand(query)
    if wanted is not None:
        props = [{"id": pid, "value": val} for key, (pid, val) in it.ext.items()
                 if not wanted or key in {w.lower() for w in wanted}]
        out["singleValueExtendedProperties"] = props
    return apply_select(query, out)


def apply_select(query: dict[str, str], out: dict[str, Any]) -> dict[str, Any]:
    raw = query.get("$select")
    if not raw:
        return out
    keep = {s.strip() for s in raw.split(",") if s.strip()} | {"id", "@odata.etag", "@odata.type",
                                                                 "singleValueExtendedProperties", "@removed"}
    return {k: v for k, v in out.items() if k in keep}


def item_filter(query: dict[str, str]) -> Callable[[Item], bool]:
    raw = query.get("$filter")
    if not raw:
        return lambda it: True
    m = _ANY_EXT.match(raw)
    if m:
        pid, val = _unq(m.group(2)), _unq(m.group(3))
        return lambda it: it.ext_value(pid) == val
    m = _ANY_CAT.match(raw)
    if m:
        cat = _unq(m.group(2)).lower()
        return lambda it: cat in [str(c).lower() for c in it.data.get("categories") or []]
    m = _PROP_EQ.match(raw)
    if m:
        prop, val = m.group(1), _unq(m.group(2))
        return lambda it: str(it.data.get(prop)) == val
    raise GraphError(400, "ErrorInvalidUrlQueryFilter", "The query filter contains one or more invalid nodes.")


def dict_filter(query: dict[str, str]) -> Callable[[dict[str, Any]], bool]:
    raw = query.get("$filter")
    if not raw:
        return lambda d: True
    m = _PROP_EQ.match(raw)
    if m:
        prop, val = m.group(1), _unq(m.group(2))
        return lambda d: str(d.get(prop)) == val
    raise GraphError(400, "ErrorInvalidUrlQueryFilter", "The query filter contains one or more invalid nodes.")


def page_size(ctx: Ctx, default: int) -> int:
    prefer = ctx.header("prefer") or ""
    m = re.search(r"odata\.maxpagesize\s*=\s*(\d+)", prefer, re.IGNORECASE)
    if m and int(m.group(1)) > 0:
        return int(m.group(1))
    top = ctx.q("$top")
    if top and top.isdigit() and int(top) > 0:
        return int(top)
    return default
