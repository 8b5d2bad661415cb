"""What the ingestors put in a ChangeEvent's typed origin, and which op a change gets:
these are the hints the reconciler reads (link tag, iCalUId, changeOrigin, resync rounds)."""

from __future__ import annotations

from datetime import UTC, datetime

from services.connectors.exchange.models import LINK_PROPERTY_ID, DeltaStream
from services.core.envelopes import Origin, decode_change_event, encode
from services.core.tenants import tenant_from_dict
from services.ingest_exchange import events as ex
from services.ingest_salesforce import events as sf

ALICE = "alice@contoso.test"
ALICE_SF = "005000000000001AAA"
NOW = "2026-11-29T10:00:00Z"
TENANT = tenant_from_dict({"tenant_id": "contoso", "users": [{"mailbox": ALICE, "salesforce_user_id": ALICE_SF}]})

FOLDER = DeltaStream.contacts("AAMkFolder")
DEFAULT = DeltaStream.contacts(None)
CALENDAR = DeltaStream.events(datetime(2026, 1, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))
MAIL = DeltaStream.messages("AAMkMail")


def contact(**kw: object) -> dict[str, object]:
    return {"id": "AAMk1", "givenName": "Ann", "surname": "Roe", "changeKey": "ck1",
            "lastModifiedDateTime": NOW, **kw}


def test_exchange_upsert_carries_stream_and_our_link_tag() -> None:
    tagged = contact(singleValueExtendedProperties=[{"id": LINK_PROPERTY_ID, "value": "L1"}])
    ev = ex.upsert_event("contoso", ALICE, FOLDER, tagged, NOW)
    assert ev.op == "upsert" and ev.origin == Origin(stream="contacts:AAMkFolder", link_tag="L1")
    assert ex.upsert_event("contoso", ALICE, FOLDER, contact(), NOW).origin == Origin(stream="contacts:AAMkFolder")


def test_exchange_event_and_email_hints() -> None:
    meeting = {
        "id": "AAMkE", "subject": "Review", "changeKey": "ck", "lastModifiedDateTime": NOW,
        "categories": ["Salesforce"], "iCalUId": "040000008200E0", "isAllDay": False,
        "start": {"dateTime": "2026-12-01T10:00:00.0000000", "timeZone": "UTC"},
        "end": {"dateTime": "2026-12-01T11:00:00.0000000", "timeZone": "UTC"},
    }
    assert ex.upsert_event("contoso", ALICE, CALENDAR, meeting, NOW).origin.ical_uid == "040000008200E0"
    message = {
        "id": "AAMkM", "subject": "Hi", "changeKey": "ck", "lastModifiedDateTime": NOW,
        "internetMessageId": "<m1@contoso.test>", "hasAttachments": False,
        "from": {"emailAddress": {"address": "bob@partner.test"}}, "sentDateTime": NOW,
    }
    o = ex.upsert_event("contoso", ALICE, MAIL, message, NOW).origin
    assert (o.internet_message_id, o.has_attachments, o.ical_uid) == ("<m1@contoso.test>", False, None)


def test_leaving_the_scope_is_left_scope_and_a_delete_is_a_delete() -> None:
    # A default-folder contact without the category is out of scope: no content published.
    out = ex.upsert_event("contoso", ALICE, DEFAULT, contact(), NOW)
    assert out.op == "left_scope" and out.record is None and out.origin == Origin(stream="contacts:default")
    moved = ex.unlink_event("contoso", ALICE, FOLDER, "AAMk1", "ck1", NOW)
    gone = ex.delete_event("contoso", ALICE, FOLDER, "AAMk1", NOW)
    assert (moved.op, gone.op) == ("left_scope", "delete") and moved.event_id != gone.event_id
    assert decode_change_event(encode(moved)) == moved


def test_exchange_resync_marker_lists_what_the_round_saw() -> None:
    marker = ex.resync_marker("contoso", ALICE, FOLDER, ["b", "a"], "round-1", NOW)
    assert marker.origin == Origin(stream="contacts:AAMkFolder", resync_complete=True, seen_ids=("a", "b"))


REST = {"Id": "003000000000001AAA", "LastName": "Roe", "FirstName": "Ann", "OwnerId": ALICE_SF,
        "SystemModstamp": "2026-11-29T10:00:00.000+0000", "LastModifiedDate": "2026-11-29T10:00:00.000+0000"}


def test_salesforce_records_carry_owner_link_tag_and_catch_up() -> None:
    ev = sf.from_record(TENANT, "contact", {**REST, "exsf_Link_Id__c": "L7"}, NOW)
    assert ev is not None and ev.user == ALICE
    assert ev.origin == Origin(owner_id=ALICE_SF, link_tag="L7")
    caught = sf.from_caught_up(TENANT, "contact", REST, NOW)
    assert caught is not None and caught.origin == Origin(owner_id=ALICE_SF, catch_up=True)
    assert sf.from_record(TENANT, "contact", {**REST, "OwnerId": "005000000000009AAA"}, NOW) is None


def test_salesforce_change_origin_and_left_scope() -> None:
    header = {"changeOrigin": "com/salesforce/api/rest/60.0;client=exsf", "commitTimestamp": 1767607985000,
              "commitNumber": 1}
    created = sf.from_create(TENANT, "contact", REST["Id"], {"LastName": "Roe", "OwnerId": ALICE_SF}, header, NOW)
    assert created is not None and created.origin.by_exsf and created.origin.owner_id == ALICE_SF
    deleted = sf.delete(TENANT, "contact", REST["Id"], sf.UNKNOWN_USER, "deleted@1", NOW, {"changeOrigin": ""})
    assert deleted.op == "delete" and deleted.origin == Origin(change_origin="") and not deleted.origin.by_exsf
    assert sf.delete(TENANT, "contact", REST["Id"], ALICE, "deleted@2", NOW).origin == Origin()
    handed = sf.unlink(TENANT, "contact", {**REST, "OwnerId": "005000000000009AAA"}, NOW)
    assert handed.op == "left_scope" and handed.user == sf.UNKNOWN_USER and handed.record is None
    assert handed.origin == Origin(owner_id="005000000000009AAA")
