"""/readyz of a real reconciler on a real broker: 503 naming the partitions whose state is
still being restored from exsf.state, ready once all are; a rebalance that hands it more
partitions drops readiness again until those are restored. The group join is not held up
by the restore (it runs outside the rebalance callback)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from prometheus_client import CollectorRegistry

from services.core.bus.base import Bus
from services.core.sideserver import Health, SideServer
from services.core.state_store import StateStore
from services.core.tenant_registry import TenantRegistry
from services.core.tenants import Tenant, User
from services.core.topics import Topics, topic_specs
from services.reconciler.core.state import LinkRecord, SideState
from services.reconciler.service import ReconcilerService
from tests.support.waiting import eventually, topics_visible

ALICE = "alice@contoso.test"
TENANT = Tenant("contoso", (User(ALICE, "005000000000001AAA"),))
PARTITIONS = 4
LINKS = 3000  # on partition 0: large enough that restore streams many batches


class GatedStore(StateStore):
    """A real file store whose restores wait for the test's go-ahead, so the test sees
    the restoring phase without relying on how long a restore takes."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.gate = asyncio.Event()
        self.waiting: set[int] = set()

    async def restore(self, bus: Bus, topic: str, partition: int, *, batch_size: int = 500) -> int:
        self.waiting.add(partition)
        await self.gate.wait()
        self.waiting.discard(partition)
        return await super().restore(bus, topic, partition, batch_size=batch_size)


async def readyz(port: int) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}/readyz") as r:
        return r.status, await r.json()


async def test_readyz_waits_for_restore_and_drops_on_rebalance(bus: Bus, topic_prefix: str, tmp_path: Path) -> None:
    topics = Topics.with_prefix(topic_prefix)
    await bus.create_topics(topic_specs(PARTITIONS, topic_prefix))
    await topics_visible(bus, topics.state, topics.results, topics.changes_exchange, partitions=PARTITIONS)
    await TenantRegistry(bus, topics.tenants).put(TENANT)
    p = bus.producer()
    await p.start()
    for i in range(LINKS):
        rec = LinkRecord(
            tenant_id="contoso", entity="contact", link_id=f"L{i}", user=ALICE, status="linked",
            exchange=SideState(id=f"AAMk-{i}"), salesforce=SideState(id=f"003{i:015d}"),
        )  # fmt: skip
        await p.send(topics.state, orjson.dumps(rec.to_dict()), key=rec.key.encode(), partition=0)
    await p.send_and_wait(topics.state, None, key=b"contoso/contact/L0", partition=0)  # a tombstone
    await p.stop()

    group = topic_prefix + "reconciler"

    def member(name: str) -> tuple[ReconcilerService, Health, GatedStore]:
        health = Health()
        health.set_ready(True)  # what runtime does once start-up is over
        store = GatedStore(tmp_path / f"{name}.sqlite")
        svc = ReconcilerService(bus, topics, health, store=store, group_id=group)
        return svc, health, store

    a, a_health, a_store = member("a")
    side = SideServer(a_health, host="127.0.0.1", port=0, registry=CollectorRegistry())
    port = await side.start()
    a_task = asyncio.create_task(a.run())
    b_task: asyncio.Task[None] | None = None
    try:

        async def all_waiting() -> bool:
            return a_store.waiting == set(range(PARTITIONS))

        await eventually(all_waiting, "member a assigned every partition, restores pending")
        status, body = await readyz(port)
        assert status == 503
        assert body["pending"] == [f"reconciler/partition-{n}" for n in range(PARTITIONS)]

        a_store.gate.set()

        async def ready() -> bool:
            return (await readyz(port))[0] == 200

        await eventually(ready, "a ready once every partition is restored")
        assert a_store.count(0) == LINKS - 1  # latest per key, the tombstone deleted
        assert sum(len(s.links) for s in a.handler.states[0].values()) == LINKS - 1

        # A second member takes some partitions; when it leaves, a gets them back and is
        # not ready until it has restored them again.
        b, _b_health, b_store = member("b")
        b_store.gate.set()
        b_task = asyncio.create_task(b.run())

        async def split() -> bool:
            return bool(b.processor._parts) and len(a.processor._parts) < PARTITIONS

        await eventually(split, "the group split the partitions over a and b")
        moved = sorted(b.processor._parts)
        a_store.gate.clear()
        b.stop()
        await b_task
        b_task = None

        async def restoring_moved() -> bool:
            status, body = await readyz(port)
            # Both buses rebalance eagerly (every partition revoked and assigned again), so
            # the pending list holds at least the partitions that moved.
            pending = set(body.get("pending", []))
            return status == 503 and {f"reconciler/partition-{n}" for n in moved} <= pending

        await eventually(restoring_moved, "a not ready while restoring the partitions b gave up")
        a_store.gate.set()
        await eventually(ready, "a ready again")
        assert sorted(a.processor._parts) == list(range(PARTITIONS))
    finally:
        a_store.gate.set()
        if b_task is not None:
            b.stop()
            await b_task
        a.stop()
        await a_task
        await side.stop()
