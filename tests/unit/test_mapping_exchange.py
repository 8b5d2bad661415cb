"""Graph JSON <-> canonical, on payload shapes as Graph returns them (docs samples, delta pages)."""

from __future__ import annotations

import pytest

from services.connectors.exchange import timezones as tz
from services.connectors.exchange.mapping import (
    EXSF_LINK_PROPERTY_ID,
    MappingError,
    canonical_patch_to_graph,
    canonical_to_graph,
    categories_of,
    etag_of,
    graph_to_canonical,
    html_to_text,
    is_series_instance,
    link_id_of,
    modified_at_of,
    version_of,
    with_link_id,
)

# Shape of GET /me/contacts/{id} in the Graph docs (contact-get), with the nulls Graph sends.
GRAPH_CONTACT = {
    "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#users('u')/contacts/$entity",
    "@odata.etag": 'W/"EQAAABYAAAAfTbxNXYKWQI3mCvd+5QwLAAAAAAcZ"',
    "id": "AAMkAGI2THVSAAA=",
    "createdDateTime": "2026-01-02T20:19:10Z",
    "lastModifiedDateTime": "2026-01-02T20:19:11.1234567Z",
    "changeKey": "EQAAABYAAAAfTbxNXYKWQI3mCvd+5QwLAAAAAAcZ",
    "categories": ["Salesforce"],
    "parentFolderId": "AAMkAGI2AAEOAAA=",
    "birthday": None,
    "fileAs": "",
    "displayName": "Pavel Bansky",
    "givenName": "Pavel",
    "initials": None,
    "middleName": None,
    "nickName": None,
    "surname": "Bansky",
    "title": "Dr.",
    "generation": None,
    "imAddresses": [],
    "jobTitle": "Architect",
    "companyName": "Contoso",
    "department": "R&D",
    "officeLocation": None,
    "profession": None,
    "businessHomePage": None,
    "assistantName": None,
    "manager": None,
    "homePhones": [],
    "mobilePhone": "+1 732 555 0199",
    "businessPhones": ["+1 732 555 0102", "+1 732 555 0103"],
    "spouseName": None,
    "personalNotes": "",
    "children": [],
    "emailAddresses": [{"name": "Pavel Bansky", "address": "PavelB@Contoso.onmicrosoft.com"},
                       {"name": "pb", "address": "pavel@home.example"}],
    "homeAddress": {},
    "businessAddress": {"street": "1 Main St", "city": "Redmond", "state": "WA", "countryOrRegion": "USA",
                        "postalCode": "98052"},
    "otherAddress": {},
}


def test_contact_from_graph() -> None:
    assert graph_to_canonical("contact", GRAPH_CONTACT) == {
        "salutation": "Dr.",
        "given_name": "Pavel",
        "family_name": "Bansky",
        "email": "pavelb@contoso.onmicrosoft.com",
        "business_phone": "+1 732 555 0102",
        "mobile_phone": "+1 732 555 0199",
        "job_title": "Architect",
        "department": "R&D",
        "street": "1 Main St",
        "city": "Redmond",
        "state": "WA",
        "postal_code": "98052",
        "country": "USA",
    }


def test_contact_multiline_texts_normalised_like_salesforce_textareas() -> None:
    item = {"surname": "X", "personalNotes": "line 1\r\nline 2\r\n",
            "businessAddress": {"street": "1 Main\r\nSuite 2 "}}
    rec = graph_to_canonical("contact", item)
    assert rec["notes"] == "line 1\nline 2" and rec["street"] == "1 Main\nSuite 2"


def test_contact_with_only_display_name_gets_family_name() -> None:
    item = {"displayName": "Contoso Reception", "givenName": None, "surname": None, "emailAddresses": []}
    assert graph_to_canonical("contact", item) == {"family_name": "Contoso Reception"}


def test_contact_to_graph_full_body() -> None:
    record = {"given_name": "Ana", "family_name": "Lima", "email": "ana@x.com", "business_phone": "1", "city": "Porto",
              "notes": "met at fair"}
    body = canonical_to_graph("contact", record)
    assert body == {
        "givenName": "Ana",
        "surname": "Lima",
        "displayName": "Ana Lima",
        "emailAddresses": [{"name": "Ana Lima", "address": "ana@x.com"}],
        "businessPhones": ["1"],
        "businessAddress": {"street": None, "city": "Porto", "state": None, "postalCode": None,
                            "countryOrRegion": None},
        "personalNotes": "met at fair",
    }


def test_patch_city_sends_whole_business_address() -> None:
    new = graph_to_canonical("contact", GRAPH_CONTACT) | {"city": "Seattle"}
    patch = canonical_patch_to_graph("contact", new, {"city"})
    assert patch == {"businessAddress": {"street": "1 Main St", "city": "Seattle", "state": "WA",
                                         "postalCode": "98052", "countryOrRegion": "USA"}}


def test_patch_clearing_address_part_sends_null_part() -> None:
    new = graph_to_canonical("contact", GRAPH_CONTACT)
    del new["state"]
    patch = canonical_patch_to_graph("contact", new, ["state"])
    assert patch["businessAddress"]["state"] is None
    assert patch["businessAddress"]["city"] == "Redmond"


def test_patch_keeps_second_phone_and_other_emails_of_current_item() -> None:
    new = graph_to_canonical("contact", GRAPH_CONTACT) | {"business_phone": "+1 000", "email": "new@contoso.com"}
    patch = canonical_patch_to_graph("contact", new, {"business_phone", "email"}, current=GRAPH_CONTACT)
    assert patch["businessPhones"] == ["+1 000", "+1 732 555 0103"]
    assert patch["emailAddresses"] == [{"name": "Pavel Bansky", "address": "new@contoso.com"},
                                       {"name": "pb", "address": "pavel@home.example"}]


def test_patch_clears() -> None:
    record = {"family_name": "Lima"}
    patch = canonical_patch_to_graph("contact", record, {"email", "mobile_phone", "home_phone", "notes"})
    assert patch == {"emailAddresses": [], "mobilePhone": None, "homePhones": [], "personalNotes": None}


def test_patch_name_change_updates_display_name_and_mapping_values_override() -> None:
    record = {"given_name": "Ana", "family_name": "Lima"}
    patch = canonical_patch_to_graph("contact", record, {"family_name": "Souza"})
    assert patch == {"givenName": "Ana", "surname": "Souza", "displayName": "Ana Souza"}


def test_patch_rejects_unknown_field() -> None:
    with pytest.raises(MappingError):
        canonical_patch_to_graph("contact", {}, {"company"})


def test_unknown_entity() -> None:
    with pytest.raises(MappingError):
        graph_to_canonical("note", {})


# --- events ---------------------------------------------------------------------------------------

# GET /me/events/{id} with Prefer: outlook.timezone="Pacific Standard Time" (event-get docs shape).
GRAPH_EVENT = {
    "@odata.etag": 'W/"ZlnW4RIAV06KYYwlrfNZvQAAKGWwbw=="',
    "id": "AAMkAGIAAAoZDOFAAA=",
    "createdDateTime": "2025-12-20T10:00:00.0000000Z",
    "lastModifiedDateTime": "2025-12-21T10:00:00.0000000Z",
    "changeKey": "ZlnW4RIAV06KYYwlrfNZvQAAKGWwbw==",
    "categories": ["Salesforce"],
    "originalStartTimeZone": "Pacific Standard Time",
    "originalEndTimeZone": "Pacific Standard Time",
    "iCalUId": "040000008200E00074C5B7101A82E00800000000D3D70B8A1E",
    "subject": "Plan summer company picnic",
    "bodyPreview": "Let's kick-start this event planning!",
    "body": {"contentType": "html",
             "content": "<html>\r\n<head>\r\n<meta http-equiv=\"Content-Type\" content=\"text/html; charset=utf-8\">"
                        "\r\n<style type=\"text/css\" style=\"display:none\">\r\nP {margin-top:0;margin-bottom:0;}"
                        "\r\n</style>\r\n</head>\r\n<body dir=\"ltr\">\r\n<div>Let's kick-start this event "
                        "planning!&nbsp;&amp; more</div><div><br></div><div>Bring&nbsp;food<br>and "
                        "drinks</div>\r\n</body>\r\n</html>\r\n"},
    "start": {"dateTime": "2026-01-05T09:00:00.0000000", "timeZone": "Pacific Standard Time"},
    "end": {"dateTime": "2026-01-05T10:30:00.0000000", "timeZone": "Pacific Standard Time"},
    "location": {"displayName": "Conf Room 3", "locationType": "default", "uniqueId": "Conf Room 3",
                 "uniqueIdType": "private"},
    "locations": [{"displayName": "Conf Room 3", "locationType": "default"}],
    "isAllDay": False,
    "isCancelled": False,
    "showAs": "tentative",
    "sensitivity": "private",
    "importance": "normal",
    "type": "singleInstance",
    "recurrence": None,
    "attendees": [{"type": "required", "status": {"response": "none", "time": "0001-01-01T00:00:00Z"},
                   "emailAddress": {"name": "Dana Swope", "address": "DanaS@contoso.com"}}],
    "organizer": {"emailAddress": {"name": "Alex Wilber", "address": "AlexW@contoso.com"}},
}


def test_event_from_graph_in_windows_zone() -> None:
    assert graph_to_canonical("event", GRAPH_EVENT) == {
        "subject": "Plan summer company picnic",
        "body": "Let's kick-start this event planning! & more\n\nBring food\nand drinks",
        "start": "2026-01-05T17:00:00Z",
        "end": "2026-01-05T18:30:00Z",
        "time_zone": "America/Los_Angeles",
        "is_all_day": False,
        "location": "Conf Room 3",
        "show_as": "busy",
        "is_private": True,
    }


def test_event_from_calendar_view_delta_in_utc_keeps_organiser_zone() -> None:
    # calendarView/delta answers in UTC by default; the organiser's zone is in originalStartTimeZone.
    item = {"id": "e1", "isAllDay": False, "originalStartTimeZone": "W. Europe Standard Time",
            "originalEndTimeZone": "W. Europe Standard Time",
            "start": {"dateTime": "2026-03-30T07:00:00.0000000", "timeZone": "UTC"},
            "end": {"dateTime": "2026-03-30T08:00:00.0000000", "timeZone": "UTC"}}
    rec = graph_to_canonical("event", item)
    assert rec["start"] == "2026-03-30T07:00:00Z" and rec["end"] == "2026-03-30T08:00:00Z"
    assert rec["time_zone"] == "Europe/Berlin"


@pytest.mark.parametrize(
    ("wall", "zone", "instant"),
    [
        ("2026-03-08T01:30:00.0000000", "Eastern Standard Time", "2026-03-08T06:30:00Z"),  # before spring forward
        ("2026-03-08T03:30:00.0000000", "Eastern Standard Time", "2026-03-08T07:30:00Z"),  # after
        ("2026-03-08T02:30:00.0000000", "America/New_York", "2026-03-08T07:30:00Z"),  # skipped hour: pre offset
        ("2026-11-01T01:30:00.0000000", "Eastern Standard Time", "2026-11-01T06:30:00Z"),  # repeated: standard
        ("2026-10-25T02:30:00.0000000", "W. Europe Standard Time", "2026-10-25T01:30:00Z"),  # repeated: standard
        ("2026-03-29T03:30:00.0000000", "Europe/Berlin", "2026-03-29T01:30:00Z"),
        ("2026-01-05T09:00:00.0000000", "India Standard Time", "2026-01-05T03:30:00Z"),
        ("2026-01-05T09:00:00.0000000", "tzone://Microsoft/Utc", "2026-01-05T09:00:00Z"),
    ],
)
def test_event_wall_times_across_dst(wall: str, zone: str, instant: str) -> None:
    item = {"isAllDay": False, "start": {"dateTime": wall, "timeZone": zone},
            "end": {"dateTime": wall, "timeZone": zone}}
    assert graph_to_canonical("event", item)["start"] == instant


def test_event_in_unknown_zone_is_a_mapping_error() -> None:
    item = {"isAllDay": False, "start": {"dateTime": "2026-01-05T09:00:00", "timeZone": "Mars Standard Time"},
            "end": {"dateTime": "2026-01-05T10:00:00", "timeZone": "Mars Standard Time"}}
    with pytest.raises(MappingError):
        graph_to_canonical("event", item)


def test_event_to_graph_writes_wall_time_in_organiser_zone() -> None:
    record = {"subject": "S", "start": "2026-07-01T16:00:00Z", "end": "2026-07-01T17:00:00Z",
              "time_zone": "America/Los_Angeles", "is_all_day": False, "show_as": "oof", "is_private": False}
    body = canonical_to_graph("event", record)
    assert body["start"] == {"dateTime": "2026-07-01T09:00:00.0000000", "timeZone": "Pacific Standard Time"}
    assert body["end"] == {"dateTime": "2026-07-01T10:00:00.0000000", "timeZone": "Pacific Standard Time"}
    assert body["isAllDay"] is False and body["showAs"] == "oof" and body["sensitivity"] == "normal"


def test_event_zone_without_windows_equivalent_is_written_as_iana() -> None:
    body = canonical_to_graph("event", {"start": "2026-07-01T16:00:00Z", "end": "2026-07-01T17:00:00Z",
                                        "time_zone": "Europe/Madrid", "is_all_day": False})
    assert body["start"] == {"dateTime": "2026-07-01T18:00:00.0000000", "timeZone": "Europe/Madrid"}


def test_event_ambiguous_wall_time_is_written_in_utc_and_zone_survives() -> None:
    # 05:30Z on 2026-11-01 is 01:30 EDT, the first of two 01:30s in New York.
    record = {"start": "2026-11-01T05:30:00Z", "end": "2026-11-01T08:00:00Z", "time_zone": "America/New_York",
              "is_all_day": False}
    body = canonical_to_graph("event", record)
    assert body["start"] == {"dateTime": "2026-11-01T05:30:00.0000000", "timeZone": "UTC"}
    assert body["end"] == {"dateTime": "2026-11-01T03:00:00.0000000", "timeZone": "Eastern Standard Time"}
    assert graph_to_canonical("event", body) == record


def test_all_day_event_both_directions() -> None:
    # Graph all-day events: midnight in the event's zone, end exclusive.
    item = {"isAllDay": True, "originalStartTimeZone": "W. Europe Standard Time",
            "start": {"dateTime": "2026-03-28T00:00:00.0000000", "timeZone": "UTC"},
            "end": {"dateTime": "2026-03-30T00:00:00.0000000", "timeZone": "UTC"}}
    rec = graph_to_canonical("event", item)
    assert rec == {"start": "2026-03-28", "end": "2026-03-30", "time_zone": "Europe/Berlin", "is_all_day": True}
    body = canonical_to_graph("event", rec)
    assert body == {"start": {"dateTime": "2026-03-28T00:00:00.0000000", "timeZone": "W. Europe Standard Time"},
                    "end": {"dateTime": "2026-03-30T00:00:00.0000000", "timeZone": "W. Europe Standard Time"},
                    "isAllDay": True}


@pytest.mark.parametrize(("graph", "canon"), [("free", "free"), ("busy", "busy"), ("tentative", "busy"),
                                              ("workingElsewhere", "busy"), ("oof", "oof"), ("unknown", None)])
def test_show_as(graph: str, canon: str | None) -> None:
    assert graph_to_canonical("event", {"showAs": graph}).get("show_as") == canon


@pytest.mark.parametrize(("sensitivity", "private"), [("normal", False), ("personal", False), ("private", True),
                                                      ("confidential", True)])
def test_sensitivity(sensitivity: str, private: bool) -> None:
    assert graph_to_canonical("event", {"sensitivity": sensitivity})["is_private"] is private


GRAPH_RECURRENCE = {
    "pattern": {"type": "relativeMonthly", "interval": 2, "month": 0, "dayOfMonth": 0,
                "daysOfWeek": ["Thursday", "tuesday"], "firstDayOfWeek": "sunday", "index": "second"},
    "range": {"type": "numbered", "startDate": "2026-01-13", "endDate": "0001-01-01",
              "recurrenceTimeZone": "Pacific Standard Time", "numberOfOccurrences": 10},
}


def test_recurrence_is_normalised_and_zone_added_on_write() -> None:
    rec = graph_to_canonical("event", {"recurrence": GRAPH_RECURRENCE})
    assert rec["recurrence"] == {
        "pattern": {"type": "relativeMonthly", "interval": 2, "daysOfWeek": ["tuesday", "thursday"],
                    "index": "second"},
        "range": {"type": "numbered", "startDate": "2026-01-13", "numberOfOccurrences": 10},
    }
    body = canonical_to_graph("event", rec | {"time_zone": "America/Los_Angeles"})
    assert body["recurrence"]["range"]["recurrenceTimeZone"] == "Pacific Standard Time"
    assert canonical_patch_to_graph("event", {}, {"recurrence"}) == {"recurrence": None}


def test_weekly_recurrence_keeps_non_default_first_day() -> None:
    r = tz.normalise_recurrence({"pattern": {"type": "weekly", "interval": 1, "daysOfWeek": ["monday"],
                                             "firstDayOfWeek": "monday", "dayOfMonth": 0, "index": "first"},
                                 "range": {"type": "noEnd", "startDate": "2026-01-05", "endDate": "0001-01-01"}})
    assert r == {"pattern": {"type": "weekly", "interval": 1, "daysOfWeek": ["monday"], "firstDayOfWeek": "monday"},
                 "range": {"type": "noEnd", "startDate": "2026-01-05"}}


def test_event_patch_moving_start_sends_start_end_and_all_day_flag() -> None:
    record = {"subject": "S", "start": "2026-01-05T17:00:00Z", "end": "2026-01-05T18:00:00Z",
              "time_zone": "America/Los_Angeles", "is_all_day": False}
    patch = canonical_patch_to_graph("event", record, {"start"})
    assert set(patch) == {"start", "end", "isAllDay"}
    assert patch["end"]["dateTime"] == "2026-01-05T10:00:00.0000000"


def test_event_patch_clears_use_graph_defaults() -> None:
    patch = canonical_patch_to_graph("event", {}, {"body", "location", "show_as", "is_private", "subject"})
    assert patch == {"subject": None, "body": {"contentType": "text", "content": ""},
                     "location": {"displayName": ""}, "showAs": "busy", "sensitivity": "normal"}


# --- bodies ---------------------------------------------------------------------------------------


def test_html_to_text() -> None:
    html = ("<html><head><title>t</title><style>p{color:red}</style><script>x()</script></head><body>"
            "<p>Dear&nbsp;Ana,</p>\n<p>Q&amp;A   at <b>5&lt;6</b>&#8212;ok?</p>"
            "<ul><li>one</li><li>two</li></ul><table><tr><td>a</td><td>b</td></tr></table>"
            "<div><br></div><div><br></div><div><br></div><p>Bye</p></body></html>")
    assert html_to_text(html) == "Dear Ana,\n\nQ&A at 5<6\u2014ok?\n\none\ntwo\na b\n\nBye"


def test_text_body_line_ends_and_trailing_blanks_are_normalised() -> None:
    rec = graph_to_canonical("event", {"body": {"contentType": "text", "content": "a\r\nb\r\n\r\n  "}})
    assert rec["body"] == "a\nb"
    assert canonical_to_graph("event", rec)["body"] == {"contentType": "text", "content": "a\nb"}


def test_empty_html_body_is_no_body() -> None:
    assert "body" not in graph_to_canonical("task", {"body": {"contentType": "html", "content": "<html><body>"
                                                              "<div><br></div></body></html>"}})


# --- tasks ----------------------------------------------------------------------------------------

# GET /me/todo/lists/{id}/tasks/{id} (todotask-get docs shape).
GRAPH_TASK = {
    "@odata.etag": 'W/"xzyPKP0BiUGgld+lMKXwbQAAgdhkVw=="',
    "importance": "high",
    "isReminderOn": False,
    "status": "waitingOnOthers",
    "title": "Send contract",
    "createdDateTime": "2026-01-02T11:15:19.9359889Z",
    "lastModifiedDateTime": "2026-01-02T11:15:20.0141127Z",
    "categories": [],
    "id": "AAMkAGU0OTE5=",
    "body": {"content": "Check clause 7", "contentType": "text"},
    "dueDateTime": {"dateTime": "2026-01-09T00:00:00.0000000", "timeZone": "UTC"},
    "linkedResources": [{"applicationName": "exsf", "externalId": "lnk-1", "displayName": "Salesforce", "id": "r1"}],
}


def test_task_from_graph() -> None:
    assert graph_to_canonical("task", GRAPH_TASK) == {"subject": "Send contract", "body": "Check clause 7",
                                                      "status": "waiting", "priority": "high",
                                                      "due_date": "2026-01-09"}


@pytest.mark.parametrize(("graph", "canon"), [("notStarted", "not_started"), ("inProgress", "in_progress"),
                                              ("completed", "completed"), ("waitingOnOthers", "waiting"),
                                              ("deferred", "deferred")])
def test_task_status_both_ways(graph: str, canon: str) -> None:
    assert graph_to_canonical("task", {"status": graph})["status"] == canon
    assert canonical_to_graph("task", {"status": canon})["status"] == graph


@pytest.mark.parametrize(
    ("due", "user_zone", "day"),
    [
        ({"dateTime": "2026-01-09T05:00:00.0000000", "timeZone": "UTC"}, None, "2026-01-09"),  # New York midnight
        ({"dateTime": "2026-01-08T23:00:00.0000000", "timeZone": "UTC"}, None, "2026-01-09"),  # Berlin midnight
        ({"dateTime": "2026-01-08T11:00:00.0000000", "timeZone": "UTC"}, "Pacific/Auckland", "2026-01-09"),
        ({"dateTime": "2026-01-09T00:00:00.0000000", "timeZone": "Eastern Standard Time"}, None, "2026-01-09"),
    ],
)
def test_task_due_date_from_user_midnight(due: dict[str, str], user_zone: str | None, day: str) -> None:
    assert graph_to_canonical("task", {"dueDateTime": due}, user_time_zone=user_zone)["due_date"] == day


def test_task_to_graph_and_patch() -> None:
    body = canonical_to_graph("task", {"subject": "T", "priority": "low", "due_date": "2026-02-01"},
                              user_time_zone="Europe/Berlin")
    assert body == {"title": "T", "importance": "low",
                    "dueDateTime": {"dateTime": "2026-02-01T00:00:00.0000000", "timeZone": "W. Europe Standard Time"}}
    assert canonical_patch_to_graph("task", {}, {"due_date", "status", "priority"}) == {
        "status": "notStarted", "importance": "normal", "dueDateTime": None}


# --- messages -------------------------------------------------------------------------------------

# GET /me/messages/{id} (message-get docs shape) plus an `attachments` list from .../attachments.
GRAPH_MESSAGE = {
    "@odata.etag": 'W/"CQAAABYAAAC4ofQHEIqCSbQPot83AFcbAAAW/0tB"',
    "id": "AAMkAGVmMDEzMTM4LTZmYWUtNDdkNC1hMDZiLTU1OGY5OTZhYmY4OABGAAA=",
    "createdDateTime": "2026-01-05T09:01:00Z",
    "lastModifiedDateTime": "2026-01-05T09:02:00Z",
    "changeKey": "CQAAABYAAAC4ofQHEIqCSbQPot83AFcbAAAW/0tB",
    "categories": [],
    "receivedDateTime": "2026-01-05T09:00:31Z",
    "sentDateTime": "2026-01-05T09:00:29Z",
    "hasAttachments": True,
    "internetMessageId": "<MWHPR1301MB2172A0A2B@MWHPR1301MB2172.namprd13.prod.outlook.com>",
    "subject": "Quote for Contoso",
    "bodyPreview": "Hi Ana, please find the quote attached.",
    "importance": "normal",
    "parentFolderId": "AQMkADYAAAIBXQAAAA==",
    "conversationId": "AAQkADYAAAIBXQAAAA==",
    "isRead": True,
    "isDraft": False,
    "body": {"contentType": "html", "content": "<html><body><p>Hi Ana,</p><p>please find the quote "
                                               "attached.</p></body></html>"},
    "sender": {"emailAddress": {"name": "Megan Bowen", "address": "MeganB@contoso.com"}},
    "from": {"emailAddress": {"name": "Megan Bowen", "address": "MeganB@contoso.com"}},
    "toRecipients": [{"emailAddress": {"name": "Ana Lima", "address": "Ana.Lima@Fabrikam.com"}}],
    "ccRecipients": [{"emailAddress": {"name": "Sales", "address": "SALES@contoso.com"}},
                     {"emailAddress": {"name": "nobody"}}],
    "bccRecipients": [],
    "attachments": [
        {"@odata.type": "#microsoft.graph.fileAttachment", "id": "AAMkAtt1=", "name": "quote.pdf",
         "contentType": "application/pdf", "size": 48213, "isInline": False,
         "lastModifiedDateTime": "2026-01-05T09:00:29Z", "contentId": None},
        {"@odata.type": "#microsoft.graph.fileAttachment", "id": "AAMkAtt2=", "name": "image001.png",
         "contentType": "image/png", "size": 3400, "isInline": True, "contentId": "image001.png@01DA"},
        {"@odata.type": "#microsoft.graph.itemAttachment", "id": "AAMkAtt3=", "name": "Fwd", "size": 9000,
         "isInline": False},
    ],
}


def test_email_from_graph() -> None:
    assert graph_to_canonical("email", GRAPH_MESSAGE) == {
        "subject": "Quote for Contoso",
        "body": "Hi Ana,\n\nplease find the quote attached.",
        "from_address": "meganb@contoso.com",
        "to_addresses": ["ana.lima@fabrikam.com"],
        "cc_addresses": ["sales@contoso.com"],
        "sent_at": "2026-01-05T09:00:29Z",
        "internet_message_id": "<MWHPR1301MB2172A0A2B@MWHPR1301MB2172.namprd13.prod.outlook.com>",
        "attachments": [{"id": "AAMkAtt1=", "name": "quote.pdf", "content_type": "application/pdf", "size": 48213}],
    }


def test_email_without_attachments_key_has_no_attachments() -> None:
    item = {k: v for k, v in GRAPH_MESSAGE.items() if k != "attachments"}
    assert "attachments" not in graph_to_canonical("email", item)


# --- helpers --------------------------------------------------------------------------------------


def test_link_id_helpers() -> None:
    assert EXSF_LINK_PROPERTY_ID == "String {66f5a359-4659-4830-9070-00047ec6ac6e} Name exsfLinkId"
    body = with_link_id({"subject": "x", "singleValueExtendedProperties": [
        {"id": EXSF_LINK_PROPERTY_ID.upper(), "value": "old"}, {"id": "String 0x0037", "value": "keep"}]}, "lnk-9")
    assert body["singleValueExtendedProperties"] == [{"id": "String 0x0037", "value": "keep"},
                                                     {"id": EXSF_LINK_PROPERTY_ID, "value": "lnk-9"}]
    # As Graph returns it after $expand=singleValueExtendedProperties($filter=...).
    read = {"id": "x", "singleValueExtendedProperties": [
        {"id": "String {66f5a359-4659-4830-9070-00047ec6ac6e} Name exsfLinkId", "value": "lnk-9"}]}
    assert link_id_of(read) == "lnk-9"
    assert link_id_of(GRAPH_CONTACT) is None
    assert link_id_of(GRAPH_TASK) == "lnk-1"
    task_body = with_link_id({"title": "t"}, "lnk-2", entity="task")
    assert task_body["linkedResources"] == [{"applicationName": "exsf", "externalId": "lnk-2",
                                             "displayName": "Salesforce"}]
    assert "singleValueExtendedProperties" not in task_body


def test_series_instances() -> None:
    assert is_series_instance({"type": "occurrence", "seriesMasterId": "m"})
    assert is_series_instance({"type": "exception", "seriesMasterId": "m"})
    assert not is_series_instance({"type": "seriesMaster"}) and not is_series_instance(GRAPH_EVENT)


def test_categories_version_modified() -> None:
    assert categories_of(GRAPH_CONTACT) == ["Salesforce"]
    assert categories_of({}) == []
    assert version_of(GRAPH_CONTACT) == "EQAAABYAAAAfTbxNXYKWQI3mCvd+5QwLAAAAAAcZ"
    # An item seen only with its etag has the same version as with its changeKey.
    assert version_of({"@odata.etag": GRAPH_CONTACT["@odata.etag"]}) == version_of(GRAPH_CONTACT)
    assert version_of(GRAPH_TASK) == "xzyPKP0BiUGgld+lMKXwbQAAgdhkVw=="
    assert etag_of(version_of(GRAPH_TASK) or "") == GRAPH_TASK["@odata.etag"]
    assert version_of({}) is None
    assert modified_at_of(GRAPH_CONTACT) == "2026-01-02T20:19:11Z"
    assert modified_at_of({}) is None


def test_zone_names() -> None:
    assert tz.canonical_zone_name("pacific standard time") == "America/Los_Angeles"
    assert tz.canonical_zone_name("tzone://Microsoft/Custom") is None
    assert tz.canonical_zone_name("Europe/Madrid") == "Europe/Madrid"
    assert tz.graph_zone_name("Europe/Berlin") == "W. Europe Standard Time"
    assert tz.graph_zone_name(None) == "UTC"
    assert all(tz.zone_of(n) is not None for n in tz.WINDOWS_TO_IANA)


@pytest.mark.parametrize(
    ("entity", "item"),
    [
        ("event", {"isAllDay": False, "start": {"dateTime": "tomorrow", "timeZone": "UTC"}}),
        ("task", {"dueDateTime": {"dateTime": "2026-13-45T00:00:00", "timeZone": "UTC"}}),
        ("email", {"sentDateTime": "yesterday"}),
    ],
)
def test_unreadable_values_are_mapping_errors(entity: str, item: dict[str, object]) -> None:
    with pytest.raises(MappingError):
        graph_to_canonical(entity, item)


def test_unwritable_canonical_values_are_mapping_errors() -> None:
    with pytest.raises(MappingError):
        canonical_to_graph("event", {"start": "not a time", "end": "2026-01-01T00:00:00Z", "is_all_day": False})
