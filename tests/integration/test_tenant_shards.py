"""Ingestor shard ownership through the consumer group on exsf.tenants, on both buses."""

from __future__ import annotations

import asyncio

from services.core.bus.base import Bus, TopicPartition, TopicSpec
from services.core.processor import Output
from services.core.tenant_registry import TenantRegistry
from services.core.tenant_shards import ShardPublisher, TenantRunner, TenantShards
from services.core.tenants import Tenant, User
from services.core.topics import shard_of
from tests.support.waiting import eventually, topics_visible


class Runner(TenantRunner):
    def __init__(self, log: list[tuple[str, str, str]], who: str, tenant: Tenant) -> None:
        self.log, self.who, self.tenant = log, who, tenant
        log.append((who, "start", tenant.tenant_id))

    async def stop(self) -> None:
        self.log.append((self.who, "stop", self.tenant.tenant_id))


def tenant(tid: str, policy: str = "latest-wins") -> Tenant:
    return Tenant(tid, (User(f"u@{tid}.test", "005000000000001AAA"),), conflict_policy=policy)  # type: ignore[arg-type]


async def test_tenants_split_between_instances_and_move_on_leave(bus: Bus, topic_prefix: str) -> None:
    tenants_topic, cursors = topic_prefix + "tenants", topic_prefix + "cursors"
    await bus.create_topics([TopicSpec(tenants_topic, 4, compacted=True), TopicSpec(cursors, 4, compacted=True)])

    await topics_visible(bus, tenants_topic, cursors, partitions=4)
    reg = TenantRegistry(bus, tenants_topic)
    ids = [f"tenant-{i}" for i in range(8)]
    for tid in ids:
        await reg.put(tenant(tid))

    log: list[tuple[str, str, str]] = []

    def starter(who: str):  # type: ignore[no-untyped-def]
        async def start(t: Tenant, pub: ShardPublisher) -> TenantRunner:
            assert pub.partition == shard_of(t.tenant_id, 4)
            return Runner(log, who, t)

        return start

    a = TenantShards(
        bus,
        service="ing",
        start_tenant=starter("a"),
        tenants_topic=tenants_topic,
        cursors_topic=cursors,
        group_id=topic_prefix + "ing",
    )
    ta = asyncio.create_task(a.run())
    await eventually(lambda: _running(a, set(ids)), "instance a runs all tenants")

    b = TenantShards(
        bus,
        service="ing",
        start_tenant=starter("b"),
        tenants_topic=tenants_topic,
        cursors_topic=cursors,
        group_id=topic_prefix + "ing",
    )
    tb = asyncio.create_task(b.run())

    async def split() -> bool:
        ra, rb = a.running_tenants(), b.running_tenants()
        return bool(ra) and bool(rb) and ra | rb == set(ids) and not (ra & rb)

    await eventually(split, "tenants split between a and b, each exactly once")

    # A config change restarts the tenant where it runs; a tombstone stops it.
    owner = a if "tenant-3" in a.running_tenants() else b
    who = "a" if owner is a else "b"
    await reg.put(tenant("tenant-3", "salesforce-wins"))
    await eventually(lambda: _started_twice(log, who, "tenant-3"), "tenant-3 restarted with the new config")
    await reg.remove("tenant-5")
    await eventually(lambda: _not_running(a, b, "tenant-5"), "tenant-5 stopped")

    b.stop()
    await tb
    expected = set(ids) - {"tenant-5"}
    await eventually(lambda: _running(a, expected), "a takes over b's tenants")
    a.stop()
    await ta
    assert a.running_tenants() == set()


async def test_publisher_commits_records_and_cursor_together(bus: Bus, topic_prefix: str) -> None:
    out, cursors = topic_prefix + "changes", topic_prefix + "cursors"
    await bus.create_topics([TopicSpec(out, 2), TopicSpec(cursors, 2, compacted=True)])
    await topics_visible(bus, out, cursors, partitions=2)
    pub = ShardPublisher(bus, topic_prefix + "ing", 1, cursors)
    await pub.start()
    await pub.publish([Output(out, b"e1", b"t"), Output(out, b"e2", b"t")], (b"t/u/contacts", b"delta-1"))
    try:
        await pub.publish([Output(out, b"e3", b"t"), Output(out + ".missing", b"x", b"t")], (b"t/u/contacts", b"d-2"))
    except Exception:
        pass  # the failed transaction must leave no trace
    await pub.publish([Output(out, b"e3", b"t")], (b"t/u/contacts", b"delta-2"))
    assert await pub.cursors() == {b"t/u/contacts": b"delta-2"}
    await pub.stop()
    latest = await bus.read_latest(out, [1])
    assert latest[b"t"].value == b"e3"
    c = bus.consumer([out], group_id=None, assign=[TopicPartition(out, 1)])
    await c.start()
    c.seek(TopicPartition(out, 1), 0)
    got = []
    for _ in range(10):
        for msgs in (await c.getmany(timeout_ms=200)).values():
            got += [m.value for m in msgs]
    await c.stop()
    assert got == [b"e1", b"e2", b"e3"]


async def _running(s: TenantShards, ids: set[str]) -> bool:
    return s.running_tenants() == ids


async def _started_twice(log: list[tuple[str, str, str]], who: str, tid: str) -> bool:
    return log.count((who, "start", tid)) >= 2


async def _not_running(a: TenantShards, b: TenantShards, tid: str) -> bool:
    return tid not in a.running_tenants() | b.running_tenants()
