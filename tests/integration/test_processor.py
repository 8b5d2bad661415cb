"""The exactly-once processing loop on both backends: outputs and offsets commit together,
poison goes to the dead-letter topic, Backoff pauses and retries, aborts roll back."""

from __future__ import annotations

import asyncio

import orjson

from services.core.bus.base import Bus, Message, TopicPartition, TopicSpec
from services.core.metrics import ERRORS
from services.core.processor import Backoff, BatchOutcome, Output, PartitionedProcessor
from tests.support.waiting import collect, eventually, topics_visible


class Upper:
    def __init__(self, out_topic: str) -> None:
        self.out = out_topic
        self.backoffs_left = 1
        self.events: list[tuple[str, int]] = []
        self.pending: list[bytes] = []
        self.state: list[bytes] = []

    async def assigned(self, partition: int) -> None:
        self.events.append(("assigned", partition))

    async def revoked(self, partition: int) -> None:
        self.events.append(("revoked", partition))

    async def handle(self, partition: int, message: Message) -> list[Output]:
        v = message.value or b""
        if v == b"poison":
            raise ValueError("cannot parse this")
        if v == b"throttled" and self.backoffs_left:
            self.backoffs_left -= 1
            raise Backoff(0.3, "429 from upstream")
        self.pending.append(v)
        return [Output(self.out, v.upper(), message.key)]

    async def committed(self, partition: int) -> None:
        self.state.extend(self.pending)
        self.pending = []

    async def aborted(self, partition: int) -> None:
        self.pending = []


async def test_processor_end_to_end(bus: Bus, topic_prefix: str) -> None:
    src, dst, dlq = topic_prefix + "in", topic_prefix + "out", topic_prefix + "dlq"
    await bus.create_topics([TopicSpec(src, 2), TopicSpec(dst, 2), TopicSpec(dlq, 2)])

    await topics_visible(bus, src, dst, dlq, partitions=2)
    p = bus.producer()
    await p.start()
    values = [b"a", b"b", b"poison", b"throttled", b"c", b"d"]
    for v in values:
        await p.send_and_wait(src, v, key=b"tenant-1")
    await p.stop()

    handler = Upper(dst)
    proc = PartitionedProcessor(
        bus,
        service="t",
        group_id=topic_prefix + "grp",
        topics=[src],
        handler=handler,
        deadletter_topic=dlq,
        transactional_prefix=topic_prefix + "t",
    )
    task = asyncio.create_task(proc.run())
    try:
        await eventually(lambda: _count(handler), "all good messages committed")
    finally:
        proc.stop()
        await task

    assert handler.state == [b"a", b"b", b"throttled", b"c", b"d"], "order kept across the backoff"
    n = await bus.partitions_for(dst)
    out_reader = bus.consumer([dst], group_id=None, assign=[TopicPartition(dst, i) for i in range(n)])
    await out_reader.start()
    for i in range(n):
        out_reader.seek(TopicPartition(dst, i), 0)
    outs = await collect(out_reader, 5)
    await out_reader.stop()
    assert [m.value for m in outs] == [b"A", b"B", b"THROTTLED", b"C", b"D"]
    dl = bus.consumer([dlq], group_id=None, assign=[TopicPartition(dlq, i) for i in range(n)])
    await dl.start()
    for i in range(n):
        dl.seek(TopicPartition(dlq, i), 0)
    dead = await collect(dl, 1)
    await dl.stop()
    rec = orjson.loads(dead[0].value or b"{}")
    assert rec["service"] == "t" and "ValueError: cannot parse this" in rec["error"]
    assert rec["source"]["topic"] == src and rec["source"]["offset"] == 2

    # A restarted member resumes after the committed offsets: nothing is processed twice.
    again = Upper(dst)
    proc2 = PartitionedProcessor(
        bus,
        service="t",
        group_id=topic_prefix + "grp",
        topics=[src],
        handler=again,
        deadletter_topic=dlq,
        transactional_prefix=topic_prefix + "t",
    )
    task2 = asyncio.create_task(proc2.run())
    await eventually(lambda: _assigned(again), "restarted member assigned")
    await asyncio.sleep(1.0)
    proc2.stop()
    await task2
    assert again.state == []


async def _count(h: Upper) -> bool:
    return len(h.state) >= 5


async def _assigned(h: Upper) -> bool:
    return any(e[0] == "assigned" for e in h.events)


class Batcher(Upper):
    """Batch handler: processes everything before 'throttled', asks to retry from there once."""

    def __init__(self, out_topic: str) -> None:
        super().__init__(out_topic)
        self.batches: list[list[bytes]] = []

    async def handle_batch(self, partition: int, messages: list[Message]) -> BatchOutcome:
        self.batches.append([m.value or b"" for m in messages])
        outs: list[Output] = []
        for m in messages:
            if m.value == b"throttled" and self.backoffs_left:
                self.backoffs_left -= 1
                return BatchOutcome(outs, {m.tp: m.offset}, 0.2, "429")
            if m.value != b"poison":
                self.pending.append(m.value or b"")
                outs.append(Output(self.out, (m.value or b"").upper(), m.key))
        return BatchOutcome(outs)


async def test_batch_handler_resumes_from_retry_point(bus: Bus, topic_prefix: str) -> None:
    src, dst, dlq = topic_prefix + "in", topic_prefix + "out", topic_prefix + "dlq"
    await bus.create_topics([TopicSpec(src, 1), TopicSpec(dst, 1), TopicSpec(dlq, 1)])

    await topics_visible(bus, src, dst, dlq, partitions=1)
    p = bus.producer()
    await p.start()
    for v in [b"a", b"throttled", b"c"]:
        await p.send_and_wait(src, v, key=b"tenant-1")
    await p.stop()
    h = Batcher(dst)
    proc = PartitionedProcessor(
        bus,
        service="b",
        group_id=topic_prefix + "g",
        topics=[src],
        handler=h,
        deadletter_topic=dlq,
        transactional_prefix=topic_prefix + "b",
    )
    task = asyncio.create_task(proc.run())
    try:
        await eventually(lambda: _n(h, 3), "all committed")
    finally:
        proc.stop()
        await task
    assert h.state == [b"a", b"throttled", b"c"]
    assert h.batches[0][:2] == [b"a", b"throttled"]
    assert any(b[0] == b"throttled" for b in h.batches[1:]), "the retry starts at the throttled message"


async def _n(h: Upper, n: int) -> bool:
    return len(h.state) >= n


async def test_fenced_producer_is_recreated_and_processing_continues_exactly_once(bus: Bus, topic_prefix: str) -> None:
    """A second producer with our transactional id fences ours (a zombie or late starter):
    the processor must not keep the dead producer for a partition it still owns."""
    src, dst, dlq = topic_prefix + "fin", topic_prefix + "fout", topic_prefix + "fdlq"
    await bus.create_topics([TopicSpec(src, 1), TopicSpec(dst, 1), TopicSpec(dlq, 1)])
    await topics_visible(bus, src, dst, dlq, partitions=1)
    handler = Upper(dst)
    proc = PartitionedProcessor(
        bus,
        service="t",
        group_id=topic_prefix + "fgrp",
        topics=[src],
        handler=handler,
        deadletter_topic=dlq,
        transactional_prefix=topic_prefix + "ft",
    )
    task = asyncio.create_task(proc.run())
    p = bus.producer()
    await p.start()
    try:
        await eventually(lambda: _assigned(handler), "assigned")
        for v in (b"a", b"b"):
            await p.send_and_wait(src, v, key=b"k")
        await eventually(lambda: _n(handler, 2), "first two committed")
        zombie = bus.producer(transactional_id=topic_prefix + "ft-0")
        await zombie.start()  # bumps the epoch: the processor's producer is fenced now
        for v in (b"c", b"d", b"e"):
            await p.send_and_wait(src, v, key=b"k")
        failed_before = ERRORS.labels("t", "transaction")._value.get()
        await eventually(lambda: _n(handler, 5), "processing continues after the fence", timeout=60)
        # Recovered by renewing on the fence itself, not by a second, failing transaction
        # on the dead producer.
        assert ERRORS.labels("t", "transaction")._value.get() == failed_before
        await zombie.stop()
        assert 0 in proc._parts, "still owns its partition"
    finally:
        await p.stop()
        proc.stop()
        await task
    assert handler.state == [b"a", b"b", b"c", b"d", b"e"]
    out = bus.consumer([dst], group_id=None, assign=[TopicPartition(dst, 0)])
    await out.start()
    out.seek(TopicPartition(dst, 0), 0)
    got = await collect(out, 5)
    await asyncio.sleep(1.0)
    extra = await out.getmany(timeout_ms=500)
    await out.stop()
    assert [m.value for m in got] == [b"A", b"B", b"C", b"D", b"E"]
    assert not any(extra.values()), "nothing written twice"


async def test_stopping_member_takes_no_new_assignment(bus: Bus, topic_prefix: str) -> None:
    src, dlq = topic_prefix + "sin", topic_prefix + "sdlq"
    await bus.create_topics([TopicSpec(src, 2), TopicSpec(dlq, 2)])
    await topics_visible(bus, src, dlq, partitions=2)
    handler = Upper(topic_prefix + "sout")
    proc = PartitionedProcessor(
        bus,
        service="t",
        group_id=topic_prefix + "sgrp",
        topics=[src],
        handler=handler,
        deadletter_topic=dlq,
        transactional_prefix=topic_prefix + "st",
    )
    task = asyncio.create_task(proc.run())
    await eventually(lambda: _assigned(handler), "assigned")
    proc.stop()
    # An assignment arriving during shutdown starts no producer (it could fence a live pod).
    before = dict(proc._parts)
    await proc._on_assigned({TopicPartition(src, 0), TopicPartition(src, 1)})
    assert proc._parts == before
    await task
    assert proc._parts == {}, "every transactional producer closed at exit"
