"""The bus contract, run against every backend (embedded SQLite and a real Kafka broker).

A service may rely on exactly what is proven here."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest

from services.core.bus.base import Bus, Consumer, Message, ProducerFenced, TopicPartition, TopicSpec
from services.core.bus.partitioning import partition_for
from tests.support.waiting import collect, eventually


async def quiet(consumer: Consumer, rounds: int = 5) -> list[Message]:
    """Whatever arrives over a few polls: used to show that nothing more comes."""
    out: list[Message] = []
    for _ in range(rounds):
        for msgs in (await consumer.getmany(timeout_ms=200)).values():
            out.extend(msgs)
    return out


async def make_topic(bus: Bus, name: str, partitions: int = 3, compacted: bool = False) -> str:
    await bus.create_topics([TopicSpec(name, partitions, compacted)])
    await eventually(lambda: _has(bus, name), f"topic {name} visible")
    return name


async def _has(bus: Bus, name: str) -> bool:
    try:
        return await bus.partitions_for(name) > 0
    except Exception:
        return False


async def reader(bus: Bus, topic: str) -> Consumer:
    n = await bus.partitions_for(topic)
    c = bus.consumer([topic], group_id=None, assign=[TopicPartition(topic, p) for p in range(n)])
    await c.start()
    for p in range(n):
        c.seek(TopicPartition(topic, p), 0)
    return c


async def test_create_topics_is_idempotent(bus: Bus, topic_prefix: str) -> None:
    spec = TopicSpec(topic_prefix + "idem", 4)
    assert await bus.create_topics([spec]) == [spec.name]
    assert await bus.create_topics([spec]) == []
    await eventually(lambda: _has(bus, spec.name), "topic visible")
    assert await bus.partitions_for(spec.name) == 4


async def test_keys_land_on_the_murmur2_partition_in_order(bus: Bus, topic_prefix: str) -> None:
    topic = await make_topic(bus, topic_prefix + "order", 3)
    p = bus.producer()
    await p.start()
    keys = [f"tenant-{i % 5}".encode() for i in range(30)]
    for i, k in enumerate(keys):
        await p.send(topic, str(i).encode(), key=k)
    md = await p.send_and_wait(topic, b"last", key=b"tenant-0")
    await p.stop()
    assert md.partition == partition_for(b"tenant-0", 3)
    c = await reader(bus, topic)
    got = await collect(c, 31)
    await c.stop()
    for m in got:
        assert m.partition == partition_for(m.key, 3)
    for key in set(keys):
        values = [int(m.value or b"-1") for m in got if m.key == key and m.value != b"last"]
        assert values == sorted(values) and len(values) == 6


async def test_aborted_transaction_is_invisible_and_committed_one_is_whole(bus: Bus, topic_prefix: str) -> None:
    topic = await make_topic(bus, topic_prefix + "txn", 2)
    p = bus.producer(transactional_id=topic_prefix + "txn-producer")
    await p.start()
    with pytest.raises(RuntimeError):
        async with p.transaction():
            for i in range(5):
                await p.send(topic, f"aborted-{i}".encode(), key=b"t1")
            raise RuntimeError("crash before commit")
    async with p.transaction():
        for i in range(5):
            await p.send(topic, f"committed-{i}".encode(), key=b"t1")
    await p.stop()
    c = await reader(bus, topic)
    got = await collect(c, 5)
    got += await quiet(c)
    await c.stop()
    assert [m.value for m in got] == [f"committed-{i}".encode() for i in range(5)]


async def test_offsets_commit_atomically_with_the_transaction(bus: Bus, topic_prefix: str) -> None:
    src = await make_topic(bus, topic_prefix + "src", 1)
    dst = await make_topic(bus, topic_prefix + "dst", 1)
    group = topic_prefix + "g"
    p0 = bus.producer()
    await p0.start()
    for i in range(4):
        await p0.send_and_wait(src, str(i).encode(), key=b"k")
    await p0.stop()

    tp = TopicPartition(src, 0)
    c = bus.consumer([src], group_id=group)
    await c.start()
    msgs = await collect(c, 4)
    p = bus.producer(transactional_id=topic_prefix + "proc-0")
    await p.start()
    # First attempt aborts: neither the output nor the offset may stick.
    await p.begin_transaction()
    await p.send(dst, b"out-1", key=b"k")
    await p.send_offsets_to_transaction({tp: msgs[1].offset + 1}, group)
    await p.abort_transaction()
    # Second attempt commits output and offset together.
    async with p.transaction():
        await p.send(dst, b"out-2", key=b"k")
        await p.send_offsets_to_transaction({tp: msgs[2].offset + 1}, group)
    await p.stop()
    await c.stop()

    check = bus.consumer([src], group_id=group)
    await check.start()
    resumed = await collect(check, 1)
    await check.stop()
    assert resumed[0].value == b"3"
    r = await reader(bus, dst)
    out = await collect(r, 1) + await quiet(r)
    await r.stop()
    assert [m.value for m in out] == [b"out-2"]


async def test_consumer_restarted_in_group_resumes_after_last_commit(bus: Bus, topic_prefix: str) -> None:
    topic = await make_topic(bus, topic_prefix + "resume", 2)
    group = topic_prefix + "resume-group"
    p = bus.producer()
    await p.start()
    for i in range(10):
        await p.send_and_wait(topic, str(i).encode(), key=f"k{i}".encode())
    await p.stop()

    c1 = bus.consumer([topic], group_id=group)
    await c1.start()
    first = await collect(c1, 10)
    # Commit only what "was processed": the first message of each partition.
    done = {}
    for m in first:
        done.setdefault(m.tp, m.offset + 1)
    await c1.commit(done)
    await c1.stop()

    c2 = bus.consumer([topic], group_id=group)
    await c2.start()
    again = await collect(c2, 10 - len(done))
    again += await quiet(c2)
    await c2.stop()
    assert sorted(m.value for m in again) == sorted(m.value for m in first if m.offset >= done[m.tp])


async def test_two_members_split_partitions_and_take_over_on_leave(bus: Bus, topic_prefix: str) -> None:
    topic = await make_topic(bus, topic_prefix + "grp", 4)
    group = topic_prefix + "split"
    events: list[tuple[str, str, frozenset[TopicPartition]]] = []

    def cb(name: str, kind: str) -> Callable[[set[TopicPartition]], Awaitable[None]]:
        async def f(tps: set[TopicPartition]) -> None:
            events.append((name, kind, frozenset(tps)))

        return f

    a = bus.consumer([topic], group_id=group, on_assigned=cb("a", "assigned"), on_revoked=cb("a", "revoked"))
    b = bus.consumer([topic], group_id=group, on_assigned=cb("b", "assigned"), on_revoked=cb("b", "revoked"))
    await a.start()

    async def a_has(n: int) -> bool:
        await a.getmany(timeout_ms=100)
        return len(a.assignment()) == n

    await eventually(lambda: a_has(4), "a owns all 4 partitions")
    await b.start()

    async def split() -> bool:
        await asyncio.gather(a.getmany(timeout_ms=100), b.getmany(timeout_ms=100))
        return len(a.assignment()) == 2 and len(b.assignment()) == 2

    await eventually(split, "a and b own 2 partitions each")
    assert a.assignment().isdisjoint(b.assignment())
    assert any(e[:2] == ("a", "revoked") for e in events), "a must have revoked before the split"

    await b.stop()

    await eventually(lambda: a_has(4), "a takes back all partitions after b leaves")
    assert ("b", "revoked") in [e[:2] for e in events]
    await a.stop()


async def test_zombie_producer_is_fenced(bus: Bus, topic_prefix: str) -> None:
    topic = await make_topic(bus, topic_prefix + "fence", 1)
    tid = topic_prefix + "reconciler-0"
    old = bus.producer(transactional_id=tid)
    await old.start()
    await old.begin_transaction()
    await old.send(topic, b"from-zombie", key=b"k")
    new = bus.producer(transactional_id=tid)
    await new.start()
    with pytest.raises(ProducerFenced):
        await old.send(topic, b"more", key=b"k")
        await old.commit_transaction()
    await old.stop()
    async with new.transaction():
        await new.send(topic, b"from-new-owner", key=b"k")
    await new.stop()
    r = await reader(bus, topic)
    got = await collect(r, 1) + await quiet(r)
    await r.stop()
    assert [m.value for m in got] == [b"from-new-owner"]


async def test_read_latest_gives_the_compacted_view(bus: Bus, topic_prefix: str) -> None:
    topic = await make_topic(bus, topic_prefix + "state", 3, compacted=True)
    p = bus.producer(transactional_id=topic_prefix + "state-w")
    await p.start()
    async with p.transaction():
        await p.send(topic, b"v1", key=b"a")
        await p.send(topic, b"v1", key=b"b")
        await p.send(topic, b"v1", key=b"c")
    async with p.transaction():
        await p.send(topic, b"v2", key=b"a")
        await p.send(topic, None, key=b"b")  # tombstone
    await p.stop()
    latest = await bus.read_latest(topic)
    assert {k: m.value for k, m in latest.items()} == {b"a": b"v2", b"c": b"v1"}
    pc = partition_for(b"c", 3)
    assert await bus.read_latest(topic, partitions=[pc]) == {k: m for k, m in latest.items() if m.partition == pc}


async def test_offsets_for_times_finds_the_first_record_at_or_after(bus: Bus, topic_prefix: str) -> None:
    topic = await make_topic(bus, topic_prefix + "time", 1)
    p = bus.producer()
    await p.start()
    base = int(time.time() * 1000) - 100_000
    for i in range(5):
        await p.send_and_wait(topic, str(i).encode(), key=b"k", timestamp_ms=base + i * 1000)
    await p.stop()
    tp = TopicPartition(topic, 0)
    found = await bus.offsets_for_times(topic, base + 2500)
    assert found[tp] is not None
    c = bus.consumer([topic], group_id=None, assign=[tp])
    await c.start()
    c.seek(tp, found[tp])
    got = await collect(c, 2)
    await c.stop()
    assert [m.value for m in got] == [b"3", b"4"]
    assert (await bus.offsets_for_times(topic, base + 10_000))[tp] is None


async def test_pause_stops_delivery_until_resume(bus: Bus, topic_prefix: str) -> None:
    topic = await make_topic(bus, topic_prefix + "pause", 1)
    tp = TopicPartition(topic, 0)
    p = bus.producer()
    await p.start()
    await p.send_and_wait(topic, b"x", key=b"k")
    await p.stop()
    c = bus.consumer([topic], group_id=None, assign=[tp])
    await c.start()
    c.seek(tp, 0)
    c.pause(tp)
    assert await quiet(c, 3) == []
    c.resume(tp)
    assert [m.value for m in await collect(c, 1)] == [b"x"]
    await c.stop()


async def test_group_is_co_partitioned_for_1_to_7_members_joining_and_leaving(bus: Bus, topic_prefix: str) -> None:
    """Partition n of every topic a group reads is on one member, whatever the member count
    (including 5 and 7, which do not divide 12): our transactional ids are per partition
    number, so two members holding the same number would fence each other."""
    topics = [await make_topic(bus, f"{topic_prefix}co{i}", 12) for i in range(3)]
    group = topic_prefix + "co"
    members: list[Consumer] = []
    stop = asyncio.Event()

    async def load() -> None:
        # Records keep flowing while members join and leave (mid-stream rebalances).
        p = bus.producer()
        await p.start()
        i = 0
        while not stop.is_set():
            for t in topics:
                await p.send(t, b"x", key=str(i).encode())
            i += 1
            await asyncio.sleep(0.05)
        await p.stop()

    def check(assignments: list[set[TopicPartition]]) -> bool:
        owners: dict[int, int] = {}
        for idx, tps in enumerate(assignments):
            numbers = {tp.partition for tp in tps}
            # No partition of a topic on a member that lacks the same number of another topic.
            if tps != {TopicPartition(t, n) for t in topics for n in numbers}:
                return False
            for n in numbers:
                if n in owners:
                    return False
                owners[n] = idx
        return sorted(owners) == list(range(12))

    async def stable(count: int) -> bool:
        await asyncio.gather(*(m.getmany(timeout_ms=100) for m in members))
        got = [m.assignment() for m in members]
        return len(members) == count and all(got)

    async def settled(count: int) -> None:
        async def ok() -> bool:
            return await stable(count) and check([m.assignment() for m in members])

        await eventually(ok, f"{count} members co-partitioned", timeout=60)
        # Spread evenly: 12 numbers over `count` members differ by at most one.
        sizes = [len({tp.partition for tp in m.assignment()}) for m in members]
        assert max(sizes) - min(sizes) <= 1, sizes

    loader = asyncio.create_task(load())
    try:
        for count in range(1, 8):
            c = bus.consumer(topics, group_id=group)
            await c.start()
            members.append(c)
            await settled(count)
        # Leave in an order that is neither join order nor its reverse.
        for idx in (3, 0, 4, 1, 2, 0):
            await members.pop(idx).stop()
            await settled(len(members))
    finally:
        stop.set()
        await loader
        for m in members:
            await m.stop()
