"""services/ingest_salesforce against the Salesforce emulator (aiosfstream-ng and our REST
client over HTTP) on both buses: initial load, CDC to full records, owner filtering,
deletes, restart without repeats, GAP_OVERFLOW and expired replay ids."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from services.core.bus.base import Bus, Producer, TopicPartition
from services.core.envelopes import ChangeEvent, decode_change_event
from services.core.sideserver import Health
from services.core.tenant_registry import TenantRegistry
from services.core.tenants import SalesforceEndpoint, Tenant, User
from services.core.topics import Namespace, Topics, topic_specs
from services.emulators.salesforce import SalesforceEmulatorConfig, serve
from services.emulators.salesforce.admin_client import SalesforceAdmin
from services.ingest_salesforce.service import SalesforceIngestService
from tests.support.waiting import eventually, topics_visible

ALICE, BOB, CAROL = "alice@contoso.test", "bob@contoso.test", "carol@contoso.test"


@dataclass
class World:
    bus: Bus
    topics: Topics
    admin: SalesforceAdmin
    ids: dict[str, str]
    tenant: Tenant
    service: SalesforceIngestService | None = None
    task: asyncio.Task[None] | None = None
    reader: Any = None
    seen: list[ChangeEvent] | None = None

    async def start(self) -> None:
        self.service = SalesforceIngestService(self.bus, self.topics, Health(), long_poll_timeout_s=5.0)
        self.task = asyncio.create_task(self.service.run())

    async def stop(self) -> None:
        assert self.service is not None and self.task is not None
        self.service.stop()
        await self.task

    async def pull(self) -> list[ChangeEvent]:
        assert self.seen is not None
        for msgs in (await self.reader.getmany(timeout_ms=200)).values():
            self.seen.extend(decode_change_event(m.value) for m in msgs)
        return self.seen

    async def wait_for(self, pred: Any, what: str) -> list[ChangeEvent]:
        async def check() -> bool:
            return any(pred(e) for e in await self.pull())

        await eventually(check, what)
        return [e for e in await self.pull() if pred(e)]


@pytest.fixture
async def world(bus: Bus, topic_prefix: str) -> AsyncIterator[World]:
    runner, base_url = await serve(users=(ALICE, BOB, CAROL), config=SalesforceEmulatorConfig(long_poll_timeout_s=1.0))
    admin = SalesforceAdmin(base_url)
    ids = await admin.users()
    topics = Topics.with_prefix(topic_prefix)
    await bus.create_topics(topic_specs(2, topic_prefix))

    await topics_visible(bus, topics.cursors, partitions=2)
    tenant = Tenant(
        "contoso",
        (User(ALICE, ids[ALICE]), User(BOB, ids[BOB])),  # carol is not enrolled
        salesforce=SalesforceEndpoint(
            login_url=base_url,
            client_id="exsf",
            username=ALICE,
            client_secret_ref="literal:x",
            password_ref="literal:password",
        ),
        entities=("contact", "event", "task"),
    )
    await TenantRegistry(bus, topics.tenants).put(tenant)
    reader = bus.consumer(
        [topics.changes_salesforce],
        group_id=None,
        assign=[TopicPartition(topics.changes_salesforce, p) for p in range(2)],
    )
    await reader.start()
    for p in range(2):
        reader.seek(TopicPartition(topics.changes_salesforce, p), 0)
    w = World(bus, topics, admin, ids, tenant, reader=reader, seen=[])
    try:
        yield w
    finally:
        if w.task is not None and not w.task.done():
            await w.stop()
        await reader.stop()
        await admin.close()
        await runner.cleanup()


async def _streaming(w: World) -> bool:
    assert w.service is not None
    t = w.service.tenants.get("contoso")
    return t is not None and t.sessions >= 1 and t.cursor.loaded


async def test_load_stream_filter_delete_and_resume(world: World) -> None:
    w = world
    pre = await w.admin.create("Contact", {"LastName": "Before", "Email": "before@x.test"}, as_user=ALICE)
    await w.start()
    await w.wait_for(lambda e: e.source_id == pre and e.op == "upsert", "initial SOQL load")
    await eventually(lambda: _streaming(w), "stream subscribed")

    c = await w.admin.create("Contact", {"FirstName": "Ann", "LastName": "Lee", "Email": "ann@x.test"}, as_user=BOB)
    created = (await w.wait_for(lambda e: e.source_id == c, "CDC create"))[0]
    assert created.user == BOB and created.record == {"given_name": "Ann", "family_name": "Lee", "email": "ann@x.test"}
    await w.admin.update("Contact", c, {"Title": "CTO"})
    upd = await w.wait_for(lambda e: e.source_id == c and (e.record or {}).get("job_title") == "CTO", "update")
    # UPDATE events carry only changed fields; the ingestor re-reads, so the record is whole.
    assert upd[0].record is not None and upd[0].record["given_name"] == "Ann"

    # A record exsf created carries its link id in the external id field: the event says so.
    ours = await w.admin.create("Contact", {"LastName": "Ours", "exsf_Link_Id__c": "link-42"}, as_user=ALICE)
    tagged = (await w.wait_for(lambda e: e.source_id == ours, "our own create"))[0]
    assert tagged.origin.link_tag == "link-42"
    other = await w.admin.create("Contact", {"LastName": "NotMine"}, as_user=CAROL)
    await w.admin.delete("Contact", c)
    await w.wait_for(lambda e: e.source_id == c and e.op == "delete", "delete")
    assert not any(e.source_id == other for e in await w.pull()), "records of non-enrolled owners are dropped"

    # Restart: resumes from the stored replay ids, nothing published twice.
    await w.stop()
    before = len(await w.pull())
    d = await w.admin.create("Contact", {"LastName": "WhileDown"}, as_user=ALICE)
    await w.start()
    await w.wait_for(lambda e: e.source_id == d, "change made while the ingestor was down")
    await asyncio.sleep(1.0)
    after = await w.pull()
    assert [e.source_id for e in after[before:]] == [d]


async def test_overflow_and_expired_replay_catch_up(world: World) -> None:
    w = world
    await w.start()
    await eventually(lambda: _streaming(w), "stream subscribed")
    a = await w.admin.create("Contact", {"LastName": "A"}, as_user=ALICE)
    await w.wait_for(lambda e: e.source_id == a, "a")

    # GAP_OVERFLOW: header only; the ingestor runs a SOQL catch-up for the entity.
    b = await w.admin.create("Contact", {"LastName": "B"}, as_user=ALICE)
    await w.wait_for(lambda e: e.source_id == b, "b")
    await w.admin.overflow("Contact")
    assert w.service is not None
    runner = w.service.tenants["contoso"]
    n = runner.catch_ups
    await eventually(lambda: _more(runner, n), "catch-up after GAP_OVERFLOW")

    # Replay id out of retention while down: the restart catches up instead of losing changes.
    await w.stop()
    c = await w.admin.create("Contact", {"LastName": "C"}, as_user=ALICE)
    await w.admin.prune_events()
    await w.start()
    await w.wait_for(lambda e: e.source_id == c, "change recovered by catch-up after expired replay id")


async def _more(runner: Any, n: int) -> bool:
    return runner.catch_ups > n


async def test_unmappable_cdc_record_is_dead_lettered_with_the_batch(world: World) -> None:
    from services.connectors.salesforce.streaming import CdcMessage
    from services.core.tenant_shards import ShardPublisher
    from services.ingest_salesforce.stream import SalesforceTenant

    w = world
    pub = ShardPublisher(w.bus, "ingest-salesforce-test", 0, w.topics.cursors)
    await pub.start()
    runner = SalesforceTenant(w.tenant, pub, w.topics)
    header = {"entityName": "Event", "changeType": "CREATE", "recordIds": ["00U000000000001AAA"],
              "commitTimestamp": 1764410000000, "commitNumber": 1, "changeOrigin": ""}
    bad = CdcMessage("/data/EventChangeEvent", 7, header, {"Subject": "x", "OwnerId": w.ids[ALICE],
                                                             "StartDateTime": "garbage", "EndDateTime": "garbage"})
    good_header = dict(header, entityName="Contact", recordIds=["003000000000009AAA"], commitNumber=2)
    good = CdcMessage("/data/ContactChangeEvent", 8, good_header, {"LastName": "Fine", "OwnerId": w.ids[ALICE]})
    await runner._handle([bad, good])
    await pub.stop()
    await runner.rest.close()
    await runner.auth.close()
    events = await w.wait_for(lambda e: e.source_id == "003000000000009AAA", "the good record is published")
    assert events and not any(e.source_id == "00U000000000001AAA" for e in await w.pull())
    latest = await w.bus.read_latest(w.topics.cursors, [0])
    assert any(b"/data/ContactChangeEvent" in (m.value or b"") for m in latest.values()), "cursor moved on"
    dl = w.bus.consumer([w.topics.deadletter], group_id=None, assign=[TopicPartition(w.topics.deadletter, 0)])
    await dl.start()
    dl.seek(TopicPartition(w.topics.deadletter, 0), 0)
    recs: list[Any] = []

    async def dead() -> bool:
        for msgs in (await dl.getmany(timeout_ms=200)).values():
            recs.extend(msgs)
        return bool(recs)

    await eventually(dead, "dead letter")
    await dl.stop()
    assert b"not a date-time" in (recs[0].value or b"")


async def test_a_recurring_event_is_published_as_its_series_master_only(world: World) -> None:
    w = world
    await w.start()
    await eventually(lambda: _streaming(w), "stream subscribed")
    series = await w.admin.create(
        "Event",
        {
            "Subject": "Weekly sync",
            "StartDateTime": "2026-12-07T09:00:00.000+0000",
            "EndDateTime": "2026-12-07T09:30:00.000+0000",
            "IsRecurrence": True,
            "RecurrenceType": "RecursWeekly",
            "RecurrenceInterval": 1,
            "RecurrenceDayOfWeekMask": 2,  # Monday
            "RecurrenceStartDateTime": "2026-12-07T09:00:00.000+0000",
            "RecurrenceEndDateOnly": "2026-12-28",
        },
        as_user=ALICE,
    )
    single = await w.admin.create(
        "Event",
        {"Subject": "One-off", "StartDateTime": "2026-12-08T09:00:00.000+0000",
         "EndDateTime": "2026-12-08T09:30:00.000+0000"},
        as_user=ALICE,
    )
    children = [r["Id"] for r in await w.admin.call("GET", "/records/Event") if r.get("RecurrenceActivityId") == series]
    assert len(children) == 4, "the org made one child per Monday"
    master = (await w.wait_for(lambda e: e.source_id == series, "the series master"))[0]
    await w.wait_for(lambda e: e.source_id == single, "the event created after the series")
    assert master.record is not None and master.record["recurrence"]["pattern"]["type"] == "weekly"
    published = {e.source_id for e in await w.pull() if e.entity == "event"}
    assert published == {series, single}, "the generated occurrences are not separate items"


async def test_a_batch_whose_transaction_failed_is_published_by_the_next_session(
    world: World, bus: Bus, topic_prefix: str
) -> None:
    """The replay ids move only once the batch they cover is committed, and a channel with
    no replay id yet is caught up rather than resumed at the tip. Regressions: the cursor
    was advanced before the transaction, so a transaction that failed (a broker restart, a
    fenced producer) made the next session resume after the batch; and a channel whose
    first batch failed resumed at -1 (new events only). Either way its changes were never
    published."""
    w = world
    await w.start()
    await eventually(lambda: _streaming(w), "stream subscribed")
    assert w.service is not None
    t = w.service.tenants["contoso"]
    sessions = t.sessions
    # What a new owner of the shard (or a producer re-created after a broker restart) does:
    # it takes the transactional id, so the tenant's next transaction fails, fenced.
    usurpers: list[Producer] = []

    async def fence() -> None:
        p = bus.producer(
            transactional_id=Namespace(topic_prefix).transactional_id("ingest-salesforce", t.publisher.partition)
        )
        await p.start()
        usurpers.append(p)

    await fence()
    try:
        # The channel's first change fails: it has no replay id yet, so the next session
        # must not resume at the tip (it catches the entity up instead).
        first = await w.admin.create("Contact", {"LastName": "First", "Email": "first@x.test"}, as_user=ALICE)

        async def resumed() -> bool:
            return t.sessions > sessions

        await eventually(resumed, "a new session after the failed transaction")
        await w.wait_for(lambda e: e.source_id == first and e.op == "upsert", "the first change, caught up")
        # Now with a replay id: fenced again, the next session resumes before the failed batch.
        await fence()
        sessions = t.sessions
        c = await w.admin.create("Contact", {"LastName": "Fenced", "Email": "fenced@x.test"}, as_user=ALICE)
        await eventually(resumed, "a new session after the second failed transaction")
        await w.wait_for(lambda e: e.source_id == c and e.op == "upsert", "the change of the failed batch")
    finally:
        for p in usurpers:
            with contextlib.suppress(Exception):  # fenced in turn by the publisher's new producer
                await p.stop()
