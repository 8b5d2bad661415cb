"""Time zone names and instant/wall-time conversions shared by the mappings.

Graph names zones the Windows way ("Pacific Standard Time"), sometimes IANA, sometimes the
Outlook forms "tzone://Microsoft/Utc" / "tzone://Microsoft/Custom". exsf's canonical
`time_zone` is the IANA name when known (records.py), so Windows names are translated with
the CLDR "001" (primary) mapping below. A Windows name is written back only when it
translates to exactly the same IANA zone, so IANA -> Graph -> IANA is lossless.

Canonical instants are "YYYY-MM-DDTHH:MM:SSZ" (second precision, UTC).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

# CLDR windowsZones.xml, territory "001" (the primary IANA zone of each Windows zone).
WINDOWS_TO_IANA: Final[dict[str, str]] = {
    "Dateline Standard Time": "Etc/GMT+12",
    "UTC-11": "Etc/GMT+11",
    "Aleutian Standard Time": "America/Adak",
    "Hawaiian Standard Time": "Pacific/Honolulu",
    "Marquesas Standard Time": "Pacific/Marquesas",
    "Alaskan Standard Time": "America/Anchorage",
    "UTC-09": "Etc/GMT+9",
    "Pacific Standard Time (Mexico)": "America/Tijuana",
    "UTC-08": "Etc/GMT+8",
    "Pacific Standard Time": "America/Los_Angeles",
    "US Mountain Standard Time": "America/Phoenix",
    "Mountain Standard Time (Mexico)": "America/Mazatlan",
    "Mountain Standard Time": "America/Denver",
    "Yukon Standard Time": "America/Whitehorse",
    "Central America Standard Time": "America/Guatemala",
    "Central Standard Time": "America/Chicago",
    "Easter Island Standard Time": "Pacific/Easter",
    "Central Standard Time (Mexico)": "America/Mexico_City",
    "Canada Central Standard Time": "America/Regina",
    "SA Pacific Standard Time": "America/Bogota",
    "Eastern Standard Time (Mexico)": "America/Cancun",
    "Eastern Standard Time": "America/New_York",
    "Haiti Standard Time": "America/Port-au-Prince",
    "Cuba Standard Time": "America/Havana",
    "US Eastern Standard Time": "America/Indiana/Indianapolis",
    "Turks And Caicos Standard Time": "America/Grand_Turk",
    "Paraguay Standard Time": "America/Asuncion",
    "Atlantic Standard Time": "America/Halifax",
    "Venezuela Standard Time": "America/Caracas",
    "Central Brazilian Standard Time": "America/Cuiaba",
    "SA Western Standard Time": "America/La_Paz",
    "Pacific SA Standard Time": "America/Santiago",
    "Newfoundland Standard Time": "America/St_Johns",
    "Tocantins Standard Time": "America/Araguaina",
    "E. South America Standard Time": "America/Sao_Paulo",
    "SA Eastern Standard Time": "America/Cayenne",
    "Argentina Standard Time": "America/Argentina/Buenos_Aires",
    "Greenland Standard Time": "America/Nuuk",
    "Montevideo Standard Time": "America/Montevideo",
    "Magallanes Standard Time": "America/Punta_Arenas",
    "Saint Pierre Standard Time": "America/Miquelon",
    "Bahia Standard Time": "America/Bahia",
    "UTC-02": "Etc/GMT+2",
    "Azores Standard Time": "Atlantic/Azores",
    "Cape Verde Standard Time": "Atlantic/Cape_Verde",
    "UTC": "UTC",
    "GMT Standard Time": "Europe/London",
    "Greenwich Standard Time": "Atlantic/Reykjavik",
    "Sao Tome Standard Time": "Africa/Sao_Tome",
    "Morocco Standard Time": "Africa/Casablanca",
    "W. Europe Standard Time": "Europe/Berlin",
    "Central Europe Standard Time": "Europe/Budapest",
    "Romance Standard Time": "Europe/Paris",
    "Central European Standard Time": "Europe/Warsaw",
    "W. Central Africa Standard Time": "Africa/Lagos",
    "Jordan Standard Time": "Asia/Amman",
    "GTB Standard Time": "Europe/Bucharest",
    "Middle East Standard Time": "Asia/Beirut",
    "Egypt Standard Time": "Africa/Cairo",
    "E. Europe Standard Time": "Europe/Chisinau",
    "Syria Standard Time": "Asia/Damascus",
    "West Bank Standard Time": "Asia/Hebron",
    "South Africa Standard Time": "Africa/Johannesburg",
    "FLE Standard Time": "Europe/Kyiv",
    "Israel Standard Time": "Asia/Jerusalem",
    "South Sudan Standard Time": "Africa/Juba",
    "Kaliningrad Standard Time": "Europe/Kaliningrad",
    "Sudan Standard Time": "Africa/Khartoum",
    "Libya Standard Time": "Africa/Tripoli",
    "Namibia Standard Time": "Africa/Windhoek",
    "Arabic Standard Time": "Asia/Baghdad",
    "Turkey Standard Time": "Europe/Istanbul",
    "Arab Standard Time": "Asia/Riyadh",
    "Belarus Standard Time": "Europe/Minsk",
    "Russian Standard Time": "Europe/Moscow",
    "E. Africa Standard Time": "Africa/Nairobi",
    "Volgograd Standard Time": "Europe/Volgograd",
    "Iran Standard Time": "Asia/Tehran",
    "Arabian Standard Time": "Asia/Dubai",
    "Astrakhan Standard Time": "Europe/Astrakhan",
    "Azerbaijan Standard Time": "Asia/Baku",
    "Russia Time Zone 3": "Europe/Samara",
    "Mauritius Standard Time": "Indian/Mauritius",
    "Saratov Standard Time": "Europe/Saratov",
    "Georgian Standard Time": "Asia/Tbilisi",
    "Caucasus Standard Time": "Asia/Yerevan",
    "Afghanistan Standard Time": "Asia/Kabul",
    "West Asia Standard Time": "Asia/Tashkent",
    "Ekaterinburg Standard Time": "Asia/Yekaterinburg",
    "Pakistan Standard Time": "Asia/Karachi",
    "Qyzylorda Standard Time": "Asia/Qyzylorda",
    "India Standard Time": "Asia/Kolkata",
    "Sri Lanka Standard Time": "Asia/Colombo",
    "Nepal Standard Time": "Asia/Kathmandu",
    "Central Asia Standard Time": "Asia/Almaty",
    "Bangladesh Standard Time": "Asia/Dhaka",
    "Omsk Standard Time": "Asia/Omsk",
    "Myanmar Standard Time": "Asia/Yangon",
    "SE Asia Standard Time": "Asia/Bangkok",
    "Altai Standard Time": "Asia/Barnaul",
    "W. Mongolia Standard Time": "Asia/Hovd",
    "North Asia Standard Time": "Asia/Krasnoyarsk",
    "N. Central Asia Standard Time": "Asia/Novosibirsk",
    "Tomsk Standard Time": "Asia/Tomsk",
    "China Standard Time": "Asia/Shanghai",
    "North Asia East Standard Time": "Asia/Irkutsk",
    "Singapore Standard Time": "Asia/Singapore",
    "W. Australia Standard Time": "Australia/Perth",
    "Taipei Standard Time": "Asia/Taipei",
    "Ulaanbaatar Standard Time": "Asia/Ulaanbaatar",
    "Aus Central W. Standard Time": "Australia/Eucla",
    "Transbaikal Standard Time": "Asia/Chita",
    "Tokyo Standard Time": "Asia/Tokyo",
    "North Korea Standard Time": "Asia/Pyongyang",
    "Korea Standard Time": "Asia/Seoul",
    "Yakutsk Standard Time": "Asia/Yakutsk",
    "Cen. Australia Standard Time": "Australia/Adelaide",
    "AUS Central Standard Time": "Australia/Darwin",
    "E. Australia Standard Time": "Australia/Brisbane",
    "AUS Eastern Standard Time": "Australia/Sydney",
    "West Pacific Standard Time": "Pacific/Port_Moresby",
    "Tasmania Standard Time": "Australia/Hobart",
    "Vladivostok Standard Time": "Asia/Vladivostok",
    "Lord Howe Standard Time": "Australia/Lord_Howe",
    "Bougainville Standard Time": "Pacific/Bougainville",
    "Russia Time Zone 10": "Asia/Srednekolymsk",
    "Magadan Standard Time": "Asia/Magadan",
    "Norfolk Standard Time": "Pacific/Norfolk",
    "Sakhalin Standard Time": "Asia/Sakhalin",
    "Central Pacific Standard Time": "Pacific/Guadalcanal",
    "Russia Time Zone 11": "Asia/Kamchatka",
    "New Zealand Standard Time": "Pacific/Auckland",
    "UTC+12": "Etc/GMT-12",
    "Fiji Standard Time": "Pacific/Fiji",
    "Chatham Islands Standard Time": "Pacific/Chatham",
    "UTC+13": "Etc/GMT-13",
    "Tonga Standard Time": "Pacific/Tongatapu",
    "Samoa Standard Time": "Pacific/Apia",
    "Line Islands Standard Time": "Pacific/Kiritimati",
}
IANA_TO_WINDOWS: Final[dict[str, str]] = {v: k for k, v in WINDOWS_TO_IANA.items()}
_WINDOWS_LOWER: Final = {k.lower(): v for k, v in WINDOWS_TO_IANA.items()}

# Outlook's own spellings of zones it could not name otherwise.
_OUTLOOK_UTC: Final = frozenset({"tzone://microsoft/utc", "utc", "etc/utc", "gmt", "etc/gmt", "z"})
_OUTLOOK_CUSTOM: Final = "tzone://microsoft/custom"

_GRAPH_DT = re.compile(r"^(\d{4}-\d{2}-\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?)?(Z|[+-]\d{2}:?\d{2})?$")


class TimeConversionError(ValueError):
    """A date-time or zone that cannot be interpreted."""


def canonical_zone_name(name: str | None) -> str | None:
    """The canonical `time_zone` for a name Graph or Salesforce gives: IANA when known,
    "UTC" for the UTC spellings, None for Outlook's legacy custom zones (no name to keep),
    else the name as given (an unknown Windows zone is still worth writing back)."""
    if not name or not name.strip():
        return None
    n = name.strip()
    low = n.lower()
    if low in _OUTLOOK_UTC:
        return "UTC"
    if low == _OUTLOOK_CUSTOM:
        return None
    if low in _WINDOWS_LOWER:
        return _WINDOWS_LOWER[low]
    return n


@lru_cache(maxsize=512)
def zone_of(name: str | None) -> ZoneInfo | None:
    """The ZoneInfo for a Windows or IANA name, None when unknown."""
    canon = canonical_zone_name(name)
    if canon is None:
        return None
    if canon == "UTC":
        return ZoneInfo("UTC")
    try:
        return ZoneInfo(canon)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def graph_zone_name(name: str | None) -> str:
    """The zone name to write to Graph for a canonical `time_zone`: the Windows name when it
    maps back to the very same IANA zone (what Outlook shows natively), else the name itself
    (Graph also accepts IANA names, and an unknown name came from Graph in the first place).
    Absent -> "UTC"."""
    canon = canonical_zone_name(name)
    if canon is None:
        return "UTC"
    return IANA_TO_WINDOWS.get(canon, canon)


# --- instants -----------------------------------------------------------------------------


def format_instant(dt: datetime) -> str:
    """Canonical UTC instant, second precision."""
    if dt.tzinfo is None:
        raise TimeConversionError("naive datetime cannot be an instant")
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_instant(text: str) -> datetime:
    """Parse a canonical instant or any ISO-8601 date-time with Z/offset (naive = UTC);
    fractions of a second are dropped, since canonical instants have second precision."""
    m = _GRAPH_DT.match(text.strip())
    if not m or m.group(2) is None:
        raise TimeConversionError(f"not a date-time: {text!r}")
    day, hh, mm, ss, _frac, tz = m.groups()
    dt = datetime.fromisoformat(f"{day}T{hh}:{mm}:{ss or '00'}").replace(tzinfo=UTC)
    if tz and tz != "Z":
        sign = 1 if tz[0] == "+" else -1
        digits = tz[1:].replace(":", "")
        dt -= sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
    return dt


def normalise_instant(text: str | None) -> str | None:
    """Any ISO date-time string -> canonical UTC instant ("2026-01-05T09:00:00.000+0000" ->
    "2026-01-05T09:00:00Z"); None/"" -> None."""
    if not text:
        return None
    return format_instant(parse_instant(text))


def parse_wall(text: str) -> datetime:
    """A Graph `dateTime` ("2026-01-05T09:00:00.0000000", no offset) as a naive wall time."""
    m = _GRAPH_DT.match(text.strip())
    if not m:
        raise TimeConversionError(f"not a date-time: {text!r}")
    day, hh, mm, ss, _frac, _tz = m.groups()
    return datetime.fromisoformat(f"{day}T{hh or '00'}:{mm or '00'}:{ss or '00'}")


def format_wall(dt: datetime) -> str:
    """Graph's wire form of a wall time: seven fractional digits, no offset."""
    return dt.strftime("%Y-%m-%dT%H:%M:%S") + ".0000000"


def is_ambiguous(wall: datetime, zone: ZoneInfo) -> bool:
    """True when a wall time occurs twice in `zone` (the repeated hour when DST ends)."""
    a = wall.replace(tzinfo=zone, fold=0)
    b = wall.replace(tzinfo=zone, fold=1)
    return a.utcoffset() != b.utcoffset()


def wall_to_instant(wall: datetime, zone: ZoneInfo) -> datetime:
    """Interpret a wall time in `zone`. A repeated wall time is read as standard time, as
    Windows (.NET TimeZoneInfo) does; a skipped one keeps the offset before the change."""
    dt = wall.replace(tzinfo=zone, fold=0)
    if is_ambiguous(wall, zone):
        alt = wall.replace(tzinfo=zone, fold=1)
        if not alt.dst():
            dt = alt
    return dt.astimezone(UTC)


def instant_to_wall(instant: datetime, zone: ZoneInfo) -> datetime | None:
    """The wall time of an instant in `zone`, or None when that wall time is ambiguous
    (the server's reading of it could be the other occurrence, so the caller writes UTC)."""
    local = instant.astimezone(zone)
    wall = local.replace(tzinfo=None, fold=0)
    if is_ambiguous(wall, zone):
        return None
    return wall


def parse_date(text: str | None) -> date | None:
    if not text:
        return None
    m = _GRAPH_DT.match(text.strip())
    if not m:
        raise TimeConversionError(f"not a date: {text!r}")
    return date.fromisoformat(m.group(1))


# --- recurrence -------------------------------------------------------------------------------
# The canonical `recurrence` is Graph's patternedRecurrence with only the keys that mean
# something for its pattern type and no zero/default values, so that Graph (which returns
# every key) and Salesforce (whose legacy fields hold only the meaningful ones) map to the
# same dict. recurrenceTimeZone is dropped: it is the event's `time_zone`.

WEEKDAYS: Final = ("sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday")
_PATTERN_KEYS: Final[dict[str, tuple[str, ...]]] = {
    "daily": (),
    "weekly": ("daysOfWeek", "firstDayOfWeek"),
    "absoluteMonthly": ("dayOfMonth",),
    "relativeMonthly": ("daysOfWeek", "index"),
    "absoluteYearly": ("dayOfMonth", "month"),
    "relativeYearly": ("daysOfWeek", "index", "month"),
}
_RANGE_TYPES: Final = ("endDate", "noEnd", "numbered")
_NO_DATE: Final = "0001-01-01"  # Graph's "no end date"


def normalise_recurrence(value: object) -> dict[str, Any] | None:
    """Graph patternedRecurrence -> canonical recurrence (see above); None when absent."""
    if not isinstance(value, dict) or not value.get("pattern"):
        return None
    p = value.get("pattern") or {}
    r = value.get("range") or {}
    ptype = str(p.get("type") or "")
    pattern: dict[str, Any] = {"type": ptype, "interval": int(p.get("interval") or 1)}
    keys = _PATTERN_KEYS.get(ptype, ())
    if "daysOfWeek" in keys:
        days = {str(d).lower() for d in p.get("daysOfWeek") or []}
        ordered = [d for d in WEEKDAYS if d in days]
        if ordered:
            pattern["daysOfWeek"] = ordered
    if "firstDayOfWeek" in keys:
        first = str(p.get("firstDayOfWeek") or "sunday").lower()
        if first != "sunday":
            pattern["firstDayOfWeek"] = first
    if "dayOfMonth" in keys and int(p.get("dayOfMonth") or 0):
        pattern["dayOfMonth"] = int(p["dayOfMonth"])
    if "month" in keys and int(p.get("month") or 0):
        pattern["month"] = int(p["month"])
    if "index" in keys:
        pattern["index"] = str(p.get("index") or "first").lower()
    out: dict[str, Any] = {"pattern": pattern}
    rtype = str(r.get("type") or "noEnd")
    rng: dict[str, Any] = {"type": rtype if rtype in _RANGE_TYPES else "noEnd"}
    if r.get("startDate") and r["startDate"] != _NO_DATE:
        rng["startDate"] = str(r["startDate"])[:10]
    if rng["type"] == "endDate" and r.get("endDate") and r["endDate"] != _NO_DATE:
        rng["endDate"] = str(r["endDate"])[:10]
    if rng["type"] == "numbered" and int(r.get("numberOfOccurrences") or 0) > 0:
        rng["numberOfOccurrences"] = int(r["numberOfOccurrences"])
    out["range"] = rng
    return out


_INDEX: Final = {"first": 0, "second": 1, "third": 2, "fourth": 3, "last": -1}
_MAX_STEPS: Final = 100_000


def _py_weekday(name: str) -> int:
    return (WEEKDAYS.index(name) - 1) % 7  # Python counts from Monday=0, Graph's list from Sunday


def _nth_weekday(year: int, month: int, weekdays: list[int], index: str) -> date | None:
    days = [d for d in (date(year, month, 1) + timedelta(days=i) for i in range(31))
            if d.month == month and d.weekday() in weekdays]
    i = _INDEX.get(index, 0)
    return days[i] if days and -len(days) <= i < len(days) else None


def _month_day(year: int, month: int, day: int) -> date:
    # Day 31 in a 30-day month falls on the month's last day, as Outlook does.
    nxt = date(year + month // 12, month % 12 + 1, 1)
    return date(year, month, min(day, (nxt - timedelta(days=1)).day))


def occurrence_dates(recurrence: dict[str, Any]) -> Iterator[date]:
    """The dates of a canonical recurrence's occurrences, from its startDate on, ignoring
    the range's end (an iterator; the caller stops)."""
    p, start = recurrence["pattern"], date.fromisoformat(recurrence["range"]["startDate"])
    ptype, interval = p["type"], max(1, int(p.get("interval") or 1))
    weekdays = [_py_weekday(d) for d in p.get("daysOfWeek") or []] or [start.weekday()]
    steps = 0
    if ptype == "daily":
        d = start
        while True:
            yield d
            d += timedelta(days=interval)
    elif ptype == "weekly":
        first = _py_weekday(p.get("firstDayOfWeek") or "sunday")
        week = start - timedelta(days=(start.weekday() - first) % 7)
        while steps < _MAX_STEPS:
            for wd in sorted(weekdays, key=lambda w: (w - first) % 7):
                d = week + timedelta(days=(wd - first) % 7)
                if d >= start:
                    yield d
            week += timedelta(weeks=interval)
            steps += 1
    elif ptype in ("absoluteMonthly", "relativeMonthly", "absoluteYearly", "relativeYearly"):
        yearly = ptype.endswith("Yearly")
        y, m = start.year, int(p.get("month") or start.month) if yearly else start.month
        while steps < _MAX_STEPS:
            if ptype.startswith("absolute"):
                cand: date | None = _month_day(y, m, int(p.get("dayOfMonth") or start.day))
            else:
                cand = _nth_weekday(y, m, weekdays, str(p.get("index") or "first"))
            if cand is not None and cand >= start:
                yield cand
            if yearly:
                y += interval
            else:
                m += interval
                y, m = y + (m - 1) // 12, (m - 1) % 12 + 1
            steps += 1


def last_occurrence_date(recurrence: dict[str, Any]) -> str | None:
    """The date of the last occurrence of a "numbered" series (Salesforce's legacy
    recurrence has an end date but no occurrence count)."""
    r = normalise_recurrence(recurrence)
    if r is None or r["range"]["type"] != "numbered" or "startDate" not in r["range"]:
        return None
    count = int(r["range"].get("numberOfOccurrences") or 0)
    last = None
    for i, d in enumerate(occurrence_dates(r)):
        last = d
        if i + 1 >= count:
            break
    return last.isoformat() if last else None
