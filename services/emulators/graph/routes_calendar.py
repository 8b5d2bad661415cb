"""Calendar events: CRUD, recurring series with occurrences and exceptions, calendarView
and calendarView/delta.

Times are stored in UTC and presented in UTC unless the request carries
`Prefer: outlook.timezone="..."`, as Graph does; the zone the client wrote in is kept in
originalStartTimeZone / originalEndTimeZone and governs how a series recurs.
"""

from __future__ import annotations

import copy
import re
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from services.emulators.graph.common import list_items, mailbox_of, paged
from services.emulators.graph.delta import removed_entry, run_delta
from services.emulators.graph.ledger import Snapshot
from services.emulators.graph.odata import apply_select, render_item
from services.emulators.graph.recurrence import occurrence_dates
from services.emulators.graph.store import EVENT, ODATA_TYPE, Item, Mailbox, check_if_match
from services.emulators.graph.wire import Ctx, GraphError, Resp, Router

_WINDOWS_ZONES = {
    "pacific standard time": "America/Los_Angeles",
    "mountain standard time": "America/Denver",
    "central standard time": "America/Chicago",
    "eastern standard time": "America/New_York",
    "gmt standard time": "Europe/London",
    "greenwich standard time": "UTC",
    "w. europe standard time": "Europe/Berlin",
    "central europe standard time": "Europe/Budapest",
    "central european standard time": "Europe/Warsaw",
    "romance standard time": "Europe/Paris",
    "coordinated universal time": "UTC",
}
_OCC = re.compile(r"^(.+)_OCC_(\d{8})$")
_FMT = "%Y-%m-%dT%H:%M:%S.0000000"


def zone(name: str | None) -> ZoneInfo:
    n = (name or "UTC").strip()
    if n.upper() in ("UTC", "Z", "GMT"):
        return ZoneInfo("UTC")
    try:
        return ZoneInfo(_WINDOWS_ZONES.get(n.lower(), n))
    except (ZoneInfoNotFoundError, ValueError):
        raise GraphError(400, "TimeZoneNotSupportedException", f"A valid TimeZone value must be specified: {n}.") \
            from None


def parse_local(value: str) -> datetime:
    v = value.strip().replace("Z", "")
    v = re.sub(r"(\.\d{6})\d+", r"\1", v)
    v = re.sub(r"[+-]\d{2}:\d{2}$", "", v) if "T" in v else v
    try:
        return datetime.fromisoformat(v)
    except ValueError:
        raise GraphError(400, "ErrorInvalidRequest", f"Invalid dateTime '{value}'.") from None


def parse_instant(value: str) -> datetime:
    """A window bound like 2026-01-01T00:00:00Z or with an offset; naive means UTC."""
    v = re.sub(r"(\.\d{6})\d+", r"\1", value.strip().replace("Z", "+00:00"))
    try:
        dt = datetime.fromisoformat(v)
    except ValueError:
        raise GraphError(400, "ErrorInvalidParameter", f"Invalid DateTime '{value}'.") from None
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def _to_utc(dtz: dict[str, Any]) -> datetime:
    return parse_local(str(dtz.get("dateTime") or "")).replace(tzinfo=zone(dtz.get("timeZone"))).astimezone(UTC)


def _utc_dict(dt: datetime) -> dict[str, str]:
    return {"dateTime": dt.astimezone(UTC).strftime(_FMT), "timeZone": "UTC"}


def normalise(payload: dict[str, Any], current: dict[str, Any] | None = None) -> dict[str, Any]:
    """Stores start/end in UTC and keeps the written zone; all-day events stay floating."""
    p = dict(payload)
    all_day = bool(p.get("isAllDay", (current or {}).get("isAllDay", False)))
    for key, orig in (("start", "originalStartTimeZone"), ("end", "originalEndTimeZone")):
        dtz = p.get(key)
        if dtz is None:
            continue
        if not isinstance(dtz, dict) or not dtz.get("dateTime"):
            raise GraphError(400, "ErrorInvalidRequest", f"{key} needs dateTime and timeZone.")
        tz_name = str(dtz.get("timeZone") or "UTC")
        zone(tz_name)
        if all_day:
            local = parse_local(str(dtz["dateTime"]))
            if local.time() != datetime.min.time():
                raise GraphError(400, "ErrorPropertyValidationFailure",
                                 "All-day events must start and end at midnight.")
            p[key] = {"dateTime": local.strftime(_FMT), "timeZone": tz_name}
        else:
            p[key] = _utc_dict(_to_utc(dtz))
        p[orig] = tz_name
    return p


def _bounds(data: dict[str, Any]) -> tuple[datetime, datetime]:
    if data.get("isAllDay"):
        s = parse_local(data["start"]["dateTime"]).replace(tzinfo=UTC)
        e = parse_local(data["end"]["dateTime"]).replace(tzinfo=UTC)
        return s, e
    return _to_utc(data["start"]), _to_utc(data["end"])


def present(data: dict[str, Any], tz_pref: str | None) -> dict[str, Any]:
    """Start/end in the zone the request prefers (UTC by default)."""
    out = dict(data)
    target = tz_pref or "UTC"
    tz = zone(target)
    for key in ("start", "end"):
        dtz = out.get(key)
        if not isinstance(dtz, dict):
            continue
        if out.get("isAllDay"):
            out[key] = {"dateTime": dtz["dateTime"], "timeZone": target}
        else:
            out[key] = {"dateTime": _to_utc(dtz).astimezone(tz).strftime(_FMT), "timeZone": target}
    return out


def tz_pref(query_headers: dict[str, str]) -> str | None:
    m = re.search(r'outlook\.timezone\s*=\s*"([^"]+)"', query_headers.get("prefer", ""), re.IGNORECASE)
    return m.group(1) if m else None


def event_defaults(mb: Mailbox, payload: dict[str, Any]) -> dict[str, Any]:
    p = dict(payload)
    p.setdefault("subject", "")
    p.setdefault("body", {"contentType": "text", "content": ""})
    p.setdefault("bodyPreview", str((p.get("body") or {}).get("content", ""))[:255])
    for key, val in (("isAllDay", False), ("showAs", "busy"), ("sensitivity", "normal"), ("importance", "normal"),
                     ("isCancelled", False), ("isOrganizer", True), ("isReminderOn", True),
                     ("reminderMinutesBeforeStart", 15), ("responseRequested", True), ("isDraft", False),
                     ("isOnlineMeeting", False), ("attendees", []), ("locations", []), ("recurrence", None)):
        p.setdefault(key, val)
    p.setdefault("location", {"displayName": "", "locationType": "default"})
    p.setdefault("responseStatus", {"response": "organizer", "time": "0001-01-01T00:00:00Z"})
    p.setdefault("organizer", {"emailAddress": {"name": mb.address.split("@")[0], "address": mb.address}})
    p["iCalUId"] = "040000008200E00074C5B7101A82E008" + uuid.uuid4().hex.upper()
    if "start" not in p or "end" not in p:
        raise GraphError(400, "ErrorInvalidRequest", "start and end are required.")
    return p


# -- series expansion ------------------------------------------------------------------
def occurrence_id(master_id: str, d: date) -> str:
    return f"{master_id}_OCC_{d.strftime('%Y%m%d')}"


def _instances(ev: Item, ws: datetime, we: datetime) -> list[tuple[str, date | None, dict[str, Any]]]:
    """(id, occurrence date or None, stored-form data) of the event's instances overlapping the window."""
    data = ev.data
    if not data.get("recurrence"):
        s, e = _bounds(data)
        return [(ev.id, None, data)] if s < we and e > ws else []
    s, e = _bounds(data)
    duration = e - s
    tz = ZoneInfo("UTC") if data.get("isAllDay") else zone(data.get("originalStartTimeZone"))
    local_start = s.astimezone(tz)
    until = (we.astimezone(tz) + timedelta(days=1)).date()
    out: list[tuple[str, date | None, dict[str, Any]]] = []
    for d in occurrence_dates(data["recurrence"], local_start.date(), until):
        key = d.isoformat()
        if key in ev.cancelled:
            continue
        occ_s = datetime.combine(d, local_start.timetz().replace(tzinfo=None)).replace(tzinfo=tz).astimezone(UTC)
        inst = dict(data)
        inst.pop("recurrence", None)
        if data.get("isAllDay"):
            inst["start"] = {"dateTime": occ_s.strftime(_FMT), "timeZone": data["start"]["timeZone"]}
            inst["end"] = {"dateTime": (occ_s + duration).strftime(_FMT), "timeZone": data["end"]["timeZone"]}
        else:
            inst["start"], inst["end"] = _utc_dict(occ_s), _utc_dict(occ_s + duration)
        inst["originalStart"] = occ_s.strftime("%Y-%m-%dT%H:%M:%SZ")
        inst["type"] = "occurrence"
        if key in ev.exceptions:
            inst.update(ev.exceptions[key])
            inst["type"] = "exception"
        i_s, i_e = _bounds(inst)
        if i_s < we and i_e > ws:
            out.append((occurrence_id(ev.id, d), d, inst))
    return out


def _render_instance(query: dict[str, str], headers: dict[str, str], ev: Item, inst_id: str,
                     data: dict[str, Any]) -> dict[str, Any]:
    out = ev.render()
    out.update(present(copy.deepcopy(data), tz_pref(headers)))
    if inst_id != ev.id:
        out["id"] = inst_id
        out["seriesMasterId"] = ev.id
        out["recurrence"] = None
    return apply_select(query, render_item(query, ev, out))


def render_event(query: dict[str, str], headers: dict[str, str], ev: Item) -> dict[str, Any]:
    out = ev.render()
    out.update(present(copy.deepcopy(ev.data), tz_pref(headers)))
    out["type"] = "seriesMaster" if ev.data.get("recurrence") else "singleInstance"
    return render_item(query, ev, out)


def _window(params: dict[str, str]) -> tuple[datetime, datetime]:
    s, e = params.get("startdatetime"), params.get("enddatetime")
    if not s or not e:
        raise GraphError(400, "ErrorInvalidParameter",
                         "This request requires a time window specified by the query string parameters "
                         "StartDateTime and EndDateTime.")
    return parse_instant(s), parse_instant(e)


# -- handlers ----------------------------------------------------------------------------
def _resolve(mb: Mailbox, event_id: str) -> tuple[Item, date | None]:
    m = _OCC.match(event_id)
    if m:
        master = mb.item(m.group(1), EVENT)
        return master, datetime.strptime(m.group(2), "%Y%m%d").date()
    return mb.item(event_id, EVENT), None


def _find_instance(ev: Item, d: date) -> dict[str, Any]:
    day = datetime.combine(d, datetime.min.time()).replace(tzinfo=UTC)
    for _inst_id, inst_d, data in _instances(ev, day - timedelta(days=2), day + timedelta(days=3)):
        if inst_d == d:
            return data
    raise GraphError(404, "ErrorItemNotFound", "The specified object was not found in the store.")


async def _list_events(ctx: Ctx) -> Resp:
    mb = mailbox_of(ctx)
    resp = list_items(ctx, mb.items_in(mb.calendar_id), "events")
    resp.body["value"] = [_present_listed(ctx, mb, v) for v in resp.body["value"]]
    return resp


def _present_listed(ctx: Ctx, mb: Mailbox, rendered: dict[str, Any]) -> dict[str, Any]:
    ev = mb.items[rendered["id"]]
    return apply_select(ctx.query, render_event(ctx.query, ctx.headers, ev))


async def _create_event(ctx: Ctx) -> Resp:
    mb = mailbox_of(ctx)
    body = ctx.json()
    tx = body.get("transactionId")
    if tx and any(it.kind == EVENT and it.data.get("transactionId") == tx for it in mb.items.values()):
        raise GraphError(400, "ErrorDuplicateTransactionId",
                         "Your request can't be completed. The TransactionId specified in the request has already "
                         "been used to create a different event.")
    payload = normalise(event_defaults(mb, body))
    ev = ctx.state.store.create_item(mb, EVENT, mb.calendar_id, payload)
    ctx.state.ledger.created(mb.address, ev)
    return Resp(201, apply_select(ctx.query, render_event(ctx.query, ctx.headers, ev)), {"ETag": ev.etag})


async def _get_event(ctx: Ctx) -> Resp:
    mb = mailbox_of(ctx)
    ev, d = _resolve(mb, ctx.params["id"])
    if d is None:
        return Resp(200, apply_select(ctx.query, render_event(ctx.query, ctx.headers, ev)), {"ETag": ev.etag})
    return Resp(200, _render_instance(ctx.query, ctx.headers, ev, ctx.params["id"], _find_instance(ev, d)))


async def _patch_event(ctx: Ctx) -> Resp:
    mb = mailbox_of(ctx)
    ev, d = _resolve(mb, ctx.params["id"])
    body = ctx.json()
    body.pop("transactionId", None)  # immutable after creation
    store = ctx.state.store
    before = Snapshot.of(ev)
    if d is None:
        store.update_item(mb, ev, normalise(body, ev.data), ctx.header("if-match"))
        ctx.state.ledger.updated(mb.address, ev, before, ctx.header("if-match"))
        return Resp(200, apply_select(ctx.query, render_event(ctx.query, ctx.headers, ev)), {"ETag": ev.etag})
    check_if_match(ev, ctx.header("if-match"))
    _find_instance(ev, d)
    override = normalise({k: v for k, v in body.items() if not k.startswith("@")}, ev.data)
    ev.exceptions.setdefault(d.isoformat(), {}).update(override)
    store.touch(mb, ev)
    ctx.state.ledger.updated(mb.address, ev, before, ctx.header("if-match"))
    return Resp(200, _render_instance(ctx.query, ctx.headers, ev, ctx.params["id"], _find_instance(ev, d)))


async def _delete_event(ctx: Ctx) -> Resp:
    mb = mailbox_of(ctx)
    ev, d = _resolve(mb, ctx.params["id"])
    if d is None:
        ctx.state.store.delete_item(mb, ev, ctx.header("if-match"))
    else:
        check_if_match(ev, ctx.header("if-match"))
        _find_instance(ev, d)
        ev.cancelled.add(d.isoformat())
        ctx.state.store.touch(mb, ev)
    return Resp(204)


async def _instances_of(ctx: Ctx) -> Resp:
    mb = mailbox_of(ctx)
    ev = mb.item(ctx.params["id"], EVENT)
    ws, we = _window(ctx.query)
    values = [_render_instance(ctx.query, ctx.headers, ev, i, data) for i, _, data in _instances(ev, ws, we)]
    return paged(ctx, values, "events")


async def _calendar_view(ctx: Ctx) -> Resp:
    mb = mailbox_of(ctx)
    ws, we = _window(ctx.query)
    found: list[tuple[datetime, dict[str, Any]]] = []
    for ev in mb.items_in(mb.calendar_id):
        for inst_id, _, data in _instances(ev, ws, we):
            found.append((_bounds(data)[0], _render_instance(ctx.query, ctx.headers, ev, inst_id, data)))
    found.sort(key=lambda x: (x[0], x[1]["id"]))
    return paged(ctx, [v for _, v in found], "events")


async def _calendar_view_delta(ctx: Ctx) -> Resp:
    mb = mailbox_of(ctx)
    store = ctx.state.store
    headers = dict(ctx.headers)
    if ctx.q("$skiptoken") is None and ctx.q("$deltatoken") is None:
        _window(ctx.query)  # validate the window on the initial request

    def build(since: int, params: dict[str, str]) -> tuple[list[dict[str, Any]], int]:
        ws, we = _window(params)
        current, gone = store.changed_since(mb, mb.calendar_id, since)
        entries: list[dict[str, Any]] = []
        for ev in current:
            inst = _instances(ev, ws, we)
            if ev.data.get("recurrence") and inst:
                entries.append(render_event({}, headers, ev))
            entries += [_render_instance({}, headers, ev, i, data) for i, _, data in inst]
            if since:
                if not inst:
                    entries.append(removed_entry(ODATA_TYPE[EVENT], ev.id))
                for cancelled in sorted(ev.cancelled):
                    occ = occurrence_id(ev.id, date.fromisoformat(cancelled))
                    entries.append(removed_entry(ODATA_TYPE[EVENT], occ))
        for t in gone:
            entries.append(removed_entry(ODATA_TYPE[EVENT], t.item.id))
            if t.item.data.get("recurrence"):
                entries += [removed_entry(ODATA_TYPE[EVENT], i) for i, _, _ in _instances(t.item, ws, we)]
        return entries, mb.seq

    return run_delta(ctx, f"calendarView:{mb.address}", build, "Collection(event)")


def register(router: Router) -> None:
    for base in ("users/{user}", "users/{user}/calendar"):
        router.add("GET", f"{base}/events", _list_events)
        router.add("POST", f"{base}/events", _create_event)
        router.add("GET", f"{base}/events/{{id}}", _get_event)
        router.add("PATCH", f"{base}/events/{{id}}", _patch_event)
        router.add("DELETE", f"{base}/events/{{id}}", _delete_event)
        router.add("GET", f"{base}/events/{{id}}/instances", _instances_of)
        router.add("GET", f"{base}/calendarView/delta", _calendar_view_delta)
        router.add("GET", f"{base}/calendarView", _calendar_view)
