"""ExchangeClient reads and writes against the Graph emulator, through msgraph-sdk."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import pytest

from services.connectors.exchange.client import ExchangeClient
from services.connectors.exchange.models import (
    CATEGORY_NAME,
    CONTACT_FOLDER_NAME,
    LINK_PROPERTY_ID,
    MAIL_FOLDER_NAME,
    TODO_LIST_NAME,
    PreparedMailbox,
    link_id_of,
)
from services.core.errors import NotFoundError, PreconditionFailed

MAILBOX = "alice@contoso.test"
Emu = Any

EVENT = {
    "subject": "Quarterly review",
    "body": {"contentType": "text", "content": "agenda"},
    "start": {"dateTime": "2026-03-02T09:00:00", "timeZone": "UTC"},
    "end": {"dateTime": "2026-03-02T10:00:00", "timeZone": "UTC"},
    "attendees": [{"type": "required", "emailAddress": {"address": "carol@example.test", "name": "Carol"}}],
}


async def test_ensure_mailbox_twice_creates_each_object_once(emu: Emu, client: ExchangeClient) -> None:
    first = await client.ensure_mailbox(MAILBOX)
    second = await client.ensure_mailbox(MAILBOX)
    assert first == second
    containers = await emu.admin.containers(MAILBOX)
    names = [c.get("displayName") for c in containers]
    assert names.count(CONTACT_FOLDER_NAME) == 1
    assert names.count(MAIL_FOLDER_NAME) == 1
    assert names.count(TODO_LIST_NAME) == 1
    cats = await emu.admin.categories(MAILBOX)
    assert [c["displayName"] for c in cats] == [CATEGORY_NAME]
    by_id = {c["id"]: c for c in containers}
    assert by_id[first.contact_folder_id]["kind"] == "contactFolder"
    assert by_id[first.mail_folder_id]["kind"] == "mailFolder"
    assert by_id[first.todo_list_id]["kind"] == "todoList"


async def test_ensure_mailbox_recreates_a_category_the_user_deleted(
    emu: Emu, client: ExchangeClient, client_factory: Callable[..., ExchangeClient]
) -> None:
    # The folders stay as they are; only the missing category is created again.
    await client.ensure_mailbox(MAILBOX)
    emu.state.store.mailbox(MAILBOX).categories.clear()
    await emu.admin.create_item(MAILBOX, "contact", {"givenName": "x"})
    again = await client_factory().ensure_mailbox(MAILBOX)
    assert [c["displayName"] for c in await emu.admin.categories(MAILBOX)] == [CATEGORY_NAME]
    assert again.category_name == CATEGORY_NAME


async def test_contact_create_get_update_delete(client: ExchangeClient, prepared: PreparedMailbox) -> None:
    created = await client.create_contact(
        MAILBOX, prepared.contact_folder_id,
        {"givenName": "Ann", "surname": "Lee", "emailAddresses": [{"address": "ann@example.test", "name": "Ann"}]},
        "link-1")
    assert created["parentFolderId"] == prepared.contact_folder_id
    assert created["@odata.etag"] == f'W/"{created["changeKey"]}"'
    got = await client.get_contact(MAILBOX, created["id"])
    assert link_id_of(got) == "link-1"
    assert got["emailAddresses"][0]["address"] == "ann@example.test"

    updated = await client.update_item(MAILBOX, "contact", created["id"], {"jobTitle": "CFO"},
                                       etag=got["@odata.etag"])
    assert updated["jobTitle"] == "CFO"
    assert updated["changeKey"] != got["changeKey"]

    with pytest.raises(PreconditionFailed) as stale:
        await client.update_item(MAILBOX, "contact", created["id"], {"jobTitle": "CEO"}, etag=got["@odata.etag"])
    assert stale.value.status == 412 and stale.value.code == "ErrorIrresolvableConflict"
    with pytest.raises(PreconditionFailed):
        await client.delete_item(MAILBOX, "contact", created["id"], etag=got["@odata.etag"])

    await client.delete_item(MAILBOX, "contact", created["id"], etag=updated["@odata.etag"])
    with pytest.raises(NotFoundError):
        await client.get_contact(MAILBOX, created["id"])
    with pytest.raises(NotFoundError):
        await client.delete_item(MAILBOX, "contact", created["id"])


async def test_find_by_link_id_for_each_kind(client: ExchangeClient, prepared: PreparedMailbox) -> None:
    for n in range(3):
        await client.create_contact(MAILBOX, prepared.contact_folder_id, {"givenName": f"C{n}"}, f"c-{n}")
    ev = await client.create_event(MAILBOX, EVENT, "e-1")
    task = await client.create_task(MAILBOX, prepared.todo_list_id, {"title": "Call back"}, "t-1")

    found = await client.find_by_link_id(MAILBOX, "contact", "c-1", container_id=prepared.contact_folder_id)
    assert found is not None and found["givenName"] == "C1" and link_id_of(found) == "c-1"
    assert await client.find_by_link_id(MAILBOX, "contact", "nope", container_id=prepared.contact_folder_id) is None
    found_ev = await client.find_by_link_id(MAILBOX, "event", "e-1")
    assert found_ev is not None and found_ev["id"] == ev["id"]
    found_task = await client.find_by_link_id(MAILBOX, "task", "t-1", container_id=prepared.todo_list_id)
    assert found_task is not None and found_task["id"] == task["id"] and link_id_of(found_task) == "t-1"


async def test_event_create_carries_transaction_id_category_and_no_attendees(
    emu: Emu, client: ExchangeClient, prepared: PreparedMailbox
) -> None:
    ev = await client.create_event(MAILBOX, EVENT, "e-42")
    assert ev["transactionId"] == "e-42"
    assert CATEGORY_NAME in ev["categories"]
    assert ev["attendees"] == []  # Graph would invite them; exsf never writes attendees
    assert ev["responseRequested"] is False
    got = await client.get_event(MAILBOX, ev["id"])
    assert link_id_of(got) == "e-42"
    assert got["start"] == {"dateTime": "2026-03-02T09:00:00.0000000", "timeZone": "UTC"}

    # A retry of a create that did land: Graph refuses the transactionId, the client adopts the event.
    again = await client.create_event(MAILBOX, EVENT, "e-42")
    assert again["id"] == ev["id"]
    mb = emu.state.store.mailbox(MAILBOX)
    assert sum(1 for it in mb.items.values() if it.kind == "event") == 1

    moved = await client.update_item(MAILBOX, "event", ev["id"], {"isAllDay": True,
                                     "start": {"dateTime": "2026-03-03T00:00:00", "timeZone": "UTC"},
                                     "end": {"dateTime": "2026-03-04T00:00:00", "timeZone": "UTC"}},
                                     etag=got["@odata.etag"])
    assert moved["isAllDay"] is True and moved["start"]["dateTime"].startswith("2026-03-03T00:00:00")


async def test_task_crud(client: ExchangeClient, prepared: PreparedMailbox) -> None:
    task = await client.create_task(MAILBOX, prepared.todo_list_id,
                                    {"title": "Send quote", "dueDateTime": {"dateTime": "2026-03-05T00:00:00",
                                                                            "timeZone": "UTC"}}, "t-9")
    got = await client.get_task(MAILBOX, prepared.todo_list_id, task["id"])
    assert got["status"] == "notStarted" and link_id_of(got) == "t-9"
    done = await client.update_item(MAILBOX, "task", task["id"], {"status": "completed"},
                                    etag=got["@odata.etag"], container_id=prepared.todo_list_id)
    assert done["status"] == "completed"
    await client.delete_item(MAILBOX, "task", task["id"], container_id=prepared.todo_list_id)
    with pytest.raises(NotFoundError):
        await client.get_task(MAILBOX, prepared.todo_list_id, task["id"])


async def test_message_attachments_inline_and_upload_session(
    emu: Emu, client: ExchangeClient, prepared: PreparedMailbox
) -> None:
    msg = await client.create_message(MAILBOX, "inbox", {
        "subject": "Contract", "from": {"emailAddress": {"address": "ann@example.test", "name": "Ann"}}})
    small = b"hello attachment"
    big = bytes(range(256)) * (5 * 1024 * 1024 // 256 + 7)  # > 3 MB and > one 4 MB chunk
    inline = await client.add_attachment(MAILBOX, msg["id"], "note.txt", "text/plain", small)
    assert inline is not None and inline["size"] == len(small)
    assert await client.add_attachment(MAILBOX, msg["id"], "deck.pdf", "application/pdf", big) is None

    atts = {a["name"]: a for a in await client.list_attachments(MAILBOX, msg["id"])}
    assert base64.b64decode(atts["note.txt"]["contentBytes"]) == small
    assert base64.b64decode(atts["deck.pdf"]["contentBytes"]) == big
    assert atts["deck.pdf"]["contentType"] == "application/pdf"
    assert (await client.get_message(MAILBOX, msg["id"]))["hasAttachments"] is True

    moved = await client.move_message(MAILBOX, msg["id"], prepared.mail_folder_id)
    assert moved["parentFolderId"] == prepared.mail_folder_id
    assert moved["subject"] == "Contract"
    assert len(await client.list_attachments(MAILBOX, moved["id"])) == 2


async def test_link_property_is_exsf_named_property() -> None:
    assert LINK_PROPERTY_ID == "String {66f5a359-4659-4830-9070-00047ec6ac6e} Name exsfLinkId"
