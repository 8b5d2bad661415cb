"""Round trips: canonical -> Graph -> canonical and canonical -> Salesforce -> canonical are
the identity, and a patch applied to what the other side holds yields the new record.
Events are generated around daylight-saving changes (timed and all-day)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from services.connectors.exchange import mapping as gm
from services.connectors.exchange import timezones as tz
from services.connectors.salesforce import mapping as sm
from services.core.records import PRIORITIES, SHOW_AS, TASK_STATUSES, canonical

TZ_FIELD = "exsf_Time_Zone__c"
ZONES = ("Europe/Berlin", "America/New_York", "America/Los_Angeles", "Australia/Sydney", "Europe/London", "UTC",
         "Asia/Kolkata", "Asia/Kathmandu", "Pacific/Auckland", "America/Sao_Paulo", "Europe/Madrid")
# Daylight-saving changes (UTC) in 2026 for the zones above.
TRANSITIONS = tuple(datetime.fromisoformat(s).replace(tzinfo=UTC) for s in (
    "2026-03-29T01:00:00", "2026-10-25T01:00:00",  # Europe
    "2026-03-08T07:00:00", "2026-11-01T06:00:00",  # New York
    "2026-03-08T10:00:00", "2026-11-01T09:00:00",  # Los Angeles
    "2026-04-04T16:00:00", "2026-10-03T16:00:00",  # Sydney
    "2026-04-04T14:00:00", "2026-09-26T14:00:00",  # Auckland
))
DST_DAYS = tuple(t.date() for t in TRANSITIONS)

text = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=30)
body_text = st.text(st.characters(blacklist_categories=("Cs", "Cc")) | st.just("\n"), min_size=1,
                    max_size=200).map(gm.normalise_text_body).filter(bool)
_atom = st.text("abcdefghijklmnopqrstuvwxyz0123456789_+-", min_size=1, max_size=12)
email = st.builds(lambda local, domain, top: f"{local}@{domain}.{top}", _atom, _atom,
                  st.sampled_from(["com", "de", "io"]))

CONTACT_STRATEGIES: dict[str, st.SearchStrategy[Any]] = {
    "salutation": st.sampled_from(["Mr.", "Ms.", "Dr.", "Prof."]),
    "given_name": text,
    "family_name": text.filter(lambda s: not sm.is_placeholder_last_name(s)),
    "email": email,
    "business_phone": text,
    "mobile_phone": text,
    "home_phone": text,
    "job_title": text,
    "department": text,
    "street": body_text,
    "city": text,
    "state": text,
    "postal_code": text,
    "country": text,
    "notes": body_text,
}
contacts = st.fixed_dictionaries({}, optional=CONTACT_STRATEGIES)

TASK_REQUIRED = {"status": st.sampled_from(TASK_STATUSES), "priority": st.sampled_from(PRIORITIES)}
TASK_OPTIONAL = {"subject": text, "body": body_text,
                 "due_date": st.dates(date(2020, 1, 1), date(2035, 12, 31)).map(date.isoformat)}
tasks = st.fixed_dictionaries({}, optional={**TASK_REQUIRED, **TASK_OPTIONAL})
full_tasks = st.fixed_dictionaries(TASK_REQUIRED, optional=TASK_OPTIONAL)


def _iso(dt: datetime) -> str:
    return tz.format_instant(dt)


@st.composite
def instants(draw: st.DrawFn) -> datetime:
    if draw(st.booleans()):
        base = draw(st.sampled_from(TRANSITIONS))
        return base + timedelta(minutes=draw(st.integers(-300, 300)))
    return draw(st.datetimes(datetime(2024, 1, 1), datetime(2030, 12, 31))).replace(second=0, microsecond=0,
                                                                                     tzinfo=UTC)


@st.composite
def recurrences(draw: st.DrawFn, salesforce: bool = False) -> dict[str, Any]:
    ptype = draw(st.sampled_from(["daily", "weekly", "absoluteMonthly", "relativeMonthly", "absoluteYearly",
                                  "relativeYearly"]))
    yearly = ptype.endswith("Yearly")
    pattern: dict[str, Any] = {"type": ptype, "interval": 1 if yearly else draw(st.integers(1, 4))}
    if ptype in ("weekly", "relativeMonthly", "relativeYearly"):
        pattern["daysOfWeek"] = draw(st.lists(st.sampled_from(tz.WEEKDAYS), min_size=1, unique=True))
    if ptype == "weekly" and not salesforce:
        pattern["firstDayOfWeek"] = draw(st.sampled_from(tz.WEEKDAYS))
    if ptype in ("absoluteMonthly", "absoluteYearly"):
        pattern["dayOfMonth"] = draw(st.integers(1, 31))
    if yearly:
        pattern["month"] = draw(st.integers(1, 12))
    if ptype.startswith("relative"):
        pattern["index"] = draw(st.sampled_from(["first", "second", "third", "fourth", "last"]))
    start = draw(st.dates(date(2025, 1, 1), date(2027, 12, 31)))
    kinds = ["endDate", "noEnd"] if salesforce else ["endDate", "noEnd", "numbered"]
    rng: dict[str, Any] = {"type": draw(st.sampled_from(kinds)), "startDate": start.isoformat()}
    if rng["type"] == "endDate":
        rng["endDate"] = (start + timedelta(days=draw(st.integers(0, 800)))).isoformat()
    if rng["type"] == "numbered":
        rng["numberOfOccurrences"] = draw(st.integers(1, 50))
    out = tz.normalise_recurrence({"pattern": pattern, "range": rng})
    assert out is not None
    return out


@st.composite
def events(draw: st.DrawFn, salesforce: bool = False) -> dict[str, Any]:
    zone = draw(st.sampled_from(ZONES))
    rec: dict[str, Any] = {"time_zone": zone, "is_all_day": draw(st.booleans()),
                           "show_as": draw(st.sampled_from(SHOW_AS)), "is_private": draw(st.booleans())}
    if rec["is_all_day"]:
        first = draw(st.sampled_from(DST_DAYS) | st.dates(date(2024, 1, 1), date(2030, 12, 31)))
        first -= timedelta(days=draw(st.integers(0, 3)))
        rec["start"] = first.isoformat()
        rec["end"] = (first + timedelta(days=draw(st.integers(1, 10)))).isoformat()
    else:
        start = draw(instants())
        rec["start"] = _iso(start)
        rec["end"] = _iso(start + timedelta(minutes=draw(st.integers(0, 3 * 1440))))
    for name, strategy in (("subject", text), ("body", body_text), ("location", text)):
        if draw(st.booleans()):
            rec[name] = draw(strategy)
    if draw(st.booleans()):
        rec["recurrence"] = draw(recurrences(salesforce=salesforce))
    return rec


def _both_ends_ambiguous(rec: dict[str, Any]) -> bool:
    """Graph cannot express a wall time that occurs twice; exsf then writes that end in UTC
    and the zone survives through the other end (see mapping._graph_dtz)."""
    if rec.get("is_all_day"):
        return False
    zone = tz.zone_of(rec["time_zone"])
    assert zone is not None
    return all(tz.instant_to_wall(tz.parse_instant(rec[k]), zone) is None for k in ("start", "end"))


# --- canonical -> Graph -> canonical ----------------------------------------------------------------


@given(contacts)
def test_contact_graph_round_trip(rec: dict[str, Any]) -> None:
    assert gm.graph_to_canonical("contact", gm.canonical_to_graph("contact", rec)) == rec


@given(tasks, st.none() | st.sampled_from(ZONES))
def test_task_graph_round_trip(rec: dict[str, Any], user_zone: str | None) -> None:
    body = gm.canonical_to_graph("task", rec, user_time_zone=user_zone)
    assert gm.graph_to_canonical("task", body, user_time_zone=user_zone) == rec


@settings(max_examples=300)
@given(events())
def test_event_graph_round_trip(rec: dict[str, Any]) -> None:
    back = gm.graph_to_canonical("event", gm.canonical_to_graph("event", rec))
    expected = dict(rec, time_zone="UTC") if _both_ends_ambiguous(rec) else rec
    assert back == expected


@given(events())
def test_event_graph_round_trip_after_delta_read_in_utc(rec: dict[str, Any]) -> None:
    """What Graph does with our body: stores the zone as originalStartTimeZone and reports
    times in UTC (calendarView delta); all-day events stay at midnight."""
    body = gm.canonical_to_graph("event", rec)
    served = dict(body, originalStartTimeZone=body["start"]["timeZone"], originalEndTimeZone=body["end"]["timeZone"])
    if not rec["is_all_day"]:
        for k in ("start", "end"):
            served[k] = {"dateTime": tz.format_wall(tz.parse_instant(rec[k]).replace(tzinfo=None)), "timeZone": "UTC"}
    expected = dict(rec, time_zone="UTC") if _both_ends_ambiguous(rec) else rec
    assert gm.graph_to_canonical("event", served) == expected


# --- canonical -> Salesforce -> canonical -----------------------------------------------------------


@given(contacts)
def test_contact_sf_round_trip(rec: dict[str, Any]) -> None:
    assert sm.sf_to_canonical("contact", sm.canonical_to_sf("contact", rec)) == rec


@given(tasks)
def test_task_sf_round_trip(rec: dict[str, Any]) -> None:
    assert sm.sf_to_canonical("task", sm.canonical_to_sf("task", rec)) == rec


@settings(max_examples=300)
@given(events(salesforce=True))
def test_event_sf_round_trip(rec: dict[str, Any]) -> None:
    body = sm.canonical_to_sf("event", rec, time_zone_field=TZ_FIELD)
    assert sm.sf_to_canonical("event", body, time_zone_field=TZ_FIELD) == rec


@given(events(salesforce=True))
def test_event_sf_cdc_create_equals_rest(rec: dict[str, Any]) -> None:
    body = sm.canonical_to_sf("event", rec, time_zone_field=TZ_FIELD)
    payload = {"ChangeEventHeader": {"entityName": "Event", "changeType": "CREATE", "changedFields": []}, **body}
    record, changed = sm.cdc_to_canonical("event", payload, time_zone_field=TZ_FIELD)
    assert record == rec and set(changed) == set(rec)


@given(events(salesforce=True))
def test_event_salesforce_to_graph_and_back(rec: dict[str, Any]) -> None:
    """The full path of an event created in Salesforce and echoed back from Exchange."""
    from_sf = sm.sf_to_canonical("event", sm.canonical_to_sf("event", rec, time_zone_field=TZ_FIELD),
                                 time_zone_field=TZ_FIELD)
    via_graph = gm.graph_to_canonical("event", gm.canonical_to_graph("event", from_sf))
    expected = dict(rec, time_zone="UTC") if _both_ends_ambiguous(rec) else rec
    assert via_graph == expected


# --- patches ----------------------------------------------------------------------------------------


def _changed(old: dict[str, Any], new: dict[str, Any]) -> set[str]:
    return {k for k in set(old) | set(new) if old.get(k) != new.get(k)}


def _full_events(salesforce: bool = False) -> st.SearchStrategy[dict[str, Any]]:
    return events(salesforce=salesforce).filter(lambda r: not _both_ends_ambiguous(r))


@given(st.data())
def test_graph_patch_applied_to_stored_item_gives_new_record(data: st.DataObject) -> None:
    entity, strategy = data.draw(st.sampled_from([("contact", contacts), ("task", full_tasks),
                                                  ("event", _full_events())]))
    old, new = data.draw(strategy), data.draw(strategy)
    stored = gm.canonical_to_graph(entity, old)
    patch = gm.canonical_patch_to_graph(entity, new, _changed(old, new), current=stored)
    stored.update(patch)  # Graph PATCH replaces whole top-level properties
    assert gm.graph_to_canonical(entity, stored) == canonical(entity, new)


@given(st.data())
def test_sf_patch_applied_to_stored_record_gives_new_record(data: st.DataObject) -> None:
    entity, strategy = data.draw(st.sampled_from([("contact", contacts), ("task", full_tasks),
                                                  ("event", events(salesforce=True))]))
    old, new = data.draw(strategy), data.draw(strategy)
    stored = sm.canonical_to_sf(entity, old, time_zone_field=TZ_FIELD)
    changed = {k: new.get(k) for k in _changed(old, new)}
    stored.update(sm.canonical_patch_to_sf(entity, changed, new, time_zone_field=TZ_FIELD))
    assert sm.sf_to_canonical(entity, stored, time_zone_field=TZ_FIELD) == canonical(entity, new)


@given(st.data())
def test_sf_cdc_update_of_a_patch_reports_exactly_the_changed_fields(data: st.DataObject) -> None:
    """A CDC UPDATE carrying what our own patch wrote maps back to the changed canonical fields."""
    old, new = data.draw(contacts), data.draw(contacts)
    changed = _changed(old, new)
    patch = sm.canonical_patch_to_sf("contact", {k: new.get(k) for k in changed}, new)
    nests = sm.COMPOUNDS["Contact"]
    flat_to_dotted = {flat: f"{nest}.{comp}" for nest, comps in nests.items() for comp, flat in comps.items()}
    payload: dict[str, Any] = {"ChangeEventHeader": {"changeType": "UPDATE", "changedFields": []}}
    for field, value in patch.items():
        if field in flat_to_dotted:
            nest, comp = flat_to_dotted[field].split(".")
            payload.setdefault(nest, {})[comp] = value
        else:
            payload[field] = value
        payload["ChangeEventHeader"]["changedFields"].append(flat_to_dotted.get(field, field))
    record, names = sm.cdc_to_canonical("contact", payload)
    assert set(names) == changed
    assert {k: v for k, v in record.items() if v is not None} == {k: new[k] for k in changed if k in new}


def test_normalise_recurrence_is_idempotent_on_graph_output() -> None:
    @given(recurrences())
    def check(r: dict[str, Any]) -> None:
        assert tz.normalise_recurrence(r) == r
        graph = gm.canonical_to_graph("event", {"recurrence": r, "time_zone": "Europe/Berlin"})["recurrence"]
        assert tz.normalise_recurrence(graph) == r

    check()


@settings(max_examples=200)
@given(recurrences().filter(lambda r: r["range"]["type"] == "numbered"))
def test_numbered_series_ends_on_its_last_occurrence_in_salesforce(r: dict[str, Any]) -> None:
    from services.emulators.graph.recurrence import occurrence_dates as oracle

    expected = oracle(r, date.fromisoformat(r["range"]["startDate"]), date(2200, 1, 1))[-1].isoformat()
    assert tz.last_occurrence_date(r) == expected
    rec = {"start": r["range"]["startDate"], "end": r["range"]["startDate"], "is_all_day": True, "recurrence": r}
    body = sm.canonical_to_sf("event", rec)
    assert body["RecurrenceEndDateOnly"] == expected
    back = sm.sf_to_canonical("event", body)["recurrence"]
    # Salesforce has no first day of the week (documented loss); the rest survives.
    assert back["pattern"] == {k: v for k, v in r["pattern"].items() if k != "firstDayOfWeek"}
    assert back["range"] == {"type": "endDate", "startDate": r["range"]["startDate"], "endDate": expected}
