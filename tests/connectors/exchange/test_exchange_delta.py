"""Delta rounds through ExchangeClient.delta_pages against the emulator."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from services.connectors.exchange.client import ExchangeClient
from services.connectors.exchange.models import DeltaPage, DeltaStream, PreparedMailbox, link_id_of
from services.core.errors import CursorExpired

MAILBOX = "alice@contoso.test"
Emu = Any


async def full_round(client: ExchangeClient, stream: DeltaStream, link: str | None = None,
                     page_size: int | None = None) -> list[DeltaPage]:
    return [p async for p in client.delta_pages(MAILBOX, stream, link, page_size=page_size)]


async def test_contacts_multi_page_round_then_only_new_changes(
    emu: Emu, client: ExchangeClient, prepared: PreparedMailbox
) -> None:
    stream = DeltaStream.contacts(prepared.contact_folder_id)
    ids = []
    for n in range(23):
        c = await client.create_contact(MAILBOX, prepared.contact_folder_id, {"givenName": f"P{n}"}, f"l-{n}")
        ids.append(c["id"])
    await emu.admin.create_item(MAILBOX, "contact", {"givenName": "elsewhere"})  # default folder: not tracked

    pages = await full_round(client, stream, page_size=10)
    assert [len(p.items) for p in pages] == [10, 10, 3]
    assert all(p.next_link and not p.delta_link for p in pages[:-1])
    assert pages[-1].delta_link and not pages[-1].next_link
    seen = [it["id"] for p in pages for it in p.items]
    assert sorted(seen) == sorted(ids)
    assert all(it["@odata.etag"] and link_id_of(it) for p in pages for it in p.items)

    # Nothing changed: the deltaLink gives an empty page and a new deltaLink.
    quiet = await full_round(client, stream, pages[-1].delta_link)
    assert len(quiet) == 1 and quiet[0].items == [] and quiet[0].removed == [] and quiet[0].delta_link

    # The user edits one in Outlook, exsf deletes another: only those come back.
    await emu.admin.update_item(MAILBOX, ids[3], {"jobTitle": "Buyer"})
    await client.delete_item(MAILBOX, "contact", ids[5])
    later = await full_round(client, stream, quiet[0].delta_link)
    changed = [it for p in later for it in p.items]
    assert [it["id"] for it in changed] == [ids[3]]
    assert changed[0]["jobTitle"] == "Buyer"
    assert [r for p in later for r in p.removed] == [ids[5]]


async def test_cursor_per_page_resumes_round(client: ExchangeClient, prepared: PreparedMailbox) -> None:
    stream = DeltaStream.contacts(prepared.contact_folder_id)
    for n in range(5):
        await client.create_contact(MAILBOX, prepared.contact_folder_id, {"givenName": f"R{n}"}, f"r-{n}")
    first = await client.delta_page(MAILBOX, stream, page_size=2)
    assert first.next_link is not None and first.cursor == first.next_link
    # A restarted ingestor continues from the persisted nextLink.
    rest = await full_round(client, stream, first.cursor, page_size=2)
    assert sum(len(p.items) for p in [first, *rest]) == 5


async def test_message_moved_out_of_folder_is_removed_there(
    emu: Emu, client: ExchangeClient, prepared: PreparedMailbox
) -> None:
    stream = DeltaStream.messages(prepared.mail_folder_id)
    inbox_msg = await emu.admin.create_item(MAILBOX, "message", {"subject": "Offer"}, container="inbox")
    start = await full_round(client, stream)
    assert [it for p in start for it in p.items] == []

    moved_in = await client.move_message(MAILBOX, inbox_msg["id"], prepared.mail_folder_id)
    arrived = await full_round(client, stream, start[-1].delta_link)
    assert [it["id"] for p in arrived for it in p.items] == [moved_in["id"]]
    assert arrived[0].items[0]["subject"] == "Offer"

    # The user drags it back to the inbox in Outlook.
    await emu.admin.move_item(MAILBOX, moved_in["id"], "inbox")
    left = await full_round(client, stream, arrived[-1].delta_link)
    assert [r for p in left for r in p.removed] == [moved_in["id"]]
    assert [it for p in left for it in p.items] == []


async def test_evicted_token_raises_cursor_expired_and_full_round_recovers(
    emu: Emu, client: ExchangeClient, prepared: PreparedMailbox
) -> None:
    stream = DeltaStream.tasks(prepared.todo_list_id)
    made = [await client.create_task(MAILBOX, prepared.todo_list_id, {"title": f"T{n}"}, f"t-{n}") for n in range(3)]
    pages = await full_round(client, stream)
    await emu.admin.evict_delta_tokens()
    with pytest.raises(CursorExpired) as gone:
        await client.delta_page(MAILBOX, stream, pages[-1].delta_link)
    assert gone.value.status == 410 and gone.value.code == "SyncStateNotFound"
    fresh = await full_round(client, stream)
    items = [it for p in fresh for it in p.items]
    assert sorted(it["id"] for it in items) == sorted(t["id"] for t in made)
    assert {link_id_of(it) for it in items} == {"t-0", "t-1", "t-2"}


async def test_calendar_view_delta_expands_series_and_reads_link_ids(
    emu: Emu, client: ExchangeClient, prepared: PreparedMailbox
) -> None:
    window = DeltaStream.events(datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC))
    single = await client.create_event(MAILBOX, {
        "subject": "Kick-off", "start": {"dateTime": "2026-01-07T15:00:00", "timeZone": "UTC"},
        "end": {"dateTime": "2026-01-07T16:00:00", "timeZone": "UTC"}}, "ev-1")
    series = await emu.admin.create_item(MAILBOX, "event", {
        "subject": "Weekly sync", "categories": ["Salesforce"],
        "start": {"dateTime": "2026-01-05T09:00:00", "timeZone": "W. Europe Standard Time"},
        "end": {"dateTime": "2026-01-05T09:30:00", "timeZone": "W. Europe Standard Time"},
        "recurrence": {"pattern": {"type": "weekly", "interval": 1, "daysOfWeek": ["monday"]},
                       "range": {"type": "numbered", "startDate": "2026-01-05", "numberOfOccurrences": 10}}})
    await emu.admin.create_item(MAILBOX, "event", {
        "subject": "Outside", "start": {"dateTime": "2026-03-01T10:00:00", "timeZone": "UTC"},
        "end": {"dateTime": "2026-03-01T11:00:00", "timeZone": "UTC"}})

    pages = await full_round(client, window, page_size=3)
    items = [it for p in pages for it in p.items]
    by_type: dict[str, list[dict[str, Any]]] = {}
    for it in items:
        by_type.setdefault(it["type"], []).append(it)
    assert [it["id"] for it in by_type["singleInstance"]] == [single["id"]]
    assert len(by_type["seriesMaster"]) == 1 and by_type["seriesMaster"][0]["recurrence"]["pattern"]["type"] == "weekly"
    occ = by_type["occurrence"]
    assert len(occ) == 4  # Mondays 5, 12, 19, 26 January
    assert all(o["seriesMasterId"] == series["id"] for o in occ)
    assert occ[0]["start"] == {"dateTime": "2026-01-05T08:00:00.0000000", "timeZone": "UTC"}  # 09:00 Berlin
    assert link_id_of(by_type["singleInstance"][0]) == "ev-1"

    # Cancel one occurrence in Outlook: the next round reports it removed.
    occ_id = occ[1]["id"]
    await client.delete_item(MAILBOX, "event", occ_id)
    later = await full_round(client, window, pages[-1].delta_link)
    assert occ_id in [r for p in later for r in p.removed]
    assert occ_id not in [it["id"] for p in later for it in p.items]
