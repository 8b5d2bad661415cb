from __future__ import annotations

import orjson
import pytest

from services.core.envelopes import (
    ChangeEvent,
    Command,
    CommandResult,
    EnvelopeError,
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
    ev = _event(changed_fields=("given_name",), origin={"exsf_link_id": "L1"})
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
