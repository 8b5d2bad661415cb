"""Three-way merge per field and the tenant's conflict policy. Pure functions.

`absorb` folds one side's new content into the desired record: a field the side changed
(relative to its shadow) is taken, unless the desired record had already moved that field
away from the side's shadow to another value, which means the other side changed it too:
a conflict. `join` merges two items that never agreed (dedupe links, re-links): equal or
one-sided fields merge, two different non-empty values are a conflict. Conflicts are
returned, never dropped, so the caller can audit both values.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.core.envelopes import Side, content_hash
from services.core.records import FIELDS, canonical, not_stored_by_salesforce


@dataclass(frozen=True, slots=True)
class Conflict:
    field: str
    exchange_value: Any
    salesforce_value: Any
    winner: Side

    @property
    def losing_value(self) -> Any:
        return self.salesforce_value if self.winner == "exchange" else self.exchange_value


def norm(entity: str, record: dict[str, Any] | None) -> dict[str, Any]:
    return canonical(entity, record or {})


def same(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    return content_hash(a or {}) == content_hash(b or {})


def patch(entity: str, current: dict[str, Any] | None, target: dict[str, Any]) -> dict[str, Any]:
    """Fields to write so `current` becomes `target`; None clears a field."""
    cur = current or {}
    return {f: target.get(f) for f in FIELDS[entity] if cur.get(f) != target.get(f)}


def apply_patch(entity: str, current: dict[str, Any] | None, fields: dict[str, Any]) -> dict[str, Any]:
    return canonical(entity, {**(current or {}), **fields})


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def newer(a: str | None, b: str | None) -> bool | None:
    """True if a is strictly after b, None when they cannot be ordered."""
    ta, tb = parse_time(a), parse_time(b)
    if ta is None or tb is None:
        return None
    if (ta.tzinfo is None) != (tb.tzinfo is None):
        return None
    return ta > tb


def winner(policy: str, side: Side, side_time: str | None, other_time: str | None) -> Side:
    """Who wins a field both sides changed. Latest-wins falls back to Salesforce (the
    system of record) when times are missing or equal, so the outcome is deterministic."""
    o: Side = "salesforce" if side == "exchange" else "exchange"
    if policy == "salesforce-wins":
        return "salesforce"
    if policy == "exchange-wins":
        return "exchange"
    later = newer(side_time, other_time)
    if later:
        return side
    if later is False and newer(other_time, side_time):
        return o
    return "salesforce"


def absorb(
    entity: str,
    desired: dict[str, Any],
    shadow: dict[str, Any],
    incoming: dict[str, Any],
    side: Side,
    policy: str,
    side_time: str | None,
    other_time: str | None,
) -> tuple[dict[str, Any], list[Conflict]]:
    out = dict(desired)
    conflicts: list[Conflict] = []
    for f in FIELDS[entity]:
        new, old, cur = incoming.get(f), shadow.get(f), desired.get(f)
        if new == old:
            continue  # this side did not touch f
        if cur == old or cur == new:
            out[f] = new
            continue
        # Both moved f: `cur` carries the other side's value (or an earlier decision).
        w = winner(policy, side, side_time, other_time)
        ex_v, sf_v = (new, cur) if side == "exchange" else (cur, new)
        conflicts.append(Conflict(f, ex_v, sf_v, w))
        out[f] = new if w == side else cur
    return canonical(entity, out), conflicts


def join(
    entity: str,
    exchange: dict[str, Any],
    salesforce: dict[str, Any],
    policy: str,
    exchange_time: str | None,
    salesforce_time: str | None,
) -> tuple[dict[str, Any], list[Conflict]]:
    out: dict[str, Any] = {}
    conflicts: list[Conflict] = []
    for f in FIELDS[entity]:
        e, s = exchange.get(f), salesforce.get(f)
        if e == s or s is None:
            out[f] = e
        elif e is None:
            out[f] = s  # no base: an empty field is not a deletion, keep the value
        else:
            w = winner(policy, "exchange", exchange_time, salesforce_time)
            conflicts.append(Conflict(f, e, s, w))
            out[f] = e if w == "exchange" else s
    return canonical(entity, out), conflicts


def has_new_content(
    survivor: dict[str, Any] | None, base: dict[str, Any] | None, deleted: dict[str, Any] | None
) -> bool:
    """Edit beats delete: does the surviving side hold a value that is neither agreed (base)
    nor what the deleting side last had? Then deleting it would lose an edit nobody saw."""
    sv, b, d = survivor or {}, base or {}, deleted or {}
    return any(v != b.get(f) and v != d.get(f) for f, v in sv.items()) or any(
        f not in sv and b.get(f) is not None and d.get(f) is not None for f in b
    )


def filled_in(entity: str, s: str, sent: dict[str, Any], record: dict[str, Any] | None) -> dict[str, Any]:
    """Values a mailbox item we created holds that we did not send, in fields Salesforce
    cannot hold (Graph gives every event a time zone, "UTC" when the create named none):
    the item's own defaults, not a person's edit. A Salesforce create fills nothing we track."""
    if s != "exchange" or record is None:
        return {}
    return {f: record[f] for f in not_stored_by_salesforce(entity) if sent.get(f) is None and record.get(f) is not None}
