"""Legacy recurring Events in the Salesforce emulator: a series master (IsRecurrence) gets one
child Event per occurrence in its own transaction, kept in step with later edits."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import date
from typing import Any

import aiohttp
import pytest

from services.emulators.salesforce import EMULATOR, SalesforceEmulatorConfig, serve
from services.emulators.salesforce.admin_client import SalesforceAdmin
from services.emulators.salesforce.recurrence import series_dates
from tests.emulators.salesforce.conftest import USERS, Sf, login

REST_ORIGIN = "com/salesforce/api/rest/60.0"


@pytest.fixture
async def sf() -> AsyncIterator[Sf]:
    runner, base = await serve(users=USERS, config=SalesforceEmulatorConfig(long_poll_timeout_s=1.0))
    http = aiohttp.ClientSession()
    try:
        token = (await login(http, base))["access_token"]
        yield Sf(base, runner.app[EMULATOR], http, SalesforceAdmin(base, http), token)
    finally:
        await http.close()
        await runner.cleanup()


def weekly_series(**extra: Any) -> dict[str, Any]:
    """Mondays and Wednesdays 09:30-10:15 GMT for two weeks from Monday 2024-05-06."""
    return {
        "Subject": "Standup", "Location": "Room 1", "Description": "notes", "ShowAs": "Free", "IsPrivate": True,
        "StartDateTime": "2024-05-06T09:30:00Z", "EndDateTime": "2024-05-06T10:15:00Z",
        "IsRecurrence": True, "RecurrenceType": "RecursWeekly", "RecurrenceInterval": 1,
        "RecurrenceDayOfWeekMask": 2 | 8, "RecurrenceStartDateTime": "2024-05-06T09:30:00Z",
        "RecurrenceEndDateOnly": "2024-05-17", "RecurrenceTimeZoneSidKey": "GMT", **extra,
    }


async def create(sf: Sf, fields: dict[str, Any]) -> str:
    status, body, _ = await sf.call("POST", "/sobjects/Event", fields)
    assert status == 201, body
    return str(body["id"])


async def children(sf: Sf, master_id: str) -> list[dict[str, Any]]:
    rows = [r for r in await sf.admin.records("Event")
            if r["RecurrenceActivityId"] == master_id and not r["IsDeleted"]]
    return sorted(rows, key=lambda r: str(r["StartDateTime"]))


def starts(rows: list[dict[str, Any]]) -> list[str]:
    return [r["StartDateTime"] for r in rows]


def changes(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(e["payload"]["ChangeEventHeader"]["changeType"], e["payload"]["ChangeEventHeader"]["recordIds"][0])
            for e in events]


async def test_weekly_series_materialises_one_child_per_occurrence(sf: Sf) -> None:
    master_id = await create(sf, weekly_series(exsf_Link_Id__c="L-1"))
    kids = await children(sf, master_id)
    assert starts(kids) == ["2024-05-06T09:30:00.000+0000", "2024-05-08T09:30:00.000+0000",
                            "2024-05-13T09:30:00.000+0000", "2024-05-15T09:30:00.000+0000"]
    assert [k["EndDateTime"][:16] for k in kids] == ["2024-05-06T10:15", "2024-05-08T10:15", "2024-05-13T10:15",
                                                      "2024-05-15T10:15"]
    assert [k["ActivityDate"] for k in kids] == ["2024-05-06", "2024-05-08", "2024-05-13", "2024-05-15"]
    for k in kids:
        assert (k["Subject"], k["Location"], k["Description"], k["ShowAs"], k["IsPrivate"]) == (
            "Standup", "Room 1", "notes", "Free", True)
        assert (k["IsRecurrence"], k["DurationInMinutes"], k["ActivityDateTime"]) == (False, 45, k["StartDateTime"])
        assert k["RecurrenceType"] is None and k["exsf_Link_Id__c"] is None  # the pattern and link stay on the master
    _, master, _ = await sf.call("GET", f"/sobjects/Event/{master_id}")
    assert (master["IsRecurrence"], master["RecurrenceActivityId"]) == (True, None)
    assert all(k["OwnerId"] == master["OwnerId"] for k in kids)


async def test_weekday_series_keeps_local_time_across_dst(sf: Sf) -> None:
    # 09:00 in Oslo, Thursday 2024-03-28 to Tuesday 2024-04-02; summer time starts on Sunday 31 March.
    master_id = await create(sf, {
        "Subject": "s", "StartDateTime": "2024-03-28T08:00:00Z", "EndDateTime": "2024-03-28T09:00:00Z",
        "IsRecurrence": True, "RecurrenceType": "RecursEveryWeekday", "RecurrenceDayOfWeekMask": 62,
        "RecurrenceStartDateTime": "2024-03-28T08:00:00Z", "RecurrenceEndDateOnly": "2024-04-02",
        "RecurrenceTimeZoneSidKey": "Europe/Oslo",
    })
    assert starts(await children(sf, master_id)) == [
        "2024-03-28T08:00:00.000+0000", "2024-03-29T08:00:00.000+0000",
        "2024-04-01T07:00:00.000+0000", "2024-04-02T07:00:00.000+0000"]


async def test_monthly_nth_series_through_collections(sf: Sf) -> None:
    series = {"attributes": {"type": "Event"}, "Subject": "Review", "StartDateTime": "2024-01-02T14:00:00Z",
              "DurationInMinutes": 30, "IsRecurrence": True, "RecurrenceType": "RecursMonthlyNth",
              "RecurrenceInterval": 1, "RecurrenceInstance": "Second", "RecurrenceDayOfWeekMask": 4,
              "RecurrenceStartDateTime": "2024-01-02T14:00:00Z", "RecurrenceEndDateOnly": "2024-04-30"}
    status, body, _ = await sf.call("POST", "/composite/sobjects", {"allOrNone": True, "records": [series]})
    assert status == 200 and body[0]["success"] is True
    kids = await children(sf, body[0]["id"])
    assert starts(kids) == ["2024-01-09T14:00:00.000+0000", "2024-02-13T14:00:00.000+0000",
                            "2024-03-12T14:00:00.000+0000", "2024-04-09T14:00:00.000+0000"]
    assert {k["EndDateTime"][11:16] for k in kids} == {"14:30"}


async def test_all_day_daily_series_and_the_occurrence_cap(sf: Sf) -> None:
    all_day = await sf.admin.create("Event", {
        "Subject": "Off", "IsAllDayEvent": True, "ActivityDate": "2024-07-01", "DurationInMinutes": 1440,
        "IsRecurrence": True, "RecurrenceType": "RecursDaily", "RecurrenceInterval": 2,
        "RecurrenceStartDateTime": "2024-07-01T00:00:00Z", "RecurrenceEndDateOnly": "2024-07-06"})
    kids = await children(sf, all_day)
    assert [(k["ActivityDate"], k["IsAllDayEvent"], k["DurationInMinutes"]) for k in kids] == [
        ("2024-07-01", True, 1440), ("2024-07-03", True, 1440), ("2024-07-05", True, 1440)]
    endless = await create(sf, {"Subject": "x", "StartDateTime": "2024-01-01T08:00:00Z", "DurationInMinutes": 15,
                                "IsRecurrence": True, "RecurrenceType": "RecursDaily", "RecurrenceInterval": 1})
    kids = await children(sf, endless)
    assert len(kids) == 100 and kids[-1]["StartDateTime"] == "2024-04-09T08:00:00.000+0000"


async def test_cdc_publishes_the_children_in_the_masters_transaction(sf: Sf) -> None:
    master_id = await sf.admin.create("Event", weekly_series())
    events = await sf.admin.events()
    kids = await children(sf, master_id)
    assert changes(events) == [("CREATE", master_id)] + [("CREATE", k["Id"]) for k in kids]
    headers = [e["payload"]["ChangeEventHeader"] for e in events]
    assert {h["transactionKey"] for h in headers} == {headers[0]["transactionKey"]}
    assert [h["sequenceNumber"] for h in headers] == [1, 2, 3, 4, 5]
    assert {h["changeOrigin"] for h in headers} == {""}  # a UI edit
    child = events[1]["payload"]
    assert (child["RecurrenceActivityId"], child["IsRecurrence"], child["StartDateTime"]) == (
        master_id, False, "2024-05-06T09:30:00.000Z")
    assert "RecurrenceActivityId" not in events[0]["payload"] and events[0]["payload"]["IsRecurrence"] is True

    await create(sf, weekly_series())
    rest = [e["payload"]["ChangeEventHeader"] for e in (await sf.admin.events())[5:]]
    assert len(rest) == 5 and {h["changeOrigin"] for h in rest} == {REST_ORIGIN}


async def test_failed_all_or_none_call_leaves_no_children(sf: Sf) -> None:
    status, body, _ = await sf.call("POST", "/composite/sobjects", {"allOrNone": True, "records": [
        {"attributes": {"type": "Event"}, **weekly_series()},
        {"attributes": {"type": "Event"}, "Subject": "no start"},
    ]})
    assert status == 200 and body[1]["success"] is False
    assert await sf.admin.records("Event") == [] and await sf.admin.events() == []


async def test_deleting_the_master_deletes_its_children(sf: Sf) -> None:
    other = await create(sf, {"Subject": "lone", "StartDateTime": "2024-05-06T12:00:00Z", "DurationInMinutes": 30})
    master_id = await create(sf, weekly_series())
    kids = [k["Id"] for k in await children(sf, master_id)]
    assert (await sf.call("DELETE", f"/sobjects/Event/{kids[0]}"))[0] == 204  # one occurrence alone
    _, master, _ = await sf.call("GET", f"/sobjects/Event/{master_id}")
    assert master["IsDeleted"] is False and [k["Id"] for k in await children(sf, master_id)] == kids[1:]

    before = len(await sf.admin.events())
    assert (await sf.call("DELETE", f"/sobjects/Event/{master_id}"))[0] == 204
    for rid in kids:
        status, body, _ = await sf.call("GET", f"/sobjects/Event/{rid}")
        assert status == 404 and body[0]["errorCode"] == "ENTITY_IS_DELETED"
    assert changes((await sf.admin.events())[before:]) == [("DELETE", master_id)] + [("DELETE", k) for k in kids[1:]]
    assert (await sf.call("GET", f"/sobjects/Event/{other}"))[0] == 200

    # Restoring the master brings back what was deleted with it, not the occurrence deleted before.
    await sf.admin.undelete("Event", master_id)
    assert [k["Id"] for k in await children(sf, master_id)] == kids[1:]


async def test_master_edits_reach_children_that_kept_the_old_value(sf: Sf) -> None:
    master_id = await create(sf, weekly_series())
    kids = [k["Id"] for k in await children(sf, master_id)]
    assert (await sf.call("PATCH", f"/sobjects/Event/{kids[1]}", {"Subject": "Special"}))[0] == 204
    _, master, _ = await sf.call("GET", f"/sobjects/Event/{master_id}")
    assert master["Subject"] == "Standup"  # a child's edit stays on the child
    assert [k["Subject"] for k in await children(sf, master_id)] == ["Standup", "Special", "Standup", "Standup"]

    before = len(await sf.admin.events())
    status, _, _ = await sf.call("PATCH", f"/sobjects/Event/{master_id}", {"Subject": "Sync", "Location": "Room 2"})
    assert status == 204
    now = await children(sf, master_id)
    assert [k["Id"] for k in now] == kids  # edited in place, not rebuilt
    assert [(k["Subject"], k["Location"]) for k in now] == [
        ("Sync", "Room 2"), ("Special", "Room 2"), ("Sync", "Room 2"), ("Sync", "Room 2")]
    updates = (await sf.admin.events())[before:]
    assert changes(updates) == [("UPDATE", master_id)] + [("UPDATE", k) for k in kids]
    assert "Subject" not in updates[2]["payload"]["ChangeEventHeader"]["changedFields"]
    assert "Subject" in updates[1]["payload"]["ChangeEventHeader"]["changedFields"]


async def test_new_end_date_rebuilds_the_series(sf: Sf) -> None:
    master_id = await create(sf, weekly_series())
    old = [k["Id"] for k in await children(sf, master_id)]
    assert (await sf.call("PATCH", f"/sobjects/Event/{master_id}", {"RecurrenceEndDateOnly": "2024-05-22"}))[0] == 204
    new = await children(sf, master_id)
    assert starts(new)[-2:] == ["2024-05-20T09:30:00.000+0000", "2024-05-22T09:30:00.000+0000"]
    assert len(new) == 6 and not set(old) & {k["Id"] for k in new}
    for rid in old:
        assert (await sf.call("GET", f"/sobjects/Event/{rid}"))[0] == 404

    status, _, _ = await sf.call("PATCH", f"/sobjects/Event/{master_id}", {"IsRecurrence": False,
                                                                          "RecurrenceType": None})
    assert status == 204 and await children(sf, master_id) == []


@pytest.mark.parametrize(("fields", "first", "expected"), [
    ({"RecurrenceType": "RecursWeekly", "RecurrenceInterval": 2, "RecurrenceDayOfWeekMask": 4 | 16,
      "RecurrenceEndDateOnly": "2024-05-31"}, "2024-05-01",
     ["2024-05-02", "2024-05-14", "2024-05-16", "2024-05-28", "2024-05-30"]),
    ({"RecurrenceType": "RecursMonthly", "RecurrenceInterval": 2, "RecurrenceDayOfMonth": 15,
      "RecurrenceEndDateOnly": "2024-09-30"}, "2024-01-20", ["2024-03-15", "2024-05-15", "2024-07-15", "2024-09-15"]),
    ({"RecurrenceType": "RecursYearly", "RecurrenceMonthOfYear": "March", "RecurrenceDayOfMonth": 15,
      "RecurrenceEndDateOnly": "2026-03-15"}, "2024-04-01", ["2025-03-15", "2026-03-15"]),
    ({"RecurrenceType": "RecursYearlyNth", "RecurrenceMonthOfYear": "November", "RecurrenceInstance": "Last",
      "RecurrenceDayOfWeekMask": 32, "RecurrenceEndDateOnly": "2026-12-31"}, "2024-01-01",
     ["2024-11-29", "2025-11-28", "2026-11-27"]),
])
def test_pattern_types_expand_to_their_dates(fields: dict[str, Any], first: str, expected: list[str]) -> None:
    assert [d.isoformat() for d in series_dates(fields, date.fromisoformat(first))] == expected
