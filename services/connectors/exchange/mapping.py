"""Graph JSON (camelCase dicts as on the wire) <-> exsf canonical records (core/records.py).

Each entity is a table of field groups. A group covers one or more canonical fields and
the top-level Graph properties that hold them; it exists because Graph properties are
written whole (an address, the emailAddresses list, start/end with their zone), so a PATCH
that changes `city` must send the whole businessAddress, and one that moves `start` must
send start, end and isAllDay together. Reading merges every group's canonical fields;
writing merges every group's Graph properties. Pure functions, no I/O.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from html.parser import HTMLParser
from typing import Any, Final

from services.connectors.exchange import timezones as tz
from services.connectors.exchange.models import LINK_PROPERTY_ID
from services.connectors.exchange.models import link_id_of as _models_link_id_of
from services.connectors.exchange.models import with_link_id as _models_with_link_id
from services.connectors.mapping_errors import MappingError, mapping_errors
from services.core.records import FIELDS, canonical, normalise_email

Record = dict[str, Any]

EXSF_LINK_PROPERTY_ID: Final = "String {66f5a359-4659-4830-9070-00047ec6ac6e} Name exsfLinkId"
assert EXSF_LINK_PROPERTY_ID == LINK_PROPERTY_ID  # one id for the client and the mappings




@dataclass(frozen=True, slots=True)
class Ctx:
    """What a group may need besides the item/record itself."""

    # The Graph item being patched: whole-list properties keep their entries beyond the first.
    current: Mapping[str, Any] | None = None
    # The mailbox's zone, for To Do due dates (Graph reports them as UTC instants).
    user_time_zone: str | None = None


Reader = Callable[[Mapping[str, Any], Ctx], Record]
Writer = Callable[[Mapping[str, Any], Ctx], Record]


@dataclass(frozen=True, slots=True)
class Group:
    names: tuple[str, ...]  # canonical fields
    read: Reader  # Graph item -> {canonical name: value}
    write: Writer  # canonical record -> {Graph property: value}; None = empty
    # Graph property -> what a PATCH sends to clear it (default null).
    clears: Mapping[str, Any] = field(default_factory=dict)
    # Other canonical fields the written values derive from: a patch changing one of them
    # rewrites this group too (when it holds a value).
    depends: tuple[str, ...] = ()


# --- value helpers ------------------------------------------------------------------------------


def _text(v: Any) -> str | None:
    if v is None:
        return None
    s = str(v)
    return s if s != "" else None


def _lower(v: Any) -> str | None:
    return normalise_email(_text(v))


def _first(items: Any) -> Any:
    return items[0] if isinstance(items, list) and items else None


def _rest(ctx: Ctx, prop: str) -> list[Any]:
    cur = (ctx.current or {}).get(prop)
    return list(cur[1:]) if isinstance(cur, list) else []


# --- HTML bodies --------------------------------------------------------------------------------

_BLOCK_TAGS: Final = frozenset(
    {"div", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "table", "ul", "ol", "blockquote", "pre", "hr", "body"}
)
_SKIP_TAGS: Final = frozenset({"script", "style", "head", "title"})


class _TextExtractor(HTMLParser):
    """Block elements start a new line (once, however deeply nested), <br> always breaks,
    paragraphs are separated by a blank line: what Outlook shows for its own HTML."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def _soft_break(self) -> None:
        while self.parts and self.parts[-1].endswith(" "):
            self.parts[-1] = self.parts[-1].rstrip(" ")
            if not self.parts[-1]:
                self.parts.pop()
        if self.parts and not self.parts[-1].endswith("\n"):
            self.parts.append("\n")

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP_TAGS:
            self._skip += 1
        elif tag == "br":
            self.parts.append("\n")
        elif tag in _BLOCK_TAGS or tag == "p":
            self._soft_break()
        elif tag in ("td", "th") and self.parts and not self.parts[-1].endswith(("\n", " ")):
            self.parts.append(" ")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "br":
            self.parts.append("\n")
        elif tag in _BLOCK_TAGS:
            self._soft_break()

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP_TAGS:
            self._skip = max(0, self._skip - 1)
        elif tag == "p":
            self._soft_break()
            self.parts.append("\n")
        elif tag in _BLOCK_TAGS:
            self._soft_break()

    def handle_data(self, data: str) -> None:
        if not self._skip:
            # HTML collapses runs of whitespace (incl. source newlines) into one space.
            self.parts.append(re.sub(r"\s+", " ", data))


def html_to_text(markup: str) -> str:
    """Readable plain text of an HTML body: tags dropped, entities unescaped, block
    elements and <br> as line breaks, at most one blank line in a row."""
    p = _TextExtractor()
    p.feed(markup)
    p.close()
    text = html.unescape("".join(p.parts)).replace("\xa0", " ")
    lines = [line.strip() for line in text.split("\n")]
    text = "\n".join(lines)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def normalise_text_body(text: str | None) -> str | None:
    """Canonical body text: LF line ends, no trailing blanks (Exchange and Salesforce both
    rewrite line ends and pad the end, which must not look like an edit)."""
    if text is None:
        return None
    out = text.replace("\r\n", "\n").replace("\r", "\n").rstrip()
    return out or None


def _body_text(body: Any) -> str | None:
    if not isinstance(body, Mapping):
        return None
    content = body.get("content") or ""
    if str(body.get("contentType") or "text").lower() == "html":
        content = html_to_text(content)
    return normalise_text_body(content)


# --- group factories ----------------------------------------------------------------------------


def _scalar(name: str, prop: str, to_c: Callable[[Any], Any] = _text, to_w: Callable[[Any], Any] = lambda v: v,
            clear: Any = None) -> Group:
    def read(item: Mapping[str, Any], ctx: Ctx) -> Record:
        return {name: to_c(item.get(prop))}

    def write(rec: Mapping[str, Any], ctx: Ctx) -> Record:
        v = rec.get(name)
        return {prop: None if v is None else to_w(v)}

    return Group((name,), read, write, {prop: clear} if clear is not None else {})


def _first_string(name: str, prop: str) -> Group:
    """The first entry of a string-list property (businessPhones, homePhones)."""

    def read(item: Mapping[str, Any], ctx: Ctx) -> Record:
        return {name: _text(_first(item.get(prop)))}

    def write(rec: Mapping[str, Any], ctx: Ctx) -> Record:
        v = _text(rec.get(name))
        return {prop: ([v] if v else []) + _rest(ctx, prop)}

    return Group((name,), read, write, {prop: []})


def _sub_object(prop: str, keys: Mapping[str, str],
                to_c: Mapping[str, Callable[[Any], Any]] | None = None) -> Group:
    """Canonical fields that are parts of one Graph object property (an address)."""
    conv = to_c or {}

    def read(item: Mapping[str, Any], ctx: Ctx) -> Record:
        obj = item.get(prop) or {}
        return {c: conv.get(c, _text)(obj.get(w)) for c, w in keys.items()}

    def write(rec: Mapping[str, Any], ctx: Ctx) -> Record:
        cur = (ctx.current or {}).get(prop)
        obj = dict(cur) if isinstance(cur, Mapping) else {}
        obj.update({w: _text(rec.get(c)) for c, w in keys.items()})
        return {prop: obj}

    return Group(tuple(keys), read, write)


def _enum(name: str, prop: str, to_c: Mapping[str, str], to_w: Mapping[str, str], clear: str) -> Group:
    low = {k.lower(): v for k, v in to_c.items()}
    return _scalar(name, prop, lambda v: low.get(str(v).lower()) if v is not None else None,
                   lambda v: to_w.get(v), clear)


def _body(name: str = "body") -> Group:
    def read(item: Mapping[str, Any], ctx: Ctx) -> Record:
        return {name: _body_text(item.get("body"))}

    def write(rec: Mapping[str, Any], ctx: Ctx) -> Record:
        v = _text(rec.get(name))
        return {"body": {"contentType": "text", "content": v} if v else None}

    return Group((name,), read, write, {"body": {"contentType": "text", "content": ""}})


# --- contact ------------------------------------------------------------------------------------


def _read_names(item: Mapping[str, Any], ctx: Ctx) -> Record:
    given, family = _text(item.get("givenName")), _text(item.get("surname"))
    if given is None and family is None:
        # A contact saved with only a display name: Salesforce needs a last name anyway.
        family = _text((item.get("displayName") or "").strip())
    return {"given_name": given, "family_name": family}


def _display_name(rec: Mapping[str, Any]) -> str | None:
    return " ".join(p for p in (_text(rec.get("given_name")), _text(rec.get("family_name"))) if p) or None


def _write_names(rec: Mapping[str, Any], ctx: Ctx) -> Record:
    # displayName is what Outlook lists contacts by; Graph does not derive it on create.
    return {"givenName": _text(rec.get("given_name")), "surname": _text(rec.get("family_name")),
            "displayName": _display_name(rec)}


def _read_email(item: Mapping[str, Any], ctx: Ctx) -> Record:
    first = _first(item.get("emailAddresses")) or {}
    return {"email": _lower(first.get("address"))}


def _write_email(rec: Mapping[str, Any], ctx: Ctx) -> Record:
    addr = _lower(rec.get("email"))
    head = [{"name": _display_name(rec) or addr, "address": addr}] if addr else []
    return {"emailAddresses": head + _rest(ctx, "emailAddresses")}


CONTACT: Final[tuple[Group, ...]] = (
    _scalar("salutation", "title"),
    Group(("given_name", "family_name"), _read_names, _write_names),
    Group(("email",), _read_email, _write_email, {"emailAddresses": []}),
    _first_string("business_phone", "businessPhones"),
    _scalar("mobile_phone", "mobilePhone"),
    _first_string("home_phone", "homePhones"),
    _scalar("job_title", "jobTitle"),
    _scalar("department", "department"),
    # Multi-line texts are normalised as Salesforce's textareas are (line ends, trailing blanks).
    _sub_object("businessAddress", {"street": "street", "city": "city", "state": "state",
                                    "postal_code": "postalCode", "country": "countryOrRegion"},
                {"street": lambda v: normalise_text_body(_text(v))}),
    _scalar("notes", "personalNotes", lambda v: normalise_text_body(_text(v))),
)


# --- event --------------------------------------------------------------------------------------

SHOW_AS_TO_CANONICAL: Final = {"free": "free", "busy": "busy", "tentative": "busy", "workingElsewhere": "busy",
                               "oof": "oof"}
SHOW_AS_TO_GRAPH: Final = {"free": "free", "busy": "busy", "oof": "oof"}


def _dtz(value: Any) -> tuple[str | None, str | None]:
    if not isinstance(value, Mapping):
        return None, None
    return _text(value.get("dateTime")), _text(value.get("timeZone"))


def _event_zone(item: Mapping[str, Any]) -> str | None:
    """The organiser's zone. Delta reads come in UTC (or the Prefer zone), so the original
    zones win; a side written in UTC because its wall time was ambiguous (see
    `_write_event_time`) yields to the other side."""
    _, s_tz = _dtz(item.get("start"))
    _, e_tz = _dtz(item.get("end"))
    names = [item.get("originalStartTimeZone") or s_tz, item.get("originalEndTimeZone") or e_tz, s_tz]
    zones = [z for z in (tz.canonical_zone_name(n) for n in names) if z]
    return next((z for z in zones if z != "UTC"), zones[0] if zones else None)


def _to_instant(value: Any) -> str | None:
    dt_text, zone_name = _dtz(value)
    if dt_text is None:
        return None
    zone = tz.zone_of(zone_name or "UTC")
    if zone is None:
        raise MappingError(f"unknown time zone {zone_name!r}")
    try:
        return tz.format_instant(tz.wall_to_instant(tz.parse_wall(dt_text), zone))
    except tz.TimeConversionError as e:
        raise MappingError(str(e)) from e


def _to_date(value: Any) -> str | None:
    dt_text, _ = _dtz(value)
    if dt_text is None:
        return None
    d = tz.parse_date(dt_text)
    return d.isoformat() if d else None


def _read_event_time(item: Mapping[str, Any], ctx: Ctx) -> Record:
    all_day = item.get("isAllDay")
    out: Record = {"time_zone": _event_zone(item), "is_all_day": bool(all_day) if all_day is not None else None}
    if all_day:
        # All-day events are floating: midnight in whatever zone they are reported in.
        out["start"], out["end"] = _to_date(item.get("start")), _to_date(item.get("end"))
    else:
        out["start"], out["end"] = _to_instant(item.get("start")), _to_instant(item.get("end"))
    return out


def _graph_dtz(instant: str, zone_name: str | None) -> dict[str, str]:
    """A canonical instant as Graph dateTimeTimeZone in the event's zone, so the organiser
    sees their own zone; UTC when the zone is unknown or the wall time would be ambiguous."""
    dt = tz.parse_instant(instant)
    zone = tz.zone_of(zone_name) if zone_name else None
    if zone is not None:
        wall = tz.instant_to_wall(dt, zone)
        if wall is not None:
            return {"dateTime": tz.format_wall(wall), "timeZone": tz.graph_zone_name(zone_name)}
    return {"dateTime": tz.format_wall(dt.astimezone(UTC).replace(tzinfo=None)), "timeZone": "UTC"}


def _write_event_time(rec: Mapping[str, Any], ctx: Ctx) -> Record:
    start, end, zone_name = _text(rec.get("start")), _text(rec.get("end")), _text(rec.get("time_zone"))
    out: Record = {}
    if rec.get("is_all_day"):
        # Midnight dates in the organiser's zone, so the event stays all-day across DST.
        name = tz.graph_zone_name(zone_name)
        for key, value in (("start", start), ("end", end)):
            if value:
                out[key] = {"dateTime": tz.format_wall(datetime.combine(date.fromisoformat(value[:10]), time())),
                            "timeZone": name}
        out["isAllDay"] = True
        return out
    for key, value in (("start", start), ("end", end)):
        if value:
            out[key] = _graph_dtz(value, zone_name)
    if out:
        out["isAllDay"] = False
    return out


def _read_location(item: Mapping[str, Any], ctx: Ctx) -> Record:
    loc = item.get("location")
    return {"location": _text(loc.get("displayName")) if isinstance(loc, Mapping) else None}


def _write_location(rec: Mapping[str, Any], ctx: Ctx) -> Record:
    v = _text(rec.get("location"))
    return {"location": {"displayName": v} if v else None}


def _read_private(item: Mapping[str, Any], ctx: Ctx) -> Record:
    s = item.get("sensitivity")
    return {"is_private": None if s is None else str(s).lower() in ("private", "confidential")}


def _write_private(rec: Mapping[str, Any], ctx: Ctx) -> Record:
    v = rec.get("is_private")
    return {"sensitivity": None if v is None else ("private" if v else "normal")}


def _read_recurrence(item: Mapping[str, Any], ctx: Ctx) -> Record:
    return {"recurrence": tz.normalise_recurrence(item.get("recurrence"))}


def _write_recurrence(rec: Mapping[str, Any], ctx: Ctx) -> Record:
    r = tz.normalise_recurrence(rec.get("recurrence"))
    if r is None:
        return {"recurrence": None}
    if rec.get("time_zone"):
        r["range"]["recurrenceTimeZone"] = tz.graph_zone_name(rec.get("time_zone"))
    return {"recurrence": r}


EVENT: Final[tuple[Group, ...]] = (
    _scalar("subject", "subject"),
    _body(),
    Group(("start", "end", "time_zone", "is_all_day"), _read_event_time, _write_event_time),
    Group(("location",), _read_location, _write_location, {"location": {"displayName": ""}}),
    _enum("show_as", "showAs", SHOW_AS_TO_CANONICAL, SHOW_AS_TO_GRAPH, "busy"),
    Group(("is_private",), _read_private, _write_private, {"sensitivity": "normal"}),
    Group(("recurrence",), _read_recurrence, _write_recurrence, depends=("time_zone",)),
)


# --- task (To Do) -------------------------------------------------------------------------------

TASK_STATUS_TO_CANONICAL: Final = {"notStarted": "not_started", "inProgress": "in_progress", "completed": "completed",
                                   "waitingOnOthers": "waiting", "deferred": "deferred"}
TASK_STATUS_TO_GRAPH: Final = {v: k for k, v in TASK_STATUS_TO_CANONICAL.items()}
IMPORTANCE_TO_CANONICAL: Final = {"low": "low", "normal": "normal", "high": "high"}


def _read_due(item: Mapping[str, Any], ctx: Ctx) -> Record:
    dt_text, zone_name = _dtz(item.get("dueDateTime"))
    if dt_text is None:
        return {"due_date": None}
    wall = tz.parse_wall(dt_text)
    src = tz.zone_of(zone_name or "UTC")
    user = tz.zone_of(ctx.user_time_zone) if ctx.user_time_zone else None
    if src is not None and user is not None:
        day = tz.wall_to_instant(wall, src).astimezone(user).date()
    elif wall.time() == time():
        day = wall.date()
    else:
        # To Do reports the user's local midnight as a UTC instant (05:00 for New York,
        # 23:00 the day before for Berlin); without the user's zone take the nearest midnight.
        day = (wall + timedelta(hours=12)).date()
    return {"due_date": day.isoformat()}


def _write_due(rec: Mapping[str, Any], ctx: Ctx) -> Record:
    v = _text(rec.get("due_date"))
    if not v:
        return {"dueDateTime": None}
    midnight = datetime.combine(date.fromisoformat(v[:10]), time())
    return {"dueDateTime": {"dateTime": tz.format_wall(midnight), "timeZone": tz.graph_zone_name(ctx.user_time_zone)}}


TASK: Final[tuple[Group, ...]] = (
    _scalar("subject", "title"),
    _body(),
    _enum("status", "status", TASK_STATUS_TO_CANONICAL, TASK_STATUS_TO_GRAPH, "notStarted"),
    _enum("priority", "importance", IMPORTANCE_TO_CANONICAL, IMPORTANCE_TO_CANONICAL, "normal"),
    Group(("due_date",), _read_due, _write_due),
)


# --- email (message) ----------------------------------------------------------------------------


def _address_of(recipient: Any) -> str | None:
    if not isinstance(recipient, Mapping):
        return None
    return _lower((recipient.get("emailAddress") or {}).get("address"))


def _recipients(name: str, prop: str) -> Group:
    def read(item: Mapping[str, Any], ctx: Ctx) -> Record:
        addrs = [a for a in (_address_of(r) for r in item.get(prop) or []) if a]
        return {name: addrs or None}

    def write(rec: Mapping[str, Any], ctx: Ctx) -> Record:
        return {prop: [{"emailAddress": {"address": a}} for a in rec.get(name) or []]}

    return Group((name,), read, write, {prop: []})


def _read_from(item: Mapping[str, Any], ctx: Ctx) -> Record:
    return {"from_address": _address_of(item.get("from")) or _address_of(item.get("sender"))}


def _write_from(rec: Mapping[str, Any], ctx: Ctx) -> Record:
    a = _lower(rec.get("from_address"))
    return {"from": {"emailAddress": {"address": a}} if a else None}


def _read_attachments(item: Mapping[str, Any], ctx: Ctx) -> Record:
    """File attachments only: item and reference attachments have no bytes to copy, and
    inline parts (signature logos, embedded images) are part of the body, not files."""
    out = []
    for a in item.get("attachments") or []:
        kind = str(a.get("@odata.type") or "#microsoft.graph.fileAttachment")
        if not kind.lower().endswith("fileattachment") or a.get("isInline"):
            continue
        out.append({"id": a.get("id"), "name": a.get("name"), "content_type": a.get("contentType"),
                    "size": a.get("size")})
    return {"attachments": out or None}


EMAIL: Final[tuple[Group, ...]] = (
    _scalar("subject", "subject"),
    _body(),
    Group(("from_address",), _read_from, _write_from),
    _recipients("to_addresses", "toRecipients"),
    _recipients("cc_addresses", "ccRecipients"),
    _scalar("sent_at", "sentDateTime", tz.normalise_instant),
    _scalar("internet_message_id", "internetMessageId"),
    # Attachments are separate Graph resources: read from the optional "attachments" key, never written.
    Group(("attachments",), _read_attachments, lambda rec, ctx: {}),
)

TABLES: Final[dict[str, tuple[Group, ...]]] = {"contact": CONTACT, "event": EVENT, "task": TASK, "email": EMAIL}


def _table(entity: str) -> tuple[Group, ...]:
    try:
        return TABLES[entity]
    except KeyError:
        raise MappingError(f"unknown entity {entity!r}") from None


def _is_empty(v: Any) -> bool:
    if v is None or v == "" or v == []:
        return True
    return isinstance(v, Mapping) and all(_is_empty(x) for x in v.values())


# --- public API ---------------------------------------------------------------------------------


@mapping_errors
def graph_to_canonical(entity: str, item: Mapping[str, Any], *, user_time_zone: str | None = None) -> Record:
    """A Graph item (contact, event, todoTask, message) as a canonical record (empties dropped).
    `user_time_zone` is the mailbox's zone, used for To Do due dates."""
    ctx = Ctx(user_time_zone=user_time_zone)
    out: Record = {}
    for g in _table(entity):
        out.update(g.read(item, ctx))
    return canonical(entity, out)


@mapping_errors
def canonical_to_graph(entity: str, record: Mapping[str, Any], *, user_time_zone: str | None = None) -> Record:
    """The full Graph body to create the item: empty fields are left out."""
    ctx = Ctx(user_time_zone=user_time_zone)
    body: Record = {}
    for g in _table(entity):
        for prop, v in g.write(record, ctx).items():
            if not _is_empty(v):
                body[prop] = v
    return body


@mapping_errors
def canonical_patch_to_graph(entity: str, record: Mapping[str, Any], changed: Iterable[str] | Mapping[str, Any], *,
                             current: Mapping[str, Any] | None = None,
                             user_time_zone: str | None = None) -> Record:
    """The PATCH body for the canonical fields named in `changed`.

    `record` is the full new canonical record: whole-object Graph properties (addresses,
    start/end, emailAddresses) are rebuilt from it, not just from the changed part. If
    `changed` is a mapping its values override `record`. Cleared fields are sent as Graph's
    empty value (null, [], or the property's default). `current`, the Graph item being
    patched, keeps the entries of list properties beyond the first (second phone, other
    email addresses) and the non-canonical parts of objects."""
    names = set(changed)
    merged = {**record, **changed} if isinstance(changed, Mapping) else dict(record)
    unknown = names - set(FIELDS[entity] if entity in FIELDS else ())
    if unknown:
        raise MappingError(f"not canonical {entity} fields: {sorted(unknown)}")
    ctx = Ctx(current=current, user_time_zone=user_time_zone)
    body: Record = {}
    for g in _table(entity):
        touched = not names.isdisjoint(g.names) or (
            not names.isdisjoint(g.depends) and any(merged.get(n) not in (None, "", []) for n in g.names))
        if not touched:
            continue
        for prop, v in g.write(merged, ctx).items():
            body[prop] = g.clears.get(prop) if v is None else v
    return body


def link_id_of(item: Mapping[str, Any]) -> str | None:
    """The exsf link id on a Graph item (singleValueExtendedProperties; To Do: linkedResources)."""
    return _models_link_id_of(dict(item))


def with_link_id(body: Mapping[str, Any], link_id: str, *, entity: str = "contact") -> Record:
    """A copy of a Graph write body carrying the link id: an extended property, or for To Do
    tasks (which have no extended properties in v1.0) a linkedResource."""
    return _models_with_link_id(entity, body, link_id)


def is_series_instance(item: Mapping[str, Any]) -> bool:
    """An occurrence or exception of a recurring event (calendarView delta lists them next
    to the seriesMaster): the series syncs through its master, which holds `recurrence`.
    Exceptions (a moved or edited single occurrence) have no Salesforce counterpart."""
    return str(item.get("type") or "") in ("occurrence", "exception")


def categories_of(item: Mapping[str, Any]) -> list[str]:
    return [str(c) for c in item.get("categories") or [] if c]


_ETAG = re.compile(r'^(?:W/)?"(.*)"$')


def version_of(item: Mapping[str, Any]) -> str | None:
    """The item's version: its changeKey, else the value inside its @odata.etag
    (W/"<changeKey>"), so both spellings of one version compare equal. `etag_of` gives
    the If-Match value back."""
    ck = _text(item.get("changeKey"))
    if ck:
        return ck
    etag = _text(item.get("@odata.etag"))
    if etag is None:
        return None
    m = _ETAG.match(etag)
    return m.group(1) if m else etag


def etag_of(version: str) -> str:
    """The If-Match header value for a version from `version_of`."""
    return version if version.startswith('W/"') else f'W/"{version}"'


def modified_at_of(item: Mapping[str, Any]) -> str | None:
    """lastModifiedDateTime as a canonical UTC instant."""
    return tz.normalise_instant(_text(item.get("lastModifiedDateTime")))
