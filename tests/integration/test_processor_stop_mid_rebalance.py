"""A processor told to stop while its group is in the middle of a rebalance stops at once
(issue 11: shutdown races; a clean stop of every process). Real broker, real group: a third
member joins while another member is frozen (SIGSTOP), so the broker holds the rebalance
open until the frozen member's 60 s session expires. aiokafka's getmany does not return
during that time, and its close waits for the pending JoinGroup; before the fix the stopping
member waited with it (a reconciler that ignored SIGTERM until it was killed)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

from services.core.bus.base import Message, TopicSpec
from services.core.bus.kafka import KafkaBus
from services.core.processor import Output, PartitionedProcessor
from tests.support.waiting import eventually, topics_visible

FROZEN_MEMBER = textwrap.dedent("""
    import asyncio, sys
    from aiokafka import AIOKafkaConsumer
    from services.core.bus.assignor import CoPartitionedAssignor

    async def main() -> None:
        c = AIOKafkaConsumer(sys.argv[2], group_id=sys.argv[3], bootstrap_servers=sys.argv[1],
                             enable_auto_commit=False, session_timeout_ms=60000, heartbeat_interval_ms=1000,
                             partition_assignment_strategy=(CoPartitionedAssignor,))
        await c.start()
        while True:
            await c.getmany(timeout_ms=200)
            if c.assignment():
                print("assigned", flush=True)

    asyncio.run(main())
""")


def _spawn(bootstrap: str, topic: str, group: str) -> subprocess.Popen[bytes]:
    root = Path(__file__).resolve().parents[2]
    return subprocess.Popen([sys.executable, "-c", FROZEN_MEMBER, bootstrap, topic, group], stdout=subprocess.PIPE,
                            cwd=root, env={**os.environ, "PYTHONPATH": str(root)})


class Quiet:
    async def assigned(self, partition: int) -> None:
        return None

    async def revoked(self, partition: int) -> None:
        return None

    async def handle(self, partition: int, message: Message) -> list[Output]:
        return []

    async def committed(self, partition: int) -> None:
        return None

    async def aborted(self, partition: int) -> None:
        return None


async def test_stop_during_a_stalled_rebalance_returns_promptly(kafka_bus: KafkaBus, kafka_bootstrap: str) -> None:
    name = f"stall{uuid.uuid4().hex[:8]}"
    topic, group = f"{name}.in", f"{name}-group"
    await kafka_bus.create_topics([TopicSpec(topic, 4), TopicSpec(f"{name}.dl", 4)])
    await topics_visible(kafka_bus, topic, partitions=4)

    def member() -> PartitionedProcessor:
        return PartitionedProcessor(kafka_bus, service="stall", group_id=group, topics=[topic], handler=Quiet(),
                                    deadletter_topic=f"{name}.dl", transactional_prefix=f"{name}-txn")

    a = member()
    task_a = asyncio.create_task(a.run())
    frozen = _spawn(kafka_bootstrap, topic, group)
    c: PartitionedProcessor | None = None
    task_c: asyncio.Task[None] | None = None
    try:
        assert frozen.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(frozen.stdout.readline), 60)
        assert line.startswith(b"assigned"), line

        async def a_settled() -> bool:
            return bool(a._parts) and len(a._parts) < 4  # sharing the group with the other member

        await eventually(a_settled, "the processor holds part of the partitions", timeout=60)
        os.kill(frozen.pid, signal.SIGSTOP)
        # A third member joins: the broker waits for every member to rejoin, the frozen one
        # included, until its 60 s session expires.
        c = member()
        task_c = asyncio.create_task(c.run())
        await asyncio.sleep(4)
        assert not task_a.done()
        t0 = time.monotonic()
        a.stop()
        await asyncio.wait_for(task_a, 40)
        stopped_in = time.monotonic() - t0
        # Well before the frozen member's session (60 s) ends the rebalance; the bound is
        # generous for a loaded machine, the point is not waiting for the group.
        assert stopped_in < 30, stopped_in
        assert not a._parts and not a._unrestored, "every partition's producer was closed"
    finally:
        os.kill(frozen.pid, signal.SIGKILL)
        frozen.wait(10)
        if c is not None and task_c is not None:
            c.stop()
            await asyncio.wait_for(task_c, 40)
        if not task_a.done():
            task_a.cancel()


class Gated(Quiet):
    """Holds the first message until `gate` opens, so a rebalance lands mid-batch."""

    def __init__(self, out: str) -> None:
        self.out = out
        self.gate = asyncio.Event()
        self.holding = asyncio.Event()

    async def handle(self, partition: int, message: Message) -> list[Output]:
        if message.value == b"held":
            self.holding.set()
            await self.gate.wait()
        return [Output(self.out, message.value, message.key)]


async def test_a_revocation_waits_for_the_transaction_in_flight(kafka_bus: KafkaBus) -> None:
    name = f"rev{uuid.uuid4().hex[:8]}"
    topic, out, group = f"{name}.in", f"{name}.out", f"{name}-group"
    await kafka_bus.create_topics([TopicSpec(topic, 2), TopicSpec(out, 2), TopicSpec(f"{name}.dl", 2)])
    await topics_visible(kafka_bus, topic, out, partitions=2)
    handler = Gated(out)

    def member(h: Quiet) -> PartitionedProcessor:
        return PartitionedProcessor(kafka_bus, service="rev", group_id=group, topics=[topic], handler=h,
                                    deadletter_topic=f"{name}.dl", transactional_prefix=f"{name}-txn")

    a = member(handler)
    task_a = asyncio.create_task(a.run())
    await eventually(lambda: _true(len(a._parts) == 2), "the first member owns both partitions", timeout=60)
    producer = kafka_bus.producer()
    await producer.start()
    await producer.send_and_wait(topic, b"held", key=b"k", partition=0)
    await producer.stop()
    await asyncio.wait_for(handler.holding.wait(), 30)
    # A second member joins while the first holds a batch of partition 0 mid-transaction:
    # the group revokes partition 0 (co-partitioned, range style) from the first member.
    b = member(Gated(out))
    b_handler = b.handler
    assert isinstance(b_handler, Gated)
    b_handler.gate.set()
    task_b = asyncio.create_task(b.run())
    try:
        await asyncio.sleep(3)  # the revocation is now waiting for the batch
        handler.gate.set()
        await eventually(lambda: _true(bool(b._parts)), "the second member got its partition", timeout=60)
        a.stop()
        # Its main loop is not stuck on a stopped producer. (asyncio.wait, not wait_for: a
        # regression must fail here, not hang in cancelling a task that cannot finish.)
        done, _ = await asyncio.wait({task_a}, timeout=30)
        assert task_a in done, "the first member did not stop: its loop hangs on a transaction"
        committed = await _read_committed(kafka_bus, out)
        assert committed.count(b"held") == 1, committed
    finally:
        b.stop()
        await asyncio.wait({task_b}, timeout=30)
        for t in (task_a, task_b):
            if not t.done():
                t.cancel()  # not awaited: it may never finish (see above)


async def _true(value: bool) -> bool:
    return value


async def _read_committed(bus: KafkaBus, topic: str) -> list[bytes]:
    out: list[bytes] = []
    async for batch in bus.read_batches(topic):  # read_committed: only what a transaction committed
        out += [m.value or b"" for m in batch]
    return out
