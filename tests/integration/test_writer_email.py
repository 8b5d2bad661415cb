"""Emails become one completed Salesforce Task (TaskSubtype Email, WhoId from the sender's
Contact) with the message's file attachments as Files on it, created once even when the
command is delivered again to a writer that does not remember it."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import pytest

from services.core.bus.base import Bus
from services.core.envelopes import CommandContext
from tests.integration.writer_support import ALICE, World, command, make_world


@pytest.fixture
async def world(bus: Bus, topic_prefix: str) -> AsyncIterator[World]:
    async with make_world(bus, topic_prefix) as w:
        yield w


async def test_email_task_with_files_once(world: World) -> None:
    w = world
    contact_id = await w.sf_admin.create("Contact", {"LastName": "Partner", "Email": "Bob@Partner.test"},
                                         as_user=ALICE)
    msg = await w.graph_admin.create_item(ALICE, "message", {
        "subject": "Offer", "body": {"contentType": "text", "content": "Please find the offer attached."},
        "from": {"emailAddress": {"address": "bob@partner.test"}},
        "toRecipients": [{"emailAddress": {"address": ALICE}}]}, container="inbox")
    for name, data in (("offer.pdf", b"%PDF-1.4 offer"), ("terms.txt", b"terms and conditions")):
        await w.graph_admin.add_attachment(ALICE, msg["id"], name, "application/octet-stream",
                                           base64.b64encode(data).decode())
    email = command("email", "salesforce", "E-1", {
        "subject": "Offer", "body": "Please find the offer attached.", "from_address": "bob@partner.test",
        "to_addresses": [ALICE], "sent_at": "2026-11-20T10:00:00Z"},
        context=CommandContext(message_id=msg["id"], who_emails=("nobody@else.test", "bob@partner.test"),
                               owner_id=w.sf_ids[ALICE]))

    first = await w.start_writer()
    await w.send(email)
    (r1,) = await w.results_for(1)
    assert r1.status == "applied" and r1.target_id, r1.error
    # Delivered again, to a writer with no memory of the first delivery.
    await w.stop_writer(first)
    await w.start_writer()
    before = await w.sf_admin.counters()
    await w.send(email)
    r2 = (await w.results_for(2))[-1]
    assert r2.status == "applied" and r2.target_id == r1.target_id, r2.error
    after = await w.sf_admin.counters()
    # Upsert + WhoId query + the two queries for existing files, and no upload.
    assert after["rest_calls"] - before["rest_calls"] == 4

    tasks = [t for t in await w.sf_records("Task") if t.get("exsf_Link_Id__c") == "E-1"]
    assert len(tasks) == 1
    task = tasks[0]
    assert task["Id"] == r1.target_id and task["Status"] == "Completed" and task["TaskSubtype"] == "Email"
    assert task["WhoId"] == contact_id and task["OwnerId"] == w.sf_ids[ALICE]
    assert task["Subject"] == "Email: Offer"
    files = [v for v in await w.sf_records("ContentVersion") if v.get("FirstPublishLocationId") == task["Id"]]
    assert sorted(v["PathOnClient"] for v in files) == ["offer.pdf", "terms.txt"]
    links = [x for x in await w.sf_records("ContentDocumentLink") if x.get("LinkedEntityId") == task["Id"]]
    assert len(links) == 2
