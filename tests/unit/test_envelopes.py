from __future__ import annotations

import orjson
import pytest

from services.core.envelopes import (
    SCHEMA_VERSION,
    ChangeEvent,
    Command,
    CommandContext,
    CommandResult,
    EnvelopeError,
    Origin,
    content_hash,
    decode_change_event,
    decode_command,
    decode_command_result,
    encode,
)


def _event(**kw: object) -> ChangeEvent:
    base: dict[str, object] = dict(
        tenant_id="t1",
        user="alice@contoso.test",
        source="exchange",
        entity="contact",
        source_id="AAMk1",
        op="upsert",
        version="ck-1",
        observed_at="2026-11-29T10:00:00Z",
        record={"given_name": "Ann"},
    )
    base.update(kw)
    return ChangeEvent(**base)  # type: ignore[arg-type]


def test_change_event_round_trips_and_keeps_its_id() -> None:
    ev = _event(changed_fields=("given_name",), origin=Origin(link_tag="L1"))
    back = decode_change_event(encode(ev))
    assert back == ev
    assert back.event_id == ev.event_id != ""


def test_event_id_is_deterministic_and_version_sensitive() -> None:
    assert _event().event_id == _event(observed_at="2027-01-01T00:00:00Z").event_id
    assert _event().event_id != _event(version="ck-2").event_id
    assert _event().event_id != _event(tenant_id="t2").event_id


def test_command_id_depends_on_link_target_base_and_content() -> None:
    c = Command(
        tenant_id="t",
        user="u",
        target="salesforce",
        entity="contact",
        action="update",
        link_id="L",
        target_id="003",
        fields={"email": "a@x"},
        expected_version="v1",
    )
    same = Command(
        tenant_id="t",
        user="u",
        target="salesforce",
        entity="contact",
        action="update",
        link_id="L",
        target_id="003",
        fields={"email": "a@x"},
        expected_version="v1",
    )
    other = Command(
        tenant_id="t",
        user="u",
        target="salesforce",
        entity="contact",
        action="update",
        link_id="L",
        target_id="003",
        fields={"email": "a@x"},
        expected_version="v2",
    )
    assert c.command_id == same.command_id != other.command_id
    assert decode_command(encode(c)) == c


def test_command_result_round_trips() -> None:
    r = CommandResult(
        command_id="c",
        tenant_id="t",
        user="u",
        target="exchange",
        entity="task",
        link_id="L",
        status="conflict",
        target_id="AAMk",
        new_version="ck",
        record={"subject": "x"},
    )
    assert decode_command_result(encode(r)) == r


@pytest.mark.parametrize(
    ("mutate", "field", "problem"),
    [
        (lambda d: d.pop("tenant_id"), "tenant_id", "is missing"),
        (lambda d: d.update(source="gmail"), "source", "must be one of"),
        (lambda d: d.update(op="merge"), "op", "must be one of"),
        (lambda d: d.update(record=["x"]), "record", "must be an object"),
        (lambda d: d.update(changed_fields="given_name"), "changed_fields", "list of strings"),
        (lambda d: d.update(version=7), "version", "non-empty string"),
        (lambda d: d.update(schema=99), "schema", "newer"),
    ],
)
def test_malformed_event_names_the_field_in_one_line(mutate, field: str, problem: str) -> None:  # type: ignore[no-untyped-def]
    d = orjson.loads(encode(_event()))
    mutate(d)
    with pytest.raises(EnvelopeError) as ei:
        decode_change_event(orjson.dumps(d))
    msg = str(ei.value)
    assert ei.value.field == field
    assert f"'{field}'" in msg and problem in msg and "\n" not in msg


def test_not_json_and_not_object_are_envelope_errors() -> None:
    with pytest.raises(EnvelopeError, match="not valid JSON"):
        decode_change_event(b"{nope")
    with pytest.raises(EnvelopeError, match="JSON object"):
        decode_command(b"[1,2]")


def test_delete_needs_no_record_but_update_command_needs_target() -> None:
    d = orjson.loads(encode(_event(op="delete", record=None)))
    assert decode_change_event(d).record is None
    c = orjson.loads(
        encode(
            Command(
                tenant_id="t",
                user="u",
                target="exchange",
                entity="contact",
                action="create",
                link_id="L",
                target_id=None,
                fields={},
            )
        )
    )
    c["action"] = "update"
    with pytest.raises(EnvelopeError, match="'target_id' is required"):
        decode_command(c)


def test_content_hash_ignores_key_order_and_empty_fields() -> None:
    assert content_hash({"a": 1, "b": None}) == content_hash({"a": 1})
    assert content_hash({"a": 1, "b": 2}) == content_hash({"b": 2, "a": 1})
    assert content_hash({"a": 1}) != content_hash({"a": 2})


# --- schema 2: typed origin and context ---------------------------------------------------

FULL_ORIGIN = Origin(
    link_tag="L1",
    ical_uid="040000008200E00074C5B7101A82E008",
    internet_message_id="<m1@contoso.test>",
    has_attachments=False,
    owner_id="005000000000001AAA",
    change_origin="com/salesforce/api/rest/60.0;client=exsf",
    stream="contacts:AAMkF",
    resync=True,
    resync_complete=True,
    seen_ids=("AAMk1", "AAMk2"),
    catch_up=True,
)

FULL_CONTEXT = CommandContext(
    owner_id="005000000000001AAA",
    mailbox="alice@contoso.test",
    message_id="AAMkMsg",
    attachments=({"id": "att1", "name": "a.pdf", "content_type": "application/pdf", "size": 3},),
    who_emails=("bob@partner.test", "carol@partner.test"),
    who_id="003000000000001AAA",
    expected_modified_at="2026-11-29T10:00:00Z",
    record={"given_name": "Ann", "email": "ann@contoso.test"},
    graph_item={"id": "AAMk1", "emailAddresses": [{"address": "ann@contoso.test"}]},
    list_id="AAMkList",
)


def _command(**kw: object) -> Command:
    base: dict[str, object] = dict(
        tenant_id="t1",
        user="alice@contoso.test",
        target="salesforce",
        entity="contact",
        action="update",
        link_id="L1",
        target_id="003000000000001AAA",
        fields={"given_name": "Ann"},
    )
    base.update(kw)
    return Command(**base)  # type: ignore[arg-type]


def test_every_origin_and_context_field_round_trips_in_schema_2() -> None:
    ev = _event(origin=FULL_ORIGIN)
    wire = orjson.loads(encode(ev))
    assert wire["schema"] == SCHEMA_VERSION == 2
    assert wire["origin"]["link_tag"] == "L1" and wire["origin"]["seen_ids"] == ["AAMk1", "AAMk2"]
    assert decode_change_event(encode(ev)) == ev
    cmd = _command(context=FULL_CONTEXT)
    back = decode_command(encode(cmd))
    assert back == cmd and back.context.who_emails == ("bob@partner.test", "carol@partner.test")
    assert back.context.attachments[0]["name"] == "a.pdf"


def test_schema_2_writes_only_the_hints_given() -> None:
    wire = orjson.loads(encode(_event(origin=Origin(stream="contacts:AAMkF", has_attachments=False))))
    # False is a value for has_attachments (None = unknown), but the default of resync.
    assert wire["origin"] == {"stream": "contacts:AAMkF", "has_attachments": False}
    assert orjson.loads(encode(_command()))["context"] == {}
    assert decode_change_event(encode(_event())).origin == Origin()


def test_left_scope_is_an_op_without_a_record() -> None:
    ev = _event(op="left_scope", record=None, version="unlinked@ck-1")
    back = decode_change_event(encode(ev))
    assert back.op == "left_scope" and back.record is None and back == ev


def test_by_exsf_reads_the_salesforce_change_origin() -> None:
    assert Origin(change_origin="com/salesforce/api/rest/60.0;client=exsf").by_exsf
    assert not Origin(change_origin="com/salesforce/api/rest/60.0").by_exsf
    assert not Origin(change_origin="").by_exsf and not Origin().by_exsf


# --- schema 1 messages (still on the topics after an upgrade) -----------------------------
# Literal bytes as schema-1 services wrote them (dataclasses.asdict + orjson).

V1_UPSERT = (
    b'{"tenant_id":"t1","user":"alice@contoso.test","source":"exchange","entity":"event",'
    b'"source_id":"AAMkE1","op":"upsert","version":"ck-7","observed_at":"2026-11-29T10:00:00Z",'
    b'"modified_at":"2026-11-29T09:59:00Z","changed_fields":null,"record":{"subject":"Review"},'
    b'"origin":{"stream":"events:AAMkCal","exsf_link_id":"L9","ical_uid":"040000008200E0",'
    b'"some_future_hint":1},"event_id":"e-v1-upsert","schema":1}'
)
V1_UNLINK = (
    b'{"tenant_id":"t1","user":"alice@contoso.test","source":"exchange","entity":"contact",'
    b'"source_id":"AAMk1","op":"delete","version":"unlinked@ck-3","observed_at":"2026-11-29T10:00:00Z",'
    b'"modified_at":"2026-11-29T10:00:00Z","changed_fields":null,"record":null,'
    b'"origin":{"stream":"contacts:AAMkF","reason":"unlinked"},"event_id":"e-v1-unlink","schema":1}'
)
V1_SF_UNLINK = (
    b'{"tenant_id":"t1","user":"*","source":"salesforce","entity":"contact","source_id":"003000000000001AAA",'
    b'"op":"delete","version":"unlinked@1767607985000","observed_at":"2026-11-29T10:00:00Z",'
    b'"modified_at":null,"changed_fields":null,"record":null,'
    b'"origin":{"reason":"unlinked","owner_id":"005000000000009AAA"},"event_id":"e-v1-sf","schema":1}'
)
V1_DELETE = (
    b'{"tenant_id":"t1","user":"*","source":"salesforce","entity":"contact","source_id":"003000000000001AAA",'
    b'"op":"delete","version":"deleted@1767607985000:1","observed_at":"2026-11-29T10:00:00Z",'
    b'"modified_at":"2026-11-29T10:00:00Z","changed_fields":null,"record":null,'
    b'"origin":{"reason":"deleted","change_origin":"com/salesforce/api/rest/60.0;client=exsf"},'
    b'"event_id":"e-v1-delete","schema":1}'
)
V1_RESYNC_MARKER = (
    b'{"tenant_id":"t1","user":"alice@contoso.test","source":"exchange","entity":"contact",'
    b'"source_id":"resync:contacts:AAMkF","op":"upsert","version":"round-1","observed_at":"2026-11-29T10:00:00Z",'
    b'"modified_at":null,"changed_fields":null,"record":{},'
    b'"origin":{"stream":"contacts:AAMkF","resync_complete":true,"seen_ids":["AAMk1","AAMk2"]},'
    b'"event_id":"e-v1-marker","schema":1}'
)
V1_EMAIL = (
    b'{"tenant_id":"t1","user":"alice@contoso.test","source":"exchange","entity":"email","source_id":"AAMkM",'
    b'"op":"upsert","version":"ck-1","observed_at":"2026-11-29T10:00:00Z","modified_at":null,'
    b'"changed_fields":null,"record":{"subject":"Hi"},"origin":{"stream":"messages:AAMkSF",'
    b'"internet_message_id":"<m1@x>","has_attachments":true},"event_id":"e-v1-mail","schema":1}'
)
V1_CATCH_UP = (
    b'{"tenant_id":"t1","user":"alice@contoso.test","source":"salesforce","entity":"task",'
    b'"source_id":"00T000000000001AAA","op":"upsert","version":"v","observed_at":"2026-11-29T10:00:00Z",'
    b'"modified_at":null,"changed_fields":null,"record":{"subject":"Call"},'
    b'"origin":{"owner_id":"005000000000001AAA","exsf_link_id":"L3","catch_up":true},"event_id":"e","schema":1}'
)


def test_schema_1_events_decode_to_typed_origins() -> None:
    up = decode_change_event(V1_UPSERT)
    assert up.op == "upsert" and up.event_id == "e-v1-upsert" and up.schema == SCHEMA_VERSION
    # exsf_link_id is now link_tag; a key no field reads is ignored, as at the top level.
    assert up.origin == Origin(stream="events:AAMkCal", link_tag="L9", ical_uid="040000008200E0")
    mail = decode_change_event(V1_EMAIL)
    assert mail.origin == Origin(stream="messages:AAMkSF", internet_message_id="<m1@x>", has_attachments=True)
    marker = decode_change_event(V1_RESYNC_MARKER)
    assert marker.origin == Origin(stream="contacts:AAMkF", resync_complete=True, seen_ids=("AAMk1", "AAMk2"))
    caught = decode_change_event(V1_CATCH_UP)
    assert caught.origin == Origin(owner_id="005000000000001AAA", link_tag="L3", catch_up=True)


def test_schema_1_delete_with_reason_unlinked_is_left_scope_and_deleted_is_a_delete() -> None:
    moved = decode_change_event(V1_UNLINK)
    assert moved.op == "left_scope" and moved.record is None and moved.event_id == "e-v1-unlink"
    assert moved.origin == Origin(stream="contacts:AAMkF")
    handed = decode_change_event(V1_SF_UNLINK)
    assert handed.op == "left_scope" and handed.origin == Origin(owner_id="005000000000009AAA")
    gone = decode_change_event(V1_DELETE)
    assert gone.op == "delete" and gone.origin.by_exsf
    assert gone.origin == Origin(change_origin="com/salesforce/api/rest/60.0;client=exsf")


def test_a_schema_1_message_re_encodes_as_schema_2_with_the_same_meaning() -> None:
    moved = decode_change_event(V1_UNLINK)
    wire = orjson.loads(encode(moved))
    assert wire["schema"] == 2 and wire["op"] == "left_scope" and wire["origin"] == {"stream": "contacts:AAMkF"}
    assert decode_change_event(encode(moved)) == moved


def test_left_scope_keeps_the_event_id_schema_1_gave_the_same_move() -> None:
    # Without an event_id on the wire the id is computed: the same for the v1 delete+unlinked
    # and the v2 left_scope, so the reconciler's dedupe holds across an upgrade.
    v1 = orjson.loads(V1_UNLINK)
    del v1["event_id"]
    v2 = _event(source_id="AAMk1", op="left_scope", record=None, version="unlinked@ck-3")
    assert decode_change_event(orjson.dumps(v1)).event_id == v2.event_id
    assert v2.event_id != _event(source_id="AAMk1", op="delete", record=None, version="deleted@ck-3").event_id


def test_schema_1_has_no_left_scope_op() -> None:
    v1 = orjson.loads(V1_UNLINK)
    v1["op"] = "left_scope"
    with pytest.raises(EnvelopeError) as ei:
        decode_change_event(orjson.dumps(v1))
    assert ei.value.field == "op" and "upsert, delete" in str(ei.value)


V1_COMMAND = (
    b'{"tenant_id":"t1","user":"alice@contoso.test","target":"salesforce","entity":"email","action":"create",'
    b'"link_id":"L5","target_id":null,"fields":{"subject":"Hi"},"expected_version":null,'
    b'"context":{"mailbox":"alice@contoso.test","message_id":"AAMkM","attachments":[{"id":"a1","name":"x.pdf"}],'
    b'"owner_id":"005000000000001AAA","who_emails":["bob@partner.test"],"who_id":null,"obsolete":"x"},'
    b'"command_id":"c-v1","schema":1}'
)
V1_UPDATE = (
    b'{"tenant_id":"t1","user":"alice@contoso.test","target":"salesforce","entity":"contact","action":"update",'
    b'"link_id":"L6","target_id":"003000000000001AAA","fields":{"job_title":"CFO"},"expected_version":"v1",'
    b'"context":{"record":{"given_name":"Ann","job_title":"CFO"},"expected_modified_at":"2026-11-29T10:00:00Z",'
    b'"who_emails":"bob@partner.test"},"command_id":"c-v1-u","schema":1}'
)
V1_RESULT = (
    b'{"command_id":"c-v1","tenant_id":"t1","user":"alice@contoso.test","target":"salesforce","entity":"email",'
    b'"link_id":"L5","status":"applied","target_id":"00T000000000001AAA","new_version":"v2","record":null,'
    b'"modified_at":null,"error":null,"schema":1}'
)


def test_schema_1_commands_decode_to_a_typed_context() -> None:
    create = decode_command(V1_COMMAND)
    assert create.command_id == "c-v1" and create.schema == SCHEMA_VERSION
    assert create.context == CommandContext(
        mailbox="alice@contoso.test",
        message_id="AAMkM",
        attachments=({"id": "a1", "name": "x.pdf"},),
        owner_id="005000000000001AAA",
        who_emails=("bob@partner.test",),
    )
    update = decode_command(V1_UPDATE)
    assert update.context.record == {"given_name": "Ann", "job_title": "CFO"}
    assert update.context.expected_modified_at == "2026-11-29T10:00:00Z"
    # Schema 1 writers took a lone address for who_emails.
    assert update.context.who_emails == ("bob@partner.test",)
    result = decode_command_result(V1_RESULT)
    assert result.status == "applied" and result.target_id == "00T000000000001AAA"


@pytest.mark.parametrize(
    ("origin", "field", "problem"),
    [
        ([1], "origin", "must be an object"),
        ({"link_tag": 5}, "origin.link_tag", "must be a string"),
        ({"has_attachments": "yes"}, "origin.has_attachments", "must be a boolean"),
        ({"resync_complete": 1}, "origin.resync_complete", "must be a boolean"),
        ({"seen_ids": "AAMk1"}, "origin.seen_ids", "list of strings"),
        ({"seen_ids": ["AAMk1", 2]}, "origin.seen_ids", "list of strings"),
        ({"change_origin": {"client": "exsf"}}, "origin.change_origin", "must be a string"),
    ],
)
def test_malformed_origin_names_the_field(origin: object, field: str, problem: str) -> None:
    d = orjson.loads(encode(_event()))
    d["origin"] = origin
    with pytest.raises(EnvelopeError) as ei:
        decode_change_event(orjson.dumps(d))
    assert ei.value.field == field and problem in str(ei.value) and "\n" not in str(ei.value)


def test_malformed_schema_1_origin_names_the_field_as_written() -> None:
    v1 = orjson.loads(V1_UPSERT)
    v1["origin"]["exsf_link_id"] = 42
    with pytest.raises(EnvelopeError) as ei:
        decode_change_event(orjson.dumps(v1))
    assert ei.value.field == "origin.exsf_link_id"


@pytest.mark.parametrize(
    ("context", "field", "problem"),
    [
        ("owner", "context", "must be an object"),
        ({"owner_id": 5}, "context.owner_id", "must be a string"),
        ({"record": ["x"]}, "context.record", "must be an object"),
        ({"graph_item": "AAMk"}, "context.graph_item", "must be an object"),
        ({"who_emails": [1]}, "context.who_emails", "list of strings"),
        ({"who_emails": "bob@partner.test"}, "context.who_emails", "list of strings"),  # only schema 1 allowed it
        ({"attachments": ["a1"]}, "context.attachments", "list of objects"),
        ({"expected_modified_at": 1}, "context.expected_modified_at", "must be a string"),
    ],
)
def test_malformed_context_names_the_field(context: object, field: str, problem: str) -> None:
    d = orjson.loads(encode(_command()))
    d["context"] = context
    with pytest.raises(EnvelopeError) as ei:
        decode_command(orjson.dumps(d))
    assert ei.value.field == field and problem in str(ei.value) and "\n" not in str(ei.value)


def test_schema_zero_is_refused() -> None:
    d = orjson.loads(encode(_event()))
    d["schema"] = 0
    with pytest.raises(EnvelopeError) as ei:
        decode_change_event(orjson.dumps(d))
    assert ei.value.field == "schema"
