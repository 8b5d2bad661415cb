"""Legacy recurring Events (IsRecurrence = true): the occurrences a series' Recurrence* fields
describe, as the time fields of the child Events the org materialises for them.

Dates are evaluated in RecurrenceTimeZoneSidKey (IANA name, "GMT"; UTC when absent or
unknown), from the local date of RecurrenceStartDateTime (the master's start when absent)
through RecurrenceEndDateOnly inclusive. Every occurrence keeps the master's local time of
day and its duration; all-day series work on plain dates (their instants are midnight GMT).
"""

from __future__ import annotations

import calendar
from collections.abc import Iterator, Mapping
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from services.emulators.salesforce import timefmt

# A real org refuses legacy series longer than 100 occurrences (the UI and API limit for
# recurring events); the emulator does not reject longer ones, it stops at 100 children.
MAX_OCCURRENCES = 100

_INSTANCES = {"First": 0, "Second": 1, "Third": 2, "Fourth": 3, "Last": -1}
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December")


def zone(name: Any) -> tzinfo:
    if not name or str(name).upper() in ("GMT", "UTC"):
        return UTC
    try:
        return ZoneInfo(str(name))
    except (ZoneInfoNotFoundError, ValueError):
        return UTC


def mask_weekdays(mask: Any) -> list[int]:
    """RecurrenceDayOfWeekMask (Sunday=1, Monday=2, ... Saturday=64) -> Python weekdays (Monday=0)."""
    m = int(mask or 0)
    return [(bit - 1) % 7 for bit in range(7) if m & (1 << bit)]


def _nth(year: int, month: int, weekdays: list[int], instance: Any) -> date | None:
    days = [date(year, month, d) for d in range(1, calendar.monthrange(year, month)[1] + 1)
            if date(year, month, d).weekday() in weekdays]
    i = _INSTANCES.get(str(instance or "First"), 0)
    return days[i] if days and -len(days) <= i < len(days) else None


def _candidates(f: Mapping[str, Any], start: date) -> Iterator[date]:
    """Dates of the pattern in order, from `start` on (endless: the caller stops)."""
    kind = f.get("RecurrenceType")
    interval = max(1, int(f.get("RecurrenceInterval") or 1))
    weekdays = mask_weekdays(f.get("RecurrenceDayOfWeekMask")) or [start.weekday()]
    dom = int(f.get("RecurrenceDayOfMonth") or start.day)
    month_name = f.get("RecurrenceMonthOfYear")
    month = _MONTHS.index(month_name) + 1 if month_name in _MONTHS else start.month
    if kind == "RecursDaily":
        for n in range(0, 10**6, interval):
            yield start + timedelta(days=n)
    elif kind == "RecursEveryWeekday":
        for n in range(10**6):
            if (d := start + timedelta(days=n)).weekday() < 5:
                yield d
    elif kind == "RecursWeekly":
        # Weeks start on Sunday; the interval counts weeks from the one the series starts in.
        week = start - timedelta(days=(start.weekday() + 1) % 7)
        while True:
            for d in (week + timedelta(days=i) for i in range(7)):
                if d >= start and d.weekday() in weekdays:
                    yield d
            week += timedelta(weeks=interval)
    elif kind in ("RecursMonthly", "RecursMonthlyNth"):
        for n in range(0, 10**5, interval):
            y, m = start.year + (start.month - 1 + n) // 12, (start.month - 1 + n) % 12 + 1
            if kind == "RecursMonthly":
                d_opt: date | None = date(y, m, min(dom, calendar.monthrange(y, m)[1]))
            else:
                d_opt = _nth(y, m, weekdays, f.get("RecurrenceInstance"))
            if d_opt is not None and d_opt >= start:
                yield d_opt
    elif kind in ("RecursYearly", "RecursYearlyNth"):
        for y in range(start.year, start.year + 10**4):
            if kind == "RecursYearly":
                d_opt = date(y, month, min(dom, calendar.monthrange(y, month)[1]))
            else:
                d_opt = _nth(y, month, weekdays, f.get("RecurrenceInstance"))
            if d_opt is not None and d_opt >= start:
                yield d_opt


def series_dates(f: Mapping[str, Any], first: date) -> list[date]:
    end = date.fromisoformat(f["RecurrenceEndDateOnly"]) if f.get("RecurrenceEndDateOnly") else None
    out: list[date] = []
    try:
        for d in _candidates(f, first):
            if (end is not None and d > end) or len(out) >= MAX_OCCURRENCES:
                break
            out.append(d)
    except (ValueError, OverflowError):  # past year 9999
        pass
    return out


def occurrences(master: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The time fields of each child Event of a series master (its fields as stored)."""
    if not master.get("IsRecurrence") or not master.get("RecurrenceType"):
        return []
    rstart = master.get("RecurrenceStartDateTime")
    if master.get("IsAllDayEvent"):
        first = date.fromisoformat((rstart or master["ActivityDate"])[:10])
        return [{"IsAllDayEvent": True, "ActivityDate": d.isoformat(),
                 "DurationInMinutes": master.get("DurationInMinutes")} for d in series_dates(master, first)]
    tz = zone(master.get("RecurrenceTimeZoneSidKey"))
    start_ms = timefmt.parse_datetime(master["StartDateTime"])
    duration_ms = timefmt.parse_datetime(master["EndDateTime"]) - start_ms
    local_start = timefmt.from_ms(start_ms).astimezone(tz)
    first = timefmt.from_ms(timefmt.parse_datetime(rstart)).astimezone(tz).date() if rstart else local_start.date()
    out: list[dict[str, Any]] = []
    for d in series_dates(master, first):
        ms = timefmt.to_ms(datetime.combine(d, local_start.time(), tzinfo=tz))
        out.append({"IsAllDayEvent": False, "StartDateTime": timefmt.rest(ms),
                    "EndDateTime": timefmt.rest(ms + duration_ms)})
    return out
