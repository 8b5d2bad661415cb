"""Salesforce REST records and CDC payloads <-> canonical, on the shapes Salesforce sends."""

from __future__ import annotations

from typing import Any

import pytest

from services.connectors.salesforce.mapping import (
    DESCRIPTION_LIMIT,
    MappingError,
    canonical_patch_to_sf,
    canonical_to_sf,
    cdc_to_canonical,
    fields_not_stored,
    is_email_task,
    is_placeholder_last_name,
    is_series_occurrence,
    modified_at_of,
    owner_of,
    placeholder_last_name,
    sf_fields,
    sf_to_canonical,
    sobject_for,
    version_of,
)

TZ_FIELD = "exsf_Time_Zone__c"

# GET /services/data/v60.0/sobjects/Contact/{id} (Developer Edition sample contact).
REST_CONTACT = {
    "attributes": {"type": "Contact", "url": "/services/data/v60.0/sobjects/Contact/0035g00000XyZ1AAK"},
    "Id": "0035g00000XyZ1AAK",
    "IsDeleted": False,
    "AccountId": "0015g00000AbCdEAAZ",
    "LastName": "Gonzalez",
    "FirstName": "Rose",
    "Salutation": "Ms.",
    "Name": "Ms. Rose Gonzalez",
    "MailingStreet": "313 Constitution Place\r\n",
    "MailingCity": "Austin",
    "MailingState": "TX",
    "MailingPostalCode": "78767",
    "MailingCountry": "USA",
    "MailingLatitude": None,
    "MailingLongitude": None,
    "MailingGeocodeAccuracy": None,
    "MailingAddress": {"city": "Austin", "country": "USA", "geocodeAccuracy": None, "latitude": None,
                       "longitude": None, "postalCode": "78767", "state": "TX", "street": "313 Constitution Place"},
    "Phone": "(512) 757-6000",
    "Fax": "(512) 757-9000",
    "MobilePhone": "(512) 757-9340",
    "HomePhone": None,
    "Email": "Rose@Edge.com",
    "Title": "SVP, Procurement",
    "Department": "Procurement",
    "Description": "Prefers email.\r\n",
    "OwnerId": "0055g00000DxYzAAAV",
    "CreatedDate": "2026-01-02T18:38:05.000+0000",
    "LastModifiedDate": "2026-01-03T18:38:05.000+0000",
    "SystemModstamp": "2026-01-03T18:38:05.123+0000",
    "exsf_Link_Id__c": "lnk-1",
}


def test_sobject_for() -> None:
    assert [sobject_for(e) for e in ("contact", "event", "task", "email")] == ["Contact", "Event", "Task", "Task"]
    with pytest.raises(MappingError):
        sobject_for("note")


def test_contact_from_rest() -> None:
    assert sf_to_canonical("contact", REST_CONTACT) == {
        "salutation": "Ms.",
        "given_name": "Rose",
        "family_name": "Gonzalez",
        "email": "rose@edge.com",
        "business_phone": "(512) 757-6000",
        "mobile_phone": "(512) 757-9340",
        "job_title": "SVP, Procurement",
        "department": "Procurement",
        "street": "313 Constitution Place",
        "city": "Austin",
        "state": "TX",
        "postal_code": "78767",
        "country": "USA",
        "notes": "Prefers email.",
    }


def test_contact_to_sf() -> None:
    body = canonical_to_sf("contact", {"given_name": "Ana", "family_name": "Lima", "email": "Ana@X.com",
                                       "city": "Porto", "notes": "n"})
    assert body == {"FirstName": "Ana", "LastName": "Lima", "Email": "ana@x.com", "MailingCity": "Porto",
                    "Description": "n"}


def test_contact_upsert_body_can_clear_empties() -> None:
    body = canonical_to_sf("contact", {"family_name": "Lima"}, include_empty=True)
    assert body["LastName"] == "Lima"
    assert body["MailingCity"] is None and body["Email"] is None and len(body) == 15


def test_contact_without_last_name_gets_placeholder_that_reads_back_as_none() -> None:
    body = canonical_to_sf("contact", {"given_name": "Ana", "email": "ana@x.com"})
    assert body["LastName"] == "(ana@x.com)" == placeholder_last_name("ana@x.com")
    assert canonical_to_sf("contact", {"given_name": "Ana"})["LastName"] == "(unknown)"
    assert sf_to_canonical("contact", body) == {"given_name": "Ana", "email": "ana@x.com"}
    assert is_placeholder_last_name("(unknown)") and not is_placeholder_last_name("(Smith)")
    # Clearing the family name must not send LastName = null (REQUIRED_FIELD_MISSING).
    assert canonical_patch_to_sf("contact", {"family_name": None}, {"email": "ana@x.com"}) == {
        "LastName": "(ana@x.com)"}


def test_contact_patch_sends_only_changed_and_null_clears() -> None:
    assert canonical_patch_to_sf("contact", {"city": "Lisbon", "mobile_phone": None}) == {
        "MobilePhone": None, "MailingCity": "Lisbon"}
    with pytest.raises(MappingError):
        canonical_patch_to_sf("contact", {"company": "x"})


# --- CDC ------------------------------------------------------------------------------------------

# data.payload of a /data/ContactChangeEvent message (CDC compound-fields docs shape).
CDC_CREATE = {
    "ChangeEventHeader": {
        "entityName": "Contact", "recordIds": ["003RM0000066Y82YAE"], "changeType": "CREATE",
        "changeOrigin": "com/salesforce/api/soap/60.0;client=SfdcInternalAPI/",
        "transactionKey": "0002343d-9d90-e395-ed20-cf416ba652ad", "sequenceNumber": 1,
        "commitTimestamp": 1767607985000, "commitNumber": 10714826645, "commitUser": "005RM000001vI54YAE",
        "changedFields": [],
    },
    "Name": {"Salutation": "Mr.", "FirstName": "Joe", "LastName": "Smith"},
    "MailingAddress": {"Street": "1 Market St", "City": "San Francisco", "State": "CA", "PostalCode": "94105",
                       "Country": "USA", "Latitude": None},
    "Email": "joe@smith.example",
    "OwnerId": "005RM000001vI54YAE",
    "CreatedDate": "2026-01-05T10:13:05.000Z",
    "CreatedById": "005RM000001vI54YAE",
    "LastModifiedDate": "2026-01-05T10:13:05.000Z",
    "LastModifiedById": "005RM000001vI54YAE",
}


def test_cdc_create_flattens_compound_fields() -> None:
    record, changed = cdc_to_canonical("contact", CDC_CREATE)
    assert record == {"salutation": "Mr.", "given_name": "Joe", "family_name": "Smith",
                      "email": "joe@smith.example", "street": "1 Market St", "city": "San Francisco",
                      "state": "CA", "postal_code": "94105", "country": "USA"}
    assert changed == list(record)
    assert owner_of(CDC_CREATE) == "005RM000001vI54YAE"


def _update(changed: list[str], **fields: Any) -> dict[str, Any]:
    header = dict(CDC_CREATE["ChangeEventHeader"], changeType="UPDATE", changedFields=changed,
                  commitTimestamp=1767608000123, commitNumber=10714826999)
    return {"ChangeEventHeader": header, **fields}


def test_cdc_update_with_compound_changed_fields() -> None:
    payload = _update(["Name.LastName", "MailingAddress.City", "LastModifiedDate"],
                      Name={"LastName": "Smith-Jones"}, MailingAddress={"City": "Oakland"},
                      LastModifiedDate="2026-01-05T10:13:20.000Z")
    assert cdc_to_canonical("contact", payload) == ({"family_name": "Smith-Jones", "city": "Oakland"},
                                                    ["family_name", "city"])


def test_cdc_update_null_fields_clear() -> None:
    payload = _update(["MobilePhone", "MailingAddress.Street", "Name.FirstName", "LastModifiedDate"],
                      MobilePhone=None, MailingAddress={"Street": None}, Name={"FirstName": None},
                      LastModifiedDate="2026-01-05T10:13:20.000Z")
    record, changed = cdc_to_canonical("contact", payload)
    assert record == {"given_name": None, "mobile_phone": None, "street": None}
    assert changed == ["given_name", "mobile_phone", "street"]


def test_cdc_update_without_changed_fields_list_uses_body() -> None:
    payload = _update([], Title="CEO", LastModifiedDate="2026-01-05T10:13:20.000Z")
    assert cdc_to_canonical("contact", payload) == ({"job_title": "CEO"}, ["job_title"])


@pytest.mark.parametrize("change", ["DELETE", "GAP_UPDATE", "GAP_OVERFLOW"])
def test_cdc_without_fields(change: str) -> None:
    payload = {"ChangeEventHeader": dict(CDC_CREATE["ChangeEventHeader"], changeType=change)}
    assert cdc_to_canonical("contact", payload) == ({}, [])


def test_cdc_event_update_moving_a_timed_event() -> None:
    payload = _update(["StartDateTime", "EndDateTime", "ActivityDateTime", "LastModifiedDate"],
                      StartDateTime="2026-01-06T17:00:00.000Z", EndDateTime="2026-01-06T18:00:00.000Z",
                      ActivityDateTime="2026-01-06T17:00:00.000Z", LastModifiedDate="2026-01-05T10:13:20.000Z")
    payload["ChangeEventHeader"]["entityName"] = "Event"
    assert cdc_to_canonical("event", payload) == ({"start": "2026-01-06T17:00:00Z", "end": "2026-01-06T18:00:00Z"},
                                                  ["start", "end"])


def test_cdc_event_update_of_all_day_event_uses_known_flag() -> None:
    payload = _update(["EndDateTime", "DurationInMinutes", "LastModifiedDate"],
                      EndDateTime="2026-01-07T00:00:00.000Z", DurationInMinutes=4320)
    assert cdc_to_canonical("event", payload, is_all_day=True) == ({"end": "2026-01-08"}, ["end"])
    # Unknown flag: whole days at midnight GMT read as all-day.
    assert cdc_to_canonical("event", payload)[0] == {"end": "2026-01-08"}
    timed = _update(["EndDateTime"], EndDateTime="2026-01-07T09:30:00.000Z")
    assert cdc_to_canonical("event", timed)[0] == {"end": "2026-01-07T09:30:00Z"}


def test_cdc_event_time_zone_custom_field() -> None:
    payload = _update([TZ_FIELD, "LastModifiedDate"], **{TZ_FIELD: "Europe/Berlin"})
    assert cdc_to_canonical("event", payload, time_zone_field=TZ_FIELD) == ({"time_zone": "Europe/Berlin"},
                                                                          ["time_zone"])


# --- events ---------------------------------------------------------------------------------------

REST_EVENT = {
    "attributes": {"type": "Event", "url": "/services/data/v60.0/sobjects/Event/00U5g00000AbCdEEAV"},
    "Id": "00U5g00000AbCdEEAV",
    "WhoId": "0035g00000XyZ1AAK",
    "Subject": "Quarterly review",
    "Location": "HQ",
    "IsAllDayEvent": False,
    "ActivityDateTime": "2026-03-30T07:00:00.000+0000",
    "ActivityDate": "2026-03-30",
    "DurationInMinutes": 90,
    "StartDateTime": "2026-03-30T07:00:00.000+0000",
    "EndDateTime": "2026-03-30T08:30:00.000+0000",
    "EndDate": "2026-03-30",
    "Description": "Agenda:\r\n1. numbers",
    "ShowAs": "OutOfOffice",
    "IsPrivate": True,
    "IsRecurrence": False,
    "RecurrenceType": None,
    "RecurrenceTimeZoneSidKey": None,
    "OwnerId": "0055g00000DxYzAAAV",
    "SystemModstamp": "2026-01-03T18:38:05.000+0000",
    TZ_FIELD: "Europe/Berlin",
}


def test_event_from_rest() -> None:
    assert sf_to_canonical("event", REST_EVENT, time_zone_field=TZ_FIELD) == {
        "subject": "Quarterly review", "body": "Agenda:\n1. numbers", "start": "2026-03-30T07:00:00Z",
        "end": "2026-03-30T08:30:00Z", "time_zone": "Europe/Berlin", "is_all_day": False, "location": "HQ",
        "show_as": "oof", "is_private": True}
    assert "time_zone" not in sf_to_canonical("event", REST_EVENT)


def test_all_day_event_from_rest_has_exclusive_end() -> None:
    rec = dict(REST_EVENT, IsAllDayEvent=True, ActivityDate="2026-03-28", StartDateTime="2026-03-28T00:00:00.000+0000",
               ActivityDateTime="2026-03-28T00:00:00.000+0000", EndDateTime="2026-03-29T00:00:00.000+0000",
               DurationInMinutes=2880)
    c = sf_to_canonical("event", rec)
    assert (c["start"], c["end"], c["is_all_day"]) == ("2026-03-28", "2026-03-30", True)


def test_all_day_event_to_sf() -> None:
    body = canonical_to_sf("event", {"subject": "Offsite", "start": "2026-03-28", "end": "2026-03-30",
                                     "is_all_day": True, "time_zone": "Europe/Berlin"})
    assert body == {"Subject": "Offsite", "IsAllDayEvent": True, "ActivityDate": "2026-03-28",
                    "StartDateTime": "2026-03-28T00:00:00.000+0000", "EndDateTime": "2026-03-29T00:00:00.000+0000",
                    "DurationInMinutes": 2880}


def test_timed_event_to_sf_and_patch_moving_start() -> None:
    record = {"subject": "S", "start": "2026-01-05T17:00:00Z", "end": "2026-01-05T18:00:00Z", "is_all_day": False,
              "show_as": "free", "is_private": False}
    assert canonical_to_sf("event", record) == {
        "Subject": "S", "IsAllDayEvent": False, "StartDateTime": "2026-01-05T17:00:00.000+0000",
        "EndDateTime": "2026-01-05T18:00:00.000+0000", "DurationInMinutes": 60, "ShowAs": "Free", "IsPrivate": False}
    patch = canonical_patch_to_sf("event", {"start": "2026-01-05T16:00:00Z"}, record)
    assert patch == {"IsAllDayEvent": False, "StartDateTime": "2026-01-05T16:00:00.000+0000",
                     "EndDateTime": "2026-01-05T18:00:00.000+0000", "DurationInMinutes": 120}
    assert canonical_patch_to_sf("event", {"show_as": None, "is_private": None, "body": None}) == {
        "Description": None, "ShowAs": "Busy", "IsPrivate": False}


@pytest.mark.parametrize(
    ("sf", "graph"),
    [
        ({"RecurrenceType": "RecursDaily", "RecurrenceInterval": 2},
         {"type": "daily", "interval": 2}),
        ({"RecurrenceType": "RecursEveryWeekday"},
         {"type": "weekly", "interval": 1, "daysOfWeek": ["monday", "tuesday", "wednesday", "thursday", "friday"]}),
        ({"RecurrenceType": "RecursWeekly", "RecurrenceInterval": 1, "RecurrenceDayOfWeekMask": 2 + 8 + 32},
         {"type": "weekly", "interval": 1, "daysOfWeek": ["monday", "wednesday", "friday"]}),
        ({"RecurrenceType": "RecursMonthly", "RecurrenceInterval": 1, "RecurrenceDayOfMonth": 15},
         {"type": "absoluteMonthly", "interval": 1, "dayOfMonth": 15}),
        ({"RecurrenceType": "RecursMonthlyNth", "RecurrenceInterval": 3, "RecurrenceInstance": "Last",
          "RecurrenceDayOfWeekMask": 64},
         {"type": "relativeMonthly", "interval": 3, "daysOfWeek": ["saturday"], "index": "last"}),
        ({"RecurrenceType": "RecursYearly", "RecurrenceDayOfMonth": 1, "RecurrenceMonthOfYear": "July"},
         {"type": "absoluteYearly", "interval": 1, "dayOfMonth": 1, "month": 7}),
        ({"RecurrenceType": "RecursYearlyNth", "RecurrenceInstance": "Second", "RecurrenceDayOfWeekMask": 1,
          "RecurrenceMonthOfYear": "May"},
         {"type": "relativeYearly", "interval": 1, "daysOfWeek": ["sunday"], "index": "second", "month": 5}),
    ],
)
def test_legacy_recurrence_to_patterned(sf: dict[str, Any], graph: dict[str, Any]) -> None:
    rec = dict(REST_EVENT, IsRecurrence=True, RecurrenceStartDateTime="2026-01-05T23:30:00.000+0000",
               RecurrenceEndDateOnly="2026-12-31", RecurrenceTimeZoneSidKey="Europe/Berlin", **sf)
    c = sf_to_canonical("event", rec)
    # 23:30Z is already the next day in Berlin: the series starts on the organiser's date.
    assert c["recurrence"] == {"pattern": graph,
                               "range": {"type": "endDate", "startDate": "2026-01-06", "endDate": "2026-12-31"}}
    assert c["time_zone"] == "Europe/Berlin"


def test_recurrence_to_sf() -> None:
    record = {"start": "2026-01-06T08:00:00Z", "end": "2026-01-06T09:00:00Z", "is_all_day": False,
              "time_zone": "Europe/Berlin",
              "recurrence": {"pattern": {"type": "relativeMonthly", "interval": 1, "daysOfWeek": ["tuesday"],
                                         "index": "first"},
                             "range": {"type": "endDate", "startDate": "2026-01-06", "endDate": "2026-06-30"}}}
    body = canonical_to_sf("event", record)
    assert {k: v for k, v in body.items() if k.startswith(("Recurrence", "IsRecurrence"))} == {
        "IsRecurrence": True, "RecurrenceType": "RecursMonthlyNth", "RecurrenceInterval": 1,
        "RecurrenceDayOfWeekMask": 4, "RecurrenceInstance": "First",
        "RecurrenceStartDateTime": "2026-01-06T08:00:00.000+0000", "RecurrenceEndDateOnly": "2026-06-30",
        "RecurrenceTimeZoneSidKey": "Europe/Berlin"}
    assert canonical_patch_to_sf("event", {"recurrence": None})["IsRecurrence"] is False


# --- tasks and emails -----------------------------------------------------------------------------

REST_TASK = {
    "attributes": {"type": "Task", "url": "/services/data/v60.0/sobjects/Task/00T5g00000AbCdEEAV"},
    "Id": "00T5g00000AbCdEEAV", "WhoId": None, "WhatId": None, "Subject": "Call back", "ActivityDate": "2026-01-09",
    "Status": "Waiting on someone else", "Priority": "High", "IsHighPriority": True, "IsClosed": False,
    "Description": None, "TaskSubtype": "Task", "OwnerId": "0055g00000DxYzAAAV",
    "LastModifiedDate": "2026-01-03T18:38:05.000+0000", "SystemModstamp": "2026-01-03T18:38:05.000+0000",
}


def test_task_from_rest_and_back() -> None:
    c = sf_to_canonical("task", REST_TASK)
    assert c == {"subject": "Call back", "status": "waiting", "priority": "high", "due_date": "2026-01-09"}
    assert canonical_to_sf("task", c) == {"Subject": "Call back", "Status": "Waiting on someone else",
                                          "Priority": "High", "ActivityDate": "2026-01-09"}
    assert canonical_patch_to_sf("task", {"status": None, "due_date": None, "priority": None}) == {
        "Status": "Not Started", "Priority": "Normal", "ActivityDate": None}


@pytest.mark.parametrize(("sf", "canon"), [("Not Started", "not_started"), ("In Progress", "in_progress"),
                                           ("Completed", "completed"), ("Waiting on someone else", "waiting"),
                                           ("Deferred", "deferred")])
def test_task_status(sf: str, canon: str) -> None:
    assert sf_to_canonical("task", {"Status": sf})["status"] == canon
    assert canonical_to_sf("task", {"status": canon})["Status"] == sf


def test_email_becomes_completed_email_task() -> None:
    email = {"subject": "Quote", "body": "x" * (DESCRIPTION_LIMIT + 10), "from_address": "a@x.com",
             "to_addresses": ["b@y.com"], "sent_at": "2026-01-05T23:30:00Z", "internet_message_id": "<m@x>",
             "attachments": [{"id": "a1", "name": "q.pdf", "content_type": "application/pdf", "size": 1}]}
    body = canonical_to_sf("email", email)
    assert body == {"Subject": "Email: Quote", "Description": "x" * DESCRIPTION_LIMIT, "ActivityDate": "2026-01-05",
                    "Status": "Completed", "TaskSubtype": "Email", "Priority": "Normal"}
    assert canonical_to_sf("email", {"subject": "s" * 300})["Subject"] == ("Email: " + "s" * 300)[:255]
    assert sf_to_canonical("email", {"Subject": "Email: Quote", "Description": "hi"}) == {"subject": "Quote",
                                                                                         "body": "hi"}


# --- versions -------------------------------------------------------------------------------------


def test_versions_and_times() -> None:
    assert version_of(REST_CONTACT) == "2026-01-03T18:38:05.123Z"
    assert version_of({"SystemModstamp": "2026-01-03T18:38:05Z"}) == "2026-01-03T18:38:05.000Z"
    assert version_of(CDC_CREATE) == "1767607985000:10714826645"
    assert version_of(CDC_CREATE["ChangeEventHeader"]) == "1767607985000:10714826645"
    assert version_of({}) is None
    assert modified_at_of(CDC_CREATE) == "2026-01-05T10:13:05Z"
    assert modified_at_of(CDC_CREATE["ChangeEventHeader"]) == "2026-01-05T10:13:05Z"
    assert modified_at_of(REST_CONTACT) == "2026-01-03T18:38:05Z"
    assert owner_of(REST_CONTACT) == "0055g00000DxYzAAAV" and owner_of({}) is None


def test_what_salesforce_cannot_hold_and_record_kinds() -> None:
    assert fields_not_stored("event") == {"time_zone"}
    assert fields_not_stored("event", time_zone_field=TZ_FIELD) == set()
    assert "to_addresses" in fields_not_stored("email") and fields_not_stored("contact") == set()
    assert is_email_task({"TaskSubtype": "Email"}) and not is_email_task(REST_TASK)
    assert is_series_occurrence({"RecurrenceActivityId": "00U1", "IsRecurrence": False})
    assert not is_series_occurrence({"RecurrenceActivityId": "00U1", "IsRecurrence": True})
    assert not is_series_occurrence(REST_EVENT)


def test_unreadable_values_are_mapping_errors() -> None:
    with pytest.raises(MappingError):
        sf_to_canonical("event", {"IsAllDayEvent": False, "StartDateTime": "soon"})
    with pytest.raises(MappingError):
        cdc_to_canonical("event", _update(["DurationInMinutes"], StartDateTime="2026-01-01T00:00:00Z",
                                          DurationInMinutes="long", IsAllDayEvent=False))
    with pytest.raises(MappingError):
        canonical_to_sf("event", {"start": "2026-01-01", "end": "x", "is_all_day": True})


def test_cdc_create_of_event_without_false_checkboxes_matches_rest_read() -> None:
    payload = {"ChangeEventHeader": dict(CDC_CREATE["ChangeEventHeader"], entityName="Event"),
               "Subject": "Kick-off", "StartDateTime": "2026-01-05T09:00:00.000Z",
               "EndDateTime": "2026-01-05T10:00:00.000Z", "DurationInMinutes": 60, "ShowAs": "Busy",
               "OwnerId": "005RM000001vI54YAE"}
    record, _ = cdc_to_canonical("event", payload)
    rest = sf_to_canonical("event", {k: v for k, v in payload.items() if k != "ChangeEventHeader"}
                           | {"IsAllDayEvent": False, "IsPrivate": False})
    assert record == rest
    assert record["is_private"] is False and record["is_all_day"] is False


def test_sf_fields_cover_what_the_reads_use() -> None:
    assert sf_fields("contact")[:3] == ["Salutation", "FirstName", "LastName"]
    event = sf_fields("event", time_zone_field=TZ_FIELD)
    assert {"StartDateTime", "IsAllDayEvent", "RecurrenceType", TZ_FIELD} <= set(event)
    assert len(event) == len(set(event)) and TZ_FIELD not in sf_fields("event")
    # Reading only the listed fields gives the same record as reading everything.
    assert sf_to_canonical("event", {k: REST_EVENT[k] for k in event if k in REST_EVENT},
                           time_zone_field=TZ_FIELD) == sf_to_canonical("event", REST_EVENT, time_zone_field=TZ_FIELD)
    assert sf_fields("email") == ["Subject", "Description"]


def test_moving_a_recurring_event_rewrites_the_series_start() -> None:
    rec = {"start": "2026-01-06", "end": "2026-01-07", "is_all_day": True, "time_zone": "Europe/Berlin",
           "recurrence": {"pattern": {"type": "daily", "interval": 1},
                          "range": {"type": "endDate", "startDate": "2026-01-06", "endDate": "2026-01-31"}}}
    new = dict(rec, is_all_day=False, start="2026-01-06T08:00:00Z", end="2026-01-06T09:00:00Z")
    patch = canonical_patch_to_sf("event", {k: new[k] for k in ("start", "end", "is_all_day")}, new)
    assert patch["RecurrenceStartDateTime"] == "2026-01-06T08:00:00.000+0000"
    # A non-recurring event's move does not touch the recurrence fields.
    plain = {k: v for k, v in new.items() if k != "recurrence"}
    assert "IsRecurrence" not in canonical_patch_to_sf("event", {"start": plain["start"]}, plain)
