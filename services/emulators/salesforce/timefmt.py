"""Salesforce date-time formats: REST uses `2024-04-26T18:38:05.000+0000`, CDC bodies `...Z`."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta

_DT_RE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,6}))?)?(Z|[+-]\d{2}:?\d{2})?$"
)


def to_ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


def from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def rest(ms: int) -> str:
    dt = from_ms(ms)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}+0000"


def cdc(ms: int) -> str:
    dt = from_ms(ms)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def parse_datetime(text: str) -> int:
    """Parse an ISO-8601 date-time as Salesforce accepts it; naive values are UTC."""
    m = _DT_RE.match(text.strip())
    if not m:
        raise ValueError(f"invalid date-time {text!r}")
    y, mo, d, h, mi, s, frac, tz = m.groups()
    dt = datetime(int(y), int(mo), int(d), int(h), int(mi), int(s or 0), tzinfo=UTC)
    ms = to_ms(dt) + (int((frac or "0").ljust(3, "0")[:3]))
    if tz and tz != "Z":
        sign = 1 if tz[0] == "+" else -1
        digits = tz[1:].replace(":", "")
        ms -= sign * (int(digits[:2]) * 3600 + int(digits[2:]) * 60) * 1000
    return ms


def parse_date(text: str) -> str:
    return date.fromisoformat(text.strip()).isoformat()


def ms_to_date(ms: int) -> str:
    return from_ms(ms).date().isoformat()


def date_to_ms(d: str) -> int:
    return to_ms(datetime.fromisoformat(d).replace(tzinfo=UTC))


def add_days(d: str, days: int) -> str:
    return (date.fromisoformat(d) + timedelta(days=days)).isoformat()
