"""services/reconciler on both buses: changes in, commands out, results close links, state
restored from exsf.state after a restart, poison messages dead-lettered, old tombstones
trimmed by the sweep."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest

from services.core.bus.base import Bus, Consumer, Producer, TopicPartition
from services.core.envelopes import ChangeEvent, Command, CommandResult, decode_command, encode
from services.core.sideserver import Health
from services.core.state_store import StateStore
from services.core.tenant_registry import TenantRegistry
from services.core.tenants import Tenant, User
from services.core.topics import Topics, tenant_key, topic_specs
from services.reconciler.service import ReconcilerService
from tests.support.waiting import eventually, topics_visible

ALICE = "alice@contoso.test"
TENANT = Tenant("contoso", (User(ALICE, "005000000000001AAA"),), safety_sweep_seconds=1)


@dataclass
class World:
    bus: Bus
    topics: Topics
    group: str
    producer: Producer
    readers: dict[str, Consumer]
    got: dict[str, list[bytes]] = field(default_factory=dict)
    service: ReconcilerService | None = None
    task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.service = ReconcilerService(
            self.bus, self.topics, Health(), store=StateStore(), group_id=self.group, tick_seconds=0.2
        )
        self.task = asyncio.create_task(self.service.run())

    async def stop(self) -> None:
        assert self.service and self.task
        self.service.stop()
        await self.task

    async def linked_to(self, salesforce_id: str) -> bool:
        """Whether the running reconciler holds a link to this Salesforce record."""
        assert self.service is not None
        states = [s for per in self.service.handler.states.values() for s in per.values()]
        return any(link.salesforce.id == salesforce_id for s in states for link in s.links.values())

    async def send(self, topic: str, value: bytes) -> None:
        await self.producer.send_and_wait(topic, value, key=tenant_key("contoso"))

    async def pull(self, topic: str) -> list[bytes]:
        for msgs in (await self.readers[topic].getmany(timeout_ms=100)).values():
            self.got.setdefault(topic, []).extend(m.value or b"" for m in msgs)
        return self.got.get(topic, [])

    async def wait_commands(self, topic: str, n: int) -> list[Command]:
        async def enough() -> bool:
            return len(await self.pull(topic)) >= n

        await eventually(enough, f"{n} commands on {topic}")
        return [decode_command(v) for v in self.got[topic]]


@pytest.fixture
async def world(bus: Bus, topic_prefix: str) -> AsyncIterator[World]:
    topics = Topics.with_prefix(topic_prefix)
    await bus.create_topics(topic_specs(2, topic_prefix))

    await topics_visible(bus, topics.state, topics.results, topics.deadletter, partitions=2)
    await TenantRegistry(bus, topics.tenants).put(TENANT)
    producer = bus.producer()
    await producer.start()
    readers = {}
    for t in (topics.commands_salesforce, topics.commands_exchange, topics.deadletter, topics.audit):
        c = bus.consumer([t], group_id=None, assign=[TopicPartition(t, p) for p in range(2)])
        await c.start()
        for p in range(2):
            c.seek(TopicPartition(t, p), 0)
        readers[t] = c
    w = World(bus, topics, topic_prefix + "reconciler", producer, readers)
    try:
        yield w
    finally:
        if w.task and not w.task.done():
            await w.stop()
        for c in readers.values():
            await c.stop()
        await producer.stop()


def contact_event(**kw: Any) -> ChangeEvent:
    base: dict[str, Any] = dict(
        tenant_id="contoso",
        user=ALICE,
        source="exchange",
        entity="contact",
        source_id="AAMk-1",
        op="upsert",
        version="ck1",
        observed_at="2026-11-29T10:00:00Z",
        modified_at="2026-11-29T10:00:00Z",
        record={"given_name": "Ann", "family_name": "Lee", "email": "ann@x.test"},
    )
    base.update(kw)
    return ChangeEvent(**base)


async def test_commands_results_restart_and_poison(world: World) -> None:
    w = world
    t = w.topics
    await w.start()
    await w.send(t.changes_exchange, encode(contact_event()))
    [create] = await w.wait_commands(t.commands_salesforce, 1)
    assert create.action == "create" and create.entity == "contact" and create.user == ALICE
    assert create.fields["email"] == "ann@x.test"

    # A poison message is dead-lettered and the partition keeps going.
    await w.send(t.changes_exchange, b'{"schema": 1, "tenant_id": "contoso", "op": "explode"}')
    await w.send(
        t.results,
        encode(
            CommandResult(
                command_id=create.command_id,
                tenant_id="contoso",
                user=ALICE,
                target="salesforce",
                entity="contact",
                link_id=create.link_id,
                status="applied",
                target_id="003000000000001AAA",
                new_version="2026-11-29T10:00:01.000Z",
                modified_at="2026-11-29T10:00:01.000Z",
            )
        ),
    )

    async def dead() -> bool:
        return len(await w.pull(t.deadletter)) >= 1

    await eventually(dead, "poison dead-lettered")
    rec = orjson.loads(w.got[t.deadletter][0])
    assert rec["service"] == "reconciler" and "'op'" in rec["error"]

    await eventually(lambda: w.linked_to("003000000000001AAA"), "the result completes the link")

    # Restart with an empty local store: state comes back from exsf.state.
    await w.stop()
    await w.start()
    # A Salesforce delete the ingestor could not attribute (user "*") reaches the right mailbox.
    await w.send(
        t.changes_salesforce,
        encode(
            ChangeEvent(
                tenant_id="contoso",
                user="*",
                source="salesforce",
                entity="contact",
                source_id="003000000000001AAA",
                op="delete",
                version="deleted@1",
                observed_at="2026-11-29T11:00:00Z",
                modified_at="2026-11-29T11:00:00Z",
            )
        ),
    )
    [delete] = await w.wait_commands(t.commands_exchange, 1)
    assert delete.action == "delete" and delete.target_id == "AAMk-1" and delete.user == ALICE
    assert len(await w.pull(t.commands_salesforce)) == 1, "nothing was re-issued after the restart"


async def test_safety_sweep_retries_a_failed_create(world: World) -> None:
    w = world
    t = w.topics
    await w.start()
    await w.send(t.changes_exchange, encode(contact_event(source_id="AAMk-9")))
    [create] = await w.wait_commands(t.commands_salesforce, 1)
    await w.send(
        t.results,
        encode(
            CommandResult(
                command_id=create.command_id,
                tenant_id="contoso",
                user=ALICE,
                target="salesforce",
                entity="contact",
                link_id=create.link_id,
                status="failed",
                error="PermanentError: REQUIRED_FIELD_MISSING",
            )
        ),
    )
    # Nothing new arrives on either side; only the sweep can try again.
    retried = await w.wait_commands(t.commands_salesforce, 2)
    assert retried[1].action == "create" and retried[1].link_id == create.link_id
    assert retried[1].command_id != create.command_id


async def test_salesforce_event_without_time_zone_does_not_clear_it(world: World) -> None:
    w = world
    t = w.topics
    await w.start()
    rec = {
        "subject": "Review",
        "start": "2026-12-01T09:00:00Z",
        "end": "2026-12-01T10:00:00Z",
        "time_zone": "Europe/Berlin",
    }
    await w.send(t.changes_exchange, encode(contact_event(entity="event", source_id="AAMk-ev", record=rec)))
    [create] = await w.wait_commands(t.commands_salesforce, 1)
    await w.send(
        t.results,
        encode(
            CommandResult(
                command_id=create.command_id,
                tenant_id="contoso",
                user=ALICE,
                target="salesforce",
                entity="event",
                link_id=create.link_id,
                status="applied",
                target_id="00U000000000001AAA",
                new_version="v1",
                modified_at="2026-11-29T10:00:01.000Z",
            )
        ),
    )
    await eventually(lambda: w.linked_to("00U000000000001AAA"), "the result completes the link")
    # Salesforce has no time-zone field: its record of the event lacks it, with a new subject.
    sf_rec = {k: v for k, v in rec.items() if k != "time_zone"} | {"subject": "Review (moved room)"}
    await w.send(
        t.changes_salesforce,
        encode(
            ChangeEvent(
                tenant_id="contoso",
                user=ALICE,
                source="salesforce",
                entity="event",
                source_id="00U000000000001AAA",
                op="upsert",
                version="v2",
                observed_at="2026-11-29T10:05:00Z",
                modified_at="2026-11-29T10:05:00Z",
                record=sf_rec,
            )
        ),
    )
    [update] = await w.wait_commands(t.commands_exchange, 1)
    assert update.action == "update" and update.fields == {"subject": "Review (moved room)"}
    assert update.context.record is not None and update.context.record["time_zone"] == "Europe/Berlin"


async def test_old_tombstones_are_trimmed_from_the_state_topic(world: World) -> None:
    w = world
    t = w.topics
    day_ms = 24 * 3600 * 1000
    now_ms = int(time.time() * 1000)
    # Deletes of items never seen leave tombstones; the input's timestamp is the decision's
    # "now", so one sent as if 20 days ago is an old tombstone, one from today a young one.
    for sid, ts_ms in (("AAMk-old", now_ms - 20 * day_ms), ("AAMk-new", now_ms)):
        ev = contact_event(source_id=sid, op="delete", record=None, version=f"del-{sid}")
        await w.producer.send_and_wait(t.changes_exchange, encode(ev), key=tenant_key("contoso"), timestamp_ms=ts_ms)
    state = w.bus.consumer([t.state], group_id=None, assign=[TopicPartition(t.state, p) for p in range(2)])
    await state.start()
    for p in range(2):
        state.seek(TopicPartition(t.state, p), 0)
    seen: list[tuple[bytes, bytes | None]] = []
    try:
        await w.start()

        async def trimmed() -> bool:
            for msgs in (await state.getmany(timeout_ms=100)).values():
                seen.extend((m.key or b"", m.value) for m in msgs)
            return any(v is None for _, v in seen)

        await eventually(trimmed, "a tombstone on exsf.state")
    finally:
        await state.stop()
    written = {k: orjson.loads(v) for k, v in seen if v is not None}
    by_source = {v["exchange"]["id"]: k for k, v in written.items()}
    assert set(by_source) == {"AAMk-old", "AAMk-new"}
    assert [k for k, v in seen if v is None] == [by_source["AAMk-old"]]
    # The running state forgot it; the young one stays.
    assert w.service is not None
    [st] = [s for per in w.service.handler.states.values() for s in per.values()]
    assert {link.exchange.id for link in st.links.values()} == {"AAMk-new"}
