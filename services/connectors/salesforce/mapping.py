"""Salesforce REST records and CDC payloads <-> exsf canonical records (core/records.py).

Each entity is a table of field groups: canonical names, the flat sObject fields that hold
them, and pure read/write functions. Groups with several fields exist because some values
only make sense together (an event's start, end, all-day flag and duration; the legacy
Recurrence* fields; a Contact's required LastName). CDC payloads nest compound fields
(`Name.LastName`, `MailingAddress.City`); they are flattened to the REST names first, so
one table serves REST and CDC.

Salesforce has no time-zone field on Event. The canonical `time_zone` is read from a custom
field when the org has one (pass its name as `time_zone_field`) and, for recurring events,
from RecurrenceTimeZoneSidKey; otherwise it is absent on this side.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Final

from services.connectors.exchange import timezones as tz
from services.connectors.mapping_errors import MappingError, mapping_errors
from services.core.records import FIELDS, canonical, normalise_email, not_stored_by_salesforce

Record = dict[str, Any]

SOBJECTS: Final[dict[str, str]] = {"contact": "Contact", "event": "Event", "task": "Task", "email": "Task"}
DESCRIPTION_LIMIT: Final = 32000
SUBJECT_LIMIT: Final = 255
EMAIL_SUBJECT_PREFIX: Final = "Email: "
# Contact.LastName is required; a contact without one gets this (or "(<email>)").
UNKNOWN_LAST_NAME: Final = "(unknown)"
LAST_NAME_LIMIT: Final = 80

# CDC nests compound fields: nest -> {component: flat REST field}.
COMPOUNDS: Final[dict[str, dict[str, dict[str, str]]]] = {
    "Contact": {
        "Name": {"Salutation": "Salutation", "FirstName": "FirstName", "LastName": "LastName"},
        "MailingAddress": {"Street": "MailingStreet", "City": "MailingCity", "State": "MailingState",
                           "PostalCode": "MailingPostalCode", "Country": "MailingCountry"},
    },
}


# Canonical values of Salesforce checkboxes, for CDC CREATE/UNDELETE bodies that omit them.
CREATE_DEFAULTS: Final[dict[str, dict[str, Any]]] = {"event": {"is_private": False}}




@dataclass(frozen=True, slots=True)
class Ctx:
    time_zone_field: str | None = None
    # CDC UPDATE bodies hold only changed fields: derive nothing from absent ones.
    partial: bool = False
    # All-day flag known from elsewhere (the link's base), for CDC updates that move an
    # event without touching IsAllDayEvent.
    is_all_day: bool | None = None


Reader = Callable[[Mapping[str, Any], Ctx], Record]
Writer = Callable[[Mapping[str, Any], Ctx], Record]


@dataclass(frozen=True, slots=True)
class Group:
    names: tuple[str, ...]  # canonical fields ("" groups with no names are create-only constants)
    fields: tuple[str, ...]  # sObject fields read
    read: Reader
    write: Writer  # canonical -> {sObject field: value}; None = empty
    clears: Mapping[str, Any] = field(default_factory=dict)  # what a clear sends instead of null
    # Other canonical fields the written values derive from: a patch changing one of them
    # rewrites this group too (when it holds a value).
    depends: tuple[str, ...] = ()


# --- values ---------------------------------------------------------------------------------------


def _text(v: Any) -> str | None:
    if v is None:
        return None
    s = str(v)
    return s if s != "" else None


def _long_text(v: Any) -> str | None:
    """Description: LF line ends, no trailing blanks (as the Exchange side's body)."""
    s = _text(v)
    if s is None:
        return None
    return s.replace("\r\n", "\n").replace("\r", "\n").rstrip() or None


def sf_datetime(instant: str) -> str:
    """Canonical instant -> Salesforce REST date-time."""
    return tz.parse_instant(instant).strftime("%Y-%m-%dT%H:%M:%S.000+0000")


def _midnight(day: date) -> str:
    return datetime.combine(day, time(), UTC).strftime("%Y-%m-%dT%H:%M:%S.000+0000")


def _day(v: Any) -> date | None:
    s = _text(v)
    return date.fromisoformat(s[:10]) if s else None


def _scalar(name: str, sf: str, to_c: Callable[[Any], Any] = _text, to_w: Callable[[Any], Any] = lambda v: v,
            clear: Any = None) -> Group:
    def read(rec: Mapping[str, Any], ctx: Ctx) -> Record:
        return {name: to_c(rec.get(sf))}

    def write(rec: Mapping[str, Any], ctx: Ctx) -> Record:
        v = rec.get(name)
        return {sf: None if v is None else to_w(v)}

    return Group((name,), (sf,), read, write, {sf: clear} if clear is not None else {})


def _enum(name: str, sf: str, to_c: Mapping[str, str], clear: str) -> Group:
    low = {k.lower(): v for k, v in to_c.items()}
    to_w = {v: k for k, v in to_c.items()}
    return _scalar(name, sf, lambda v: low.get(str(v).lower()) if v is not None else None, lambda v: to_w.get(v), clear)


def _bool(name: str, sf: str) -> Group:
    return _scalar(name, sf, lambda v: None if v is None else bool(v), bool, False)


def _description(name: str = "body") -> Group:
    return _scalar(name, "Description", _long_text, lambda v: str(v)[:DESCRIPTION_LIMIT])


# --- contact --------------------------------------------------------------------------------------


def placeholder_last_name(email: str | None) -> str:
    """The LastName written for a contact that has none (Salesforce requires one): the
    email in parentheses, or "(unknown)". Read back as no family name, so the placeholder
    never travels to Exchange."""
    e = normalise_email(email)
    if not e:
        return UNKNOWN_LAST_NAME
    return f"({e[: LAST_NAME_LIMIT - 2]})"


def is_placeholder_last_name(value: str | None) -> bool:
    return value == UNKNOWN_LAST_NAME or bool(value and re.fullmatch(r"\([^()\s]+@[^()\s]*\)", value))


def _read_last_name(rec: Mapping[str, Any], ctx: Ctx) -> Record:
    v = _text(rec.get("LastName"))
    return {"family_name": None if is_placeholder_last_name(v) else v}


def _write_last_name(rec: Mapping[str, Any], ctx: Ctx) -> Record:
    return {"LastName": _text(rec.get("family_name")) or placeholder_last_name(rec.get("email"))}


CONTACT: Final[tuple[Group, ...]] = (
    _scalar("salutation", "Salutation"),
    _scalar("given_name", "FirstName"),
    Group(("family_name",), ("LastName",), _read_last_name, _write_last_name),
    _scalar("email", "Email", lambda v: normalise_email(_text(v)), lambda v: normalise_email(v)),
    _scalar("business_phone", "Phone"),
    _scalar("mobile_phone", "MobilePhone"),
    _scalar("home_phone", "HomePhone"),
    _scalar("job_title", "Title"),
    _scalar("department", "Department"),
    _scalar("street", "MailingStreet", _long_text),
    _scalar("city", "MailingCity"),
    _scalar("state", "MailingState"),
    _scalar("postal_code", "MailingPostalCode"),
    _scalar("country", "MailingCountry"),
    _description("notes"),
)


# --- event ----------------------------------------------------------------------------------------

SHOW_AS: Final = {"Busy": "busy", "Free": "free", "OutOfOffice": "oof"}
_TIME_FIELDS: Final = ("IsAllDayEvent", "StartDateTime", "EndDateTime", "ActivityDate", "ActivityDateTime",
                       "DurationInMinutes")


def _is_midnight(v: Any) -> bool:
    s = _text(v)
    return bool(s) and tz.parse_instant(str(s)).time() == time()


def _all_day_of(rec: Mapping[str, Any], ctx: Ctx) -> bool | None:
    if "IsAllDayEvent" in rec and rec["IsAllDayEvent"] is not None:
        return bool(rec["IsAllDayEvent"])
    if ctx.is_all_day is not None:
        return ctx.is_all_day
    if not any(rec.get(f) for f in _TIME_FIELDS):
        return None
    # Not said and not known: all-day events sit at midnight GMT for whole days.
    dur = rec.get("DurationInMinutes")
    stamps = [rec[f] for f in ("StartDateTime", "EndDateTime", "ActivityDateTime") if rec.get(f)]
    return all(_is_midnight(s) for s in stamps) and (dur is None or int(dur) % 1440 == 0)


def _read_event_time(rec: Mapping[str, Any], ctx: Ctx) -> Record:
    all_day = _all_day_of(rec, ctx)
    out: Record = {}
    if all_day is None:
        return out
    if "IsAllDayEvent" in rec or not ctx.partial:
        out["is_all_day"] = all_day
    dur = rec.get("DurationInMinutes")
    if all_day:
        first = _day(rec.get("ActivityDate")) or _day(rec.get("StartDateTime")) or _day(rec.get("ActivityDateTime"))
        if first:
            out["start"] = first.isoformat()
        last = _day(rec.get("EndDateTime"))
        if last is not None:
            out["end"] = (last + timedelta(days=1)).isoformat()  # canonical ends are exclusive
        elif first is not None and (dur is not None or not ctx.partial):
            out["end"] = (first + timedelta(days=max(1, int(dur or 1440) // 1440))).isoformat()
        return out
    start = _text(rec.get("StartDateTime")) or _text(rec.get("ActivityDateTime"))
    if start:
        out["start"] = tz.normalise_instant(start)
    end = _text(rec.get("EndDateTime"))
    if end:
        out["end"] = tz.normalise_instant(end)
    elif start and dur is not None:
        out["end"] = tz.format_instant(tz.parse_instant(start) + timedelta(minutes=int(dur)))
    return out


def _write_event_time(rec: Mapping[str, Any], ctx: Ctx) -> Record:
    start, end = _text(rec.get("start")), _text(rec.get("end"))
    if not start:
        return {}
    if rec.get("is_all_day"):
        first = date.fromisoformat(start[:10])
        days = max(1, (date.fromisoformat(end[:10]) - first).days) if end else 1
        return {"IsAllDayEvent": True, "ActivityDate": first.isoformat(), "StartDateTime": _midnight(first),
                "EndDateTime": _midnight(first + timedelta(days=days - 1)), "DurationInMinutes": days * 1440}
    out: Record = {"IsAllDayEvent": False, "StartDateTime": sf_datetime(start)}
    if end:
        # End and duration together: a start-only change must not let Salesforce keep the
        # old duration and move the end.
        out["EndDateTime"] = sf_datetime(end)
        minutes = (tz.parse_instant(end) - tz.parse_instant(start)) // timedelta(minutes=1)
        out["DurationInMinutes"] = minutes
    return out


def _read_time_zone(rec: Mapping[str, Any], ctx: Ctx) -> Record:
    name = _text(rec.get(ctx.time_zone_field)) if ctx.time_zone_field else None
    if name is None and rec.get("IsRecurrence") is not False:
        name = _text(rec.get("RecurrenceTimeZoneSidKey"))
    if name is None:
        return {}
    return {"time_zone": tz.canonical_zone_name(name)}


def _write_time_zone(rec: Mapping[str, Any], ctx: Ctx) -> Record:
    if not ctx.time_zone_field:
        return {}
    return {ctx.time_zone_field: _text(rec.get("time_zone"))}


# Legacy recurrence: RecurrenceDayOfWeekMask bits Sunday=1 ... Saturday=64.
_DAY_BITS: Final = {d: 1 << i for i, d in enumerate(tz.WEEKDAYS)}
_INSTANCES: Final = {"First": "first", "Second": "second", "Third": "third", "Fourth": "fourth", "Last": "last"}
_MONTHS: Final = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
                  "November", "December")
_TO_GRAPH_TYPE: Final = {"RecursDaily": "daily", "RecursEveryWeekday": "weekly", "RecursWeekly": "weekly",
                         "RecursMonthly": "absoluteMonthly", "RecursMonthlyNth": "relativeMonthly",
                         "RecursYearly": "absoluteYearly", "RecursYearlyNth": "relativeYearly"}
_TO_SF_TYPE: Final = {"daily": "RecursDaily", "weekly": "RecursWeekly", "absoluteMonthly": "RecursMonthly",
                      "relativeMonthly": "RecursMonthlyNth", "absoluteYearly": "RecursYearly",
                      "relativeYearly": "RecursYearlyNth"}
_RECURRENCE_FIELDS: Final = ("IsRecurrence", "RecurrenceType", "RecurrenceInterval", "RecurrenceDayOfWeekMask",
                             "RecurrenceDayOfMonth", "RecurrenceInstance", "RecurrenceMonthOfYear",
                             "RecurrenceStartDateTime", "RecurrenceEndDateOnly", "RecurrenceTimeZoneSidKey")


def _days_of(mask: Any) -> list[str]:
    m = int(mask or 0)
    return [d for d, bit in _DAY_BITS.items() if m & bit]


def _mask_of(days: Iterable[str]) -> int:
    return sum(_DAY_BITS.get(str(d).lower(), 0) for d in days)


def _zone_for(rec: Mapping[str, Any], ctx: Ctx) -> Any:
    name = _text(rec.get("RecurrenceTimeZoneSidKey")) or (
        _text(rec.get(ctx.time_zone_field)) if ctx.time_zone_field else None)
    return tz.zone_of(name) if name else None


def _read_recurrence(rec: Mapping[str, Any], ctx: Ctx) -> Record:
    rtype = _text(rec.get("RecurrenceType"))
    if not rec.get("IsRecurrence") or rtype not in _TO_GRAPH_TYPE:
        return {"recurrence": None}
    pattern: Record = {"type": _TO_GRAPH_TYPE[rtype], "interval": int(rec.get("RecurrenceInterval") or 1)}
    if rtype == "RecursEveryWeekday":
        pattern.update(interval=1, daysOfWeek=["monday", "tuesday", "wednesday", "thursday", "friday"])
    else:
        pattern["daysOfWeek"] = _days_of(rec.get("RecurrenceDayOfWeekMask"))
        pattern["dayOfMonth"] = int(rec.get("RecurrenceDayOfMonth") or 0)
        pattern["index"] = _INSTANCES.get(str(rec.get("RecurrenceInstance") or "First"), "first")
        month = _text(rec.get("RecurrenceMonthOfYear"))
        pattern["month"] = _MONTHS.index(month) + 1 if month in _MONTHS else 0
    rng: Record = {"type": "noEnd"}
    start = _text(rec.get("RecurrenceStartDateTime"))
    if start:
        instant = tz.parse_instant(start)
        zone = _zone_for(rec, ctx)
        # The series' first day is a date in the organiser's zone; all-day series start at midnight GMT.
        local = instant if rec.get("IsAllDayEvent") or zone is None else instant.astimezone(zone)
        rng["startDate"] = local.date().isoformat()
    if _text(rec.get("RecurrenceEndDateOnly")):
        rng.update(type="endDate", endDate=str(rec["RecurrenceEndDateOnly"])[:10])
    return {"recurrence": tz.normalise_recurrence({"pattern": pattern, "range": rng})}


def _recurrence_start(rec: Mapping[str, Any], start_date: str | None) -> str | None:
    """RecurrenceStartDateTime: the series' first day at the event's local start time."""
    start = _text(rec.get("start"))
    if not start_date and not start:
        return None
    if rec.get("is_all_day") or not start:
        return _midnight(date.fromisoformat((start_date or start or "")[:10]))
    instant = tz.parse_instant(start)
    zone = tz.zone_of(rec.get("time_zone")) or tz.zone_of("UTC")
    assert zone is not None
    wall = instant.astimezone(zone).replace(tzinfo=None)
    if start_date:
        wall = datetime.combine(date.fromisoformat(start_date), wall.time())
    return sf_datetime(tz.format_instant(tz.wall_to_instant(wall, zone)))


def _write_recurrence(rec: Mapping[str, Any], ctx: Ctx) -> Record:
    r = tz.normalise_recurrence(rec.get("recurrence"))
    if r is None or r["pattern"]["type"] not in _TO_SF_TYPE:
        return {"IsRecurrence": None if r is None else False, **{f: None for f in _RECURRENCE_FIELDS[1:]}}
    p, rng = r["pattern"], r["range"]
    ptype = p["type"]
    zone_name = tz.canonical_zone_name(_text(rec.get("time_zone"))) or "UTC"
    out: Record = {f: None for f in _RECURRENCE_FIELDS}
    out.update(
        IsRecurrence=True,
        RecurrenceType=_TO_SF_TYPE[ptype],
        RecurrenceStartDateTime=_recurrence_start(rec, rng.get("startDate")),
        # A numbered series ends on its last occurrence; it reads back as an endDate range.
        RecurrenceEndDateOnly=rng.get("endDate") or tz.last_occurrence_date(r),
        # Salesforce TimeZoneSidKey values are IANA names, and "GMT" for UTC.
        RecurrenceTimeZoneSidKey="GMT" if zone_name == "UTC" else zone_name,
    )
    if ptype not in ("absoluteYearly", "relativeYearly"):
        out["RecurrenceInterval"] = p.get("interval", 1)
    if p.get("daysOfWeek"):
        out["RecurrenceDayOfWeekMask"] = _mask_of(p["daysOfWeek"])
    if p.get("dayOfMonth"):
        out["RecurrenceDayOfMonth"] = p["dayOfMonth"]
    if "index" in p:
        out["RecurrenceInstance"] = {v: k for k, v in _INSTANCES.items()}.get(p["index"], "First")
    if p.get("month"):
        out["RecurrenceMonthOfYear"] = _MONTHS[int(p["month"]) - 1]
    return out


EVENT: Final[tuple[Group, ...]] = (
    _scalar("subject", "Subject", to_w=lambda v: str(v)[:SUBJECT_LIMIT]),
    _description(),
    Group(("start", "end", "is_all_day"), _TIME_FIELDS, _read_event_time, _write_event_time),
    Group(("time_zone",), ("RecurrenceTimeZoneSidKey",), _read_time_zone, _write_time_zone),
    _scalar("location", "Location"),
    _enum("show_as", "ShowAs", SHOW_AS, "Busy"),
    _bool("is_private", "IsPrivate"),
    # RecurrenceStartDateTime and the zone key follow the event's start, all-day flag and zone.
    Group(("recurrence",), _RECURRENCE_FIELDS, _read_recurrence, _write_recurrence, {"IsRecurrence": False},
          depends=("start", "is_all_day", "time_zone")),
)


# --- task -----------------------------------------------------------------------------------------

TASK_STATUS: Final = {"Not Started": "not_started", "In Progress": "in_progress", "Completed": "completed",
                      "Waiting on someone else": "waiting", "Deferred": "deferred"}
PRIORITY: Final = {"High": "high", "Normal": "normal", "Low": "low"}

TASK: Final[tuple[Group, ...]] = (
    _scalar("subject", "Subject", to_w=lambda v: str(v)[:SUBJECT_LIMIT]),
    _description(),
    _enum("status", "Status", TASK_STATUS, "Not Started"),
    _enum("priority", "Priority", PRIORITY, "Normal"),
    _scalar("due_date", "ActivityDate", lambda v: _text(v) and str(v)[:10]),
)


# --- email -> completed Task ----------------------------------------------------------------------


def _read_email_subject(rec: Mapping[str, Any], ctx: Ctx) -> Record:
    s = _text(rec.get("Subject"))
    if s and s.startswith(EMAIL_SUBJECT_PREFIX):
        s = s[len(EMAIL_SUBJECT_PREFIX):] or None
    return {"subject": s}


def _write_email_subject(rec: Mapping[str, Any], ctx: Ctx) -> Record:
    return {"Subject": (EMAIL_SUBJECT_PREFIX + (_text(rec.get("subject")) or ""))[:SUBJECT_LIMIT]}


def _write_sent(rec: Mapping[str, Any], ctx: Ctx) -> Record:
    sent = _text(rec.get("sent_at"))
    return {"ActivityDate": tz.parse_instant(sent).date().isoformat() if sent else None}


EMAIL_TASK_CONSTANTS: Final = {"Status": "Completed", "TaskSubtype": "Email", "Priority": "Normal"}

EMAIL: Final[tuple[Group, ...]] = (
    Group(("subject",), ("Subject",), _read_email_subject, _write_email_subject),
    _description(),
    # The Task keeps the sent day only; the instant stays on the Exchange side.
    Group(("sent_at",), (), lambda rec, ctx: {}, _write_sent),
    Group((), (), lambda rec, ctx: {}, lambda rec, ctx: dict(EMAIL_TASK_CONSTANTS)),
)

TABLES: Final[dict[str, tuple[Group, ...]]] = {"contact": CONTACT, "event": EVENT, "task": TASK, "email": EMAIL}


def _table(entity: str) -> tuple[Group, ...]:
    try:
        return TABLES[entity]
    except KeyError:
        raise MappingError(f"unknown entity {entity!r}") from None


# --- public API -----------------------------------------------------------------------------------


def sobject_for(entity: str) -> str:
    """The sObject an entity is stored as (emails become Tasks)."""
    try:
        return SOBJECTS[entity]
    except KeyError:
        raise MappingError(f"unknown entity {entity!r}") from None


def sf_fields(entity: str, *, time_zone_field: str | None = None) -> list[str]:
    """The sObject fields `sf_to_canonical` reads, in table order (for SOQL and GET ?fields=)."""
    names: list[str] = []
    for g in _table(entity):
        extra = (time_zone_field,) if time_zone_field and "time_zone" in g.names else ()
        for f in (*g.fields, *extra):
            if f not in names:
                names.append(f)
    return names


@mapping_errors
def sf_to_canonical(entity: str, record: Mapping[str, Any], *, time_zone_field: str | None = None) -> Record:
    """A REST record (flat fields, "attributes" ignored) as a canonical record, empties dropped."""
    ctx = Ctx(time_zone_field=time_zone_field)
    out: Record = {}
    for g in _table(entity):
        out.update(g.read(record, ctx))
    return canonical(entity, out)


def flatten_cdc(sobject: str, payload: Mapping[str, Any]) -> Record:
    """A CDC body with compound nests replaced by the flat REST field names."""
    nests = COMPOUNDS.get(sobject, {})
    flat: Record = {}
    for key, value in payload.items():
        if key == "ChangeEventHeader":
            continue
        if key in nests and isinstance(value, Mapping):
            for comp, v in value.items():
                if comp in nests[key]:
                    flat[nests[key][comp]] = v
        else:
            flat[key] = value
    return flat


def _flat_name(sobject: str, dotted: str) -> str:
    nest, _, comp = dotted.partition(".")
    if comp:
        return COMPOUNDS.get(sobject, {}).get(nest, {}).get(comp, dotted)
    return dotted


@mapping_errors
def cdc_to_canonical(entity: str, payload: Mapping[str, Any], *, time_zone_field: str | None = None,
                     is_all_day: bool | None = None) -> tuple[Record, list[str]]:
    """A CDC payload (`data.payload`, with ChangeEventHeader) as (canonical fields present,
    canonical names that changed).

    CREATE/UNDELETE: every non-empty mapped field; all of them count as changed.
    UPDATE: only fields the event carries; a field set to null is in the record as None and
    in the changed list (so the reconciler clears it). DELETE and GAP_* events carry no
    fields: ({}, []) - the caller re-reads the record over REST. `is_all_day` is the event's
    all-day flag as last known, for updates that move an event without IsAllDayEvent."""
    header = payload.get("ChangeEventHeader") or {}
    change = str(header.get("changeType") or "")
    if change not in ("CREATE", "UPDATE", "UNDELETE"):
        return {}, []
    sobject = sobject_for(entity)
    flat = flatten_cdc(sobject, payload)
    update = change == "UPDATE"
    ctx = Ctx(time_zone_field=time_zone_field, partial=update, is_all_day=is_all_day)
    record: Record = {}
    for g in _table(entity):
        fields = g.fields + ((time_zone_field,) if time_zone_field and "time_zone" in g.names else ())
        if g.names and any(f in flat for f in fields):
            record.update(g.read(flat, ctx))
    if not update:
        # CREATE bodies leave out empty fields; for a checkbox "empty" can only mean false.
        record = canonical(entity, {**CREATE_DEFAULTS.get(entity, {}), **record})
        return record, list(record)
    listed = [_flat_name(sobject, str(n)) for n in header.get("changedFields") or []]
    changed_sf = set(listed) if listed else set(flat)
    if time_zone_field and time_zone_field in changed_sf:
        changed_sf.add("RecurrenceTimeZoneSidKey")
    changed = {n for g in _table(entity) if changed_sf.intersection(g.fields) for n in g.names if n in record}
    order = FIELDS[entity]
    names = [n for n in order if n in changed]
    # Unchanged fields that came along (enrichment) keep their values; empties among them go.
    return {n: v for n, v in record.items() if n in changed or v not in (None, "", [])}, names


def _is_empty(v: Any) -> bool:
    return v is None or v == ""


@mapping_errors
def canonical_to_sf(entity: str, record: Mapping[str, Any], *, time_zone_field: str | None = None,
                    include_empty: bool = False) -> Record:
    """The full sObject body for create (or upsert). Empty fields are left out, or sent as
    null with `include_empty` so an upsert that updates clears them. Contact.LastName is
    never empty: see `placeholder_last_name`. Email: a completed Task of subtype Email
    (WhoId is the writer's business)."""
    ctx = Ctx(time_zone_field=time_zone_field)
    body: Record = {}
    for g in _table(entity):
        for f, v in g.write(record, ctx).items():
            if not _is_empty(v):
                body[f] = v
            elif include_empty:
                body[f] = g.clears.get(f)
    return body


def _touched(g: Group, changed: set[str], record: Mapping[str, Any]) -> bool:
    if not changed.isdisjoint(g.names):
        return True
    return not changed.isdisjoint(g.depends) and any(record.get(n) not in (None, "") for n in g.names)


@mapping_errors
def canonical_patch_to_sf(entity: str, changed: Mapping[str, Any], record: Mapping[str, Any] | None = None, *,
                          time_zone_field: str | None = None) -> Record:
    """The PATCH body for the changed canonical fields (name -> new value, None clears).
    `record`, the full new canonical record, supplies what related fields need: moving an
    event's start also sends its end and all-day flag; clearing a family name writes the
    LastName placeholder from the email."""
    unknown = set(changed) - set(FIELDS.get(entity, ()))
    if unknown:
        raise MappingError(f"not canonical {entity} fields: {sorted(unknown)}")
    merged = {**(record or {}), **changed}
    ctx = Ctx(time_zone_field=time_zone_field)
    body: Record = {}
    for g in _table(entity):
        if not g.names or not _touched(g, set(changed), merged):
            continue
        for f, v in g.write(merged, ctx).items():
            body[f] = g.clears.get(f) if _is_empty(v) else v
    return body


def _header(record: Mapping[str, Any]) -> Mapping[str, Any] | None:
    if isinstance(record.get("ChangeEventHeader"), Mapping):
        return record["ChangeEventHeader"]
    if "commitTimestamp" in record:
        return record
    return None


def _ms_instant(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def version_of(record: Mapping[str, Any]) -> str | None:
    """REST: SystemModstamp (else LastModifiedDate) as a UTC instant with milliseconds
    ("2026-01-05T09:00:00.000Z").
    CDC (payload or header): "<commitTimestamp>:<commitNumber>"."""
    h = _header(record)
    if h is not None:
        return f"{h.get('commitTimestamp')}:{h.get('commitNumber')}"
    stamp = _text(record.get("SystemModstamp")) or _text(record.get("LastModifiedDate"))
    if not stamp:
        return None
    m = re.match(r"^(.*T\d{2}:\d{2}:\d{2})(?:\.(\d+))?(.*)$", stamp)
    dt = tz.parse_instant(stamp)
    if m and m.group(2):
        dt = dt.replace(microsecond=int(m.group(2)[:3].ljust(3, "0")) * 1000)
    return _ms_instant(dt)


def modified_at_of(record_or_header: Mapping[str, Any]) -> str | None:
    """When the record last changed, as a canonical UTC instant: the CDC commitTimestamp,
    else LastModifiedDate, else SystemModstamp."""
    h = _header(record_or_header)
    if h is not None and h.get("commitTimestamp") is not None:
        return tz.format_instant(datetime.fromtimestamp(int(h["commitTimestamp"]) / 1000, UTC))
    return tz.normalise_instant(_text(record_or_header.get("LastModifiedDate"))
                                or _text(record_or_header.get("SystemModstamp")))


# What this side cannot hold lives in services/core/records (the reconciler needs it too).
fields_not_stored = not_stored_by_salesforce


def is_email_task(record: Mapping[str, Any]) -> bool:
    """A Task that stands for an email (not a to-do): never synced back to To Do."""
    return str(record.get("TaskSubtype") or "") in ("Email", "ListEmail")


def is_series_occurrence(record: Mapping[str, Any]) -> bool:
    """An occurrence Salesforce generated from a recurring Event: the series master
    (IsRecurrence true) is what syncs, its occurrences are not separate items."""
    return bool(record.get("RecurrenceActivityId")) and not record.get("IsRecurrence")


def owner_of(record: Mapping[str, Any]) -> str | None:
    """OwnerId (REST records, CDC CREATE/UNDELETE bodies, and UPDATEs that change it)."""
    return _text(record.get("OwnerId"))
