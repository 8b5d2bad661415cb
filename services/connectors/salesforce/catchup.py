"""SOQL fallbacks when the change stream cannot be trusted.

* `catch_up`: after GAP_OVERFLOW or an expired replay id, every record changed since a
  SystemModstamp (deleted ones included, via queryAll), oldest first, paged.
* `reread`: after GAP_* events, the current state of the named records (None = gone).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any

from services.connectors.salesforce.rest import SalesforceRest

ALWAYS = ("Id", "IsDeleted", "SystemModstamp", "LastModifiedDate", "OwnerId")


def soql_datetime(value: str) -> str:
    """`2024-04-26T18:38:05.000+0000` / `...Z` / `...+02:00` -> a SOQL date-time literal (UTC)."""
    text = value.strip().replace("Z", "+00:00")
    if len(text) >= 5 and text[-5] in "+-" and ":" not in text[-5:]:
        text = text[:-2] + ":" + text[-2:]
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    dt = dt.astimezone(UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _field_list(fields: Sequence[str] | None) -> str:
    names = list(ALWAYS)
    for f in fields or ():
        if f not in names:
            names.append(f)
    return ", ".join(names)


async def catch_up(
    rest: SalesforceRest,
    sobject: str,
    since: str,
    owner_ids: Sequence[str],
    fields: Sequence[str] | None = None,
) -> AsyncIterator[dict[str, Any]]:
    """Records of `owner_ids` with SystemModstamp >= since (inclusive: a change in the same
    millisecond as the cursor must not be missed; duplicates are harmless downstream)."""
    if not owner_ids:
        return
    soql = (
        f"SELECT {_field_list(fields)} FROM {sobject} WHERE SystemModstamp >= {soql_datetime(since)} "
        f"AND OwnerId IN ({', '.join(_quote(o) for o in owner_ids)}) ORDER BY SystemModstamp, Id"
    )
    async for rec in rest.query_all(soql):
        yield rec


async def reread(rest: SalesforceRest, sobject: str, ids: Sequence[str], fields: Sequence[str] | None = None
                 ) -> dict[str, dict[str, Any] | None]:
    """id -> current record, or None when it no longer exists (deleted)."""
    names = _field_list(fields).split(", ")
    rows = await rest.get_many(sobject, list(ids), names)
    return dict(zip(ids, rows, strict=True))
