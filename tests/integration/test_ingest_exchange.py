"""services/ingest_exchange against the Graph emulator (real msgraph-sdk over HTTP) on both
buses: enrolment, initial round, webhook-driven changes, deletes vs moves, 410 resync."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson
import pytest

from services.core.bus.base import Bus, TopicPartition
from services.core.envelopes import ChangeEvent, decode_change_event
from services.core.sideserver import Health
from services.core.tenant_registry import TenantRegistry
from services.core.tenants import GraphEndpoint, Tenant, User
from services.core.topics import Topics, topic_specs
from services.emulators.graph.admin_client import GraphAdminClient
from services.emulators.graph.app import serve
from services.emulators.graph.config import GraphEmulatorConfig
from services.ingest_exchange.service import ExchangeIngestService
from tests.support.processes import free_port
from tests.support.waiting import eventually, topics_visible

ALICE, BOB = "alice@contoso.test", "bob@contoso.test"


@dataclass
class World:
    bus: Bus
    topics: Topics
    admin: GraphAdminClient
    service: ExchangeIngestService
    seen: list[ChangeEvent]
    reader: Any

    async def pull(self) -> list[ChangeEvent]:
        for msgs in (await self.reader.getmany(timeout_ms=200)).values():
            self.seen.extend(decode_change_event(m.value) for m in msgs)
        return self.seen

    async def wait_for(self, pred: Any, what: str) -> ChangeEvent:
        found: list[ChangeEvent] = []

        async def check() -> bool:
            found[:] = [e for e in await self.pull() if pred(e)]
            return bool(found)

        await eventually(check, what)
        return found[0]


@pytest.fixture
async def world(bus: Bus, topic_prefix: str) -> AsyncIterator[World]:
    cfg = GraphEmulatorConfig(mailboxes=(ALICE, BOB), client_id="exsf-app", client_secret="s3cret")
    runner, url = await serve(config=cfg)
    admin = GraphAdminClient(url)
    topics = Topics.with_prefix(topic_prefix)
    await bus.create_topics(topic_specs(2, topic_prefix))

    await topics_visible(bus, topics.cursors, topics.tenants, partitions=2)
    tenant = Tenant(
        "contoso",
        (User(ALICE, "005000000000001AAA"), User(BOB, "005000000000002AAA")),
        graph=GraphEndpoint(
            base_url=url + "/v1.0",
            authority=url,
            azure_tenant_id=cfg.tenant_id,
            client_id="exsf-app",
            client_secret_ref="literal:s3cret",
        ),
        poll_seconds=3600,  # only the webhook can make changes arrive quickly
        entities=("contact", "event", "task", "email"),
    )
    await TenantRegistry(bus, topics.tenants).put(tenant)
    port = free_port()
    service = ExchangeIngestService(
        bus, topics, Health(), webhook_host="127.0.0.1", webhook_port=port, public_url=f"http://127.0.0.1:{port}"
    )
    task = asyncio.create_task(service.run())
    reader = bus.consumer(
        [topics.changes_exchange], group_id=None, assign=[TopicPartition(topics.changes_exchange, p) for p in range(2)]
    )
    await reader.start()
    for p in range(2):
        reader.seek(TopicPartition(topics.changes_exchange, p), 0)
    try:
        yield World(bus, topics, admin, service, [], reader)
    finally:
        service.stop()
        await task
        await reader.stop()
        await admin.close()
        await runner.cleanup()


async def _enrolled(w: World) -> bool:
    t = w.service.tenants.get("contoso")
    return t is not None and len(t.prepared) == 2 and all(x.rounds >= 1 for x in t.workers) and len(t.workers) == 12


async def test_enrolment_webhook_delete_and_move(world: World) -> None:
    w = world
    await eventually(lambda: _enrolled(w), "both mailboxes prepared and streaming")
    names = [c.get("displayName") for c in await w.admin.containers(ALICE)]
    assert names.count("Salesforce Contacts") == 1 and names.count("Salesforce Emails") == 1
    assert names.count("Salesforce Tasks") == 1
    assert [c["displayName"] for c in await w.admin.categories(ALICE)].count("Salesforce") == 1

    # An edit "in Outlook" arrives through the webhook (polling is 1 h in this test).
    c = await w.admin.create_item(
        ALICE,
        "contact",
        {"givenName": "Ann", "surname": "Lee", "emailAddresses": [{"address": "Ann@X.test"}]},
        container="Salesforce Contacts",
    )
    created = await w.wait_for(lambda e: e.source_id == c["id"] and e.op == "upsert", "contact created event")
    assert created.tenant_id == "contoso" and created.user == ALICE and created.entity == "contact"
    assert created.record is not None and created.record["given_name"] == "Ann"
    assert w.service.receiver.accepted >= 1

    await w.admin.update_item(ALICE, c["id"], {"jobTitle": "CTO"})
    await w.wait_for(lambda e: e.source_id == c["id"] and (e.record or {}).get("job_title") == "CTO", "edit")

    # Moving out of the folder leaves the scope; deleting deletes.
    await w.admin.move_item(ALICE, c["id"], "contacts", keep_id=True)
    moved = await w.wait_for(lambda e: e.source_id == c["id"] and e.op != "upsert", "move out")
    assert moved.op == "left_scope" and moved.record is None
    d = await w.admin.create_item(BOB, "task", {"title": "Call back"}, container="Salesforce Tasks")
    await w.wait_for(lambda e: e.source_id == d["id"] and e.op == "upsert", "task created")
    await w.admin.delete_item(BOB, d["id"])
    gone = await w.wait_for(lambda e: e.source_id == d["id"] and e.op != "upsert", "task deleted")
    assert gone.op == "delete" and gone.user == BOB and gone.origin.stream is not None


async def test_invalid_delta_token_resyncs_without_duplicates(world: World) -> None:
    w = world
    await eventually(lambda: _enrolled(w), "streaming")
    a = await w.admin.create_item(
        ALICE, "contact", {"givenName": "A", "surname": "One"}, container="Salesforce Contacts"
    )
    b = await w.admin.create_item(
        ALICE, "contact", {"givenName": "B", "surname": "Two"}, container="Salesforce Contacts"
    )
    await w.wait_for(lambda e: e.source_id == b["id"], "b seen")
    await w.admin.evict_delta_tokens()
    await w.admin.delete_item(ALICE, a["id"])  # happens while our token is invalid
    worker = next(
        x
        for x in w.service.tenants["contoso"].workers
        if x.stream.kind == "contacts" and x.stream.container_id is not None and x.mailbox == ALICE
    )
    worker.poke.set()
    marker = await w.wait_for(
        lambda e: e.source_id == f"resync:{worker.stream.key}", "resync marker of the Salesforce Contacts stream"
    )
    assert marker.origin.resync_complete
    assert b["id"] in marker.origin.seen_ids and a["id"] not in marker.origin.seen_ids
    # b was re-published by the full round, unchanged: same version, so the same event id,
    # which is what lets the reconciler drop it as a duplicate.
    b_events = [e for e in await w.pull() if e.source_id == b["id"] and e.op == "upsert"]
    assert len(b_events) >= 2
    assert len({e.event_id for e in b_events}) == 1


async def test_default_folder_contacts_sync_by_category(world: World) -> None:
    w = world
    await eventually(lambda: _enrolled(w), "streaming")
    tagged = await w.admin.create_item(
        ALICE, "contact", {"givenName": "Tag", "surname": "Ged", "categories": ["Salesforce"]}, container="contacts"
    )
    plain = await w.admin.create_item(
        ALICE, "contact", {"givenName": "Plain", "surname": "Private"}, container="contacts"
    )
    up = await w.wait_for(lambda e: e.source_id == tagged["id"] and e.op == "upsert", "tagged contact synced")
    assert up.record is not None and up.record["given_name"] == "Tag"
    priv = await w.wait_for(lambda e: e.source_id == plain["id"], "untagged contact reported")
    assert priv.op == "left_scope" and priv.record is None

    # Moving the tagged contact into "Salesforce Contacts" is a move between synced places.
    await w.admin.move_item(ALICE, tagged["id"], "Salesforce Contacts", keep_id=True)
    await w.wait_for(
        lambda e: (
            e.source_id == tagged["id"]
            and (e.origin.stream or "").startswith("contacts:")
            and not (e.origin.stream or "").endswith(":default")
        ),
        "seen in the Salesforce folder",
    )
    # Removing the category from a default-folder contact stops syncing it (unlink, not delete).
    second = await w.admin.create_item(
        ALICE, "contact", {"givenName": "Sec", "surname": "Ond", "categories": ["Salesforce"]}, container="contacts"
    )
    await w.wait_for(lambda e: e.source_id == second["id"] and e.op == "upsert", "second synced")
    await w.admin.update_item(ALICE, second["id"], {"categories": []})
    gone = await w.wait_for(lambda e: e.source_id == second["id"] and e.op != "upsert", "category removed")
    assert gone.op == "left_scope"
    await asyncio.sleep(1.0)
    moved_unlinks = [e for e in await w.pull() if e.source_id == tagged["id"] and e.op != "upsert"]
    assert moved_unlinks == [], "a move into the synced folder must not unlink"


async def test_unmappable_item_is_dead_lettered_and_the_stream_goes_on(world: World) -> None:
    w = world
    await eventually(lambda: _enrolled(w), "streaming")
    bad = await w.admin.create_item(
        BOB,
        "task",
        {"title": "Broken", "dueDateTime": {"dateTime": "garbage", "timeZone": "UTC"}},
        container="Salesforce Tasks",
    )
    good = await w.admin.create_item(BOB, "task", {"title": "Fine"}, container="Salesforce Tasks")
    await w.wait_for(lambda e: e.source_id == good["id"], "the next item still flows")
    assert not any(e.source_id == bad["id"] for e in await w.pull())
    dl = w.bus.consumer(
        [w.topics.deadletter], group_id=None, assign=[TopicPartition(w.topics.deadletter, p) for p in range(2)]
    )
    await dl.start()
    for p in range(2):
        dl.seek(TopicPartition(w.topics.deadletter, p), 0)
    recs: list[dict[str, Any]] = []

    async def dead() -> bool:
        for msgs in (await dl.getmany(timeout_ms=200)).values():
            recs.extend(orjson.loads(m.value or b"{}") for m in msgs)
        return bool(recs)

    await eventually(dead, "dead letter written")
    await dl.stop()
    assert recs[0]["service"] == "ingest-exchange" and "not a date-time" in recs[0]["error"]
    assert recs[0]["payload"]["item"]["id"] == bad["id"]


async def test_default_todo_list_tasks_sync_by_category(world: World) -> None:
    w = world
    await eventually(lambda: _enrolled(w), "streaming")
    tagged = await w.admin.create_item(
        BOB, "task", {"title": "Tagged", "categories": ["Salesforce"]}, container="Tasks"
    )
    plain = await w.admin.create_item(BOB, "task", {"title": "Private errand"}, container="Tasks")
    up = await w.wait_for(lambda e: e.source_id == tagged["id"] and e.op == "upsert", "tagged task synced")
    assert up.record is not None and up.record["subject"] == "Tagged" and up.user == BOB
    priv = await w.wait_for(lambda e: e.source_id == plain["id"], "untagged task reported without content")
    assert priv.op == "left_scope" and priv.record is None


REC = {
    "pattern": {"type": "weekly", "interval": 1, "daysOfWeek": ["monday"], "firstDayOfWeek": "sunday"},
    "range": {"type": "numbered", "startDate": "2026-12-07", "numberOfOccurrences": 4},
}


async def test_a_recurring_series_syncs_as_its_master_only(world: World) -> None:
    w = world
    await eventually(lambda: _enrolled(w), "streaming")
    series = await w.admin.create_item(
        ALICE,
        "event",
        {
            "subject": "Weekly sync",
            "categories": ["Salesforce"],
            "start": {"dateTime": "2026-12-07T09:00:00", "timeZone": "UTC"},
            "end": {"dateTime": "2026-12-07T09:30:00", "timeZone": "UTC"},
            "recurrence": REC,
        },
    )
    single = await w.admin.create_item(
        ALICE,
        "event",
        {
            "subject": "One-off",
            "categories": ["Salesforce"],
            "start": {"dateTime": "2026-12-08T09:00:00", "timeZone": "UTC"},
            "end": {"dateTime": "2026-12-08T09:30:00", "timeZone": "UTC"},
        },
    )
    master = await w.wait_for(lambda e: e.source_id == series["id"], "the series master")
    await w.wait_for(lambda e: e.source_id == single["id"], "the single event (published after the series)")
    assert master.record is not None and master.record["recurrence"]["pattern"]["type"] == "weekly"
    events = [e for e in await w.pull() if e.entity == "event"]
    # calendarView delta also listed the 4 occurrences: none of them is published.
    assert {e.source_id for e in events} == {series["id"], single["id"]}, [e.source_id for e in events]
