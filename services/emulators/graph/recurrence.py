"""Expansion of a recurring event's pattern into occurrence dates (graph.md §4 recurrence)."""

from __future__ import annotations

import calendar
from collections.abc import Iterator
from datetime import date, timedelta
from typing import Any

_DAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
_INDEX = {"first": 0, "second": 1, "third": 2, "fourth": 3, "last": -1}
MAX_OCCURRENCES = 2000


def _nth_weekday(year: int, month: int, weekdays: list[int], index: str) -> date | None:
    days = [date(year, month, d) for d in range(1, calendar.monthrange(year, month)[1] + 1)
            if date(year, month, d).weekday() in weekdays]
    if not days:
        return None
    i = _INDEX.get(index, 0)
    return days[i] if -len(days) <= i < len(days) else None


def _candidates(pattern: dict[str, Any], start: date) -> Iterator[date]:
    kind = pattern.get("type", "daily")
    interval = max(1, int(pattern.get("interval") or 1))
    weekdays = [_DAYS.index(d.lower()) for d in pattern.get("daysOfWeek") or [] if d.lower() in _DAYS]
    if kind == "daily":
        d = start
        while True:
            yield d
            d += timedelta(days=interval)
    elif kind == "weekly":
        weekdays = weekdays or [start.weekday()]
        first = _DAYS.index(str(pattern.get("firstDayOfWeek") or "sunday").lower())
        week_start = start - timedelta(days=(start.weekday() - first) % 7)
        while True:
            for wd in sorted(weekdays, key=lambda w: (w - first) % 7):
                d = week_start + timedelta(days=(wd - first) % 7)
                if d >= start:
                    yield d
            week_start += timedelta(weeks=interval)
    elif kind in ("absoluteMonthly", "relativeMonthly"):
        y, m = start.year, start.month
        while True:
            if kind == "absoluteMonthly":
                dom = int(pattern.get("dayOfMonth") or start.day)
                d_opt: date | None = date(y, m, min(dom, calendar.monthrange(y, m)[1]))
            else:
                d_opt = _nth_weekday(y, m, weekdays or [start.weekday()], str(pattern.get("index") or "first"))
            if d_opt is not None and d_opt >= start:
                yield d_opt
            m += interval
            y, m = y + (m - 1) // 12, (m - 1) % 12 + 1
    elif kind in ("absoluteYearly", "relativeYearly"):
        y = start.year
        d_opt = None
        month = int(pattern.get("month") or start.month)
        while True:
            if kind == "absoluteYearly":
                dom = int(pattern.get("dayOfMonth") or start.day)
                d_opt = date(y, month, min(dom, calendar.monthrange(y, month)[1]))
            else:
                d_opt = _nth_weekday(y, month, weekdays or [start.weekday()], str(pattern.get("index") or "first"))
            if d_opt is not None and d_opt >= start:
                yield d_opt
            y += interval
    else:
        yield start


def occurrence_dates(recurrence: dict[str, Any], first_start: date, until: date) -> list[date]:
    """Dates of occurrences from the series start up to `until` (inclusive)."""
    pattern = recurrence.get("pattern") or {}
    rng = recurrence.get("range") or {}
    range_start = date.fromisoformat(rng["startDate"]) if rng.get("startDate") else first_start
    end = date.fromisoformat(rng["endDate"]) if rng.get("type") == "endDate" and rng.get("endDate") else None
    count = int(rng.get("numberOfOccurrences") or 0) if rng.get("type") == "numbered" else 0
    out: list[date] = []
    for d in _candidates(pattern, range_start):
        if d > until or (end is not None and d > end) or len(out) >= MAX_OCCURRENCES:
            break
        out.append(d)
        if count and len(out) >= count:
            break
    return out
