"""Eager rebalances of real reconciler members on the real broker (1 -> 3 -> 2 members on
4 partitions, inputs flowing throughout).

Each rebalance revokes every partition and assigns them again, so every member restores
every partition it is given from exsf.state. The test watches each member from outside
(its group callbacks, its store and its /readyz state, sampled continuously) and proves:
- no input is handled on a partition whose state is not restored, and the state it is
  decided against holds every link already committed for that partition;
- a member reports ready only while every partition it owns is restored;
- state survives the moves: links made on member A are known to whoever owns their
  partition after A's partitions moved, and each input yields exactly one command.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from services.core.bus.base import AssignCallback, Bus, Consumer, Message, OffsetReset, TopicPartition
from services.core.bus.kafka import KafkaBus, KafkaSettings
from services.core.envelopes import ChangeEvent, decode_command, encode
from services.core.processor import Output
from services.core.sideserver import Health
from services.core.state_store import StateStore
from services.core.tenant_registry import TenantRegistry
from services.core.tenants import Tenant, User
from services.core.topics import Topics, tenant_key, topic_specs
from services.reconciler.service import ReconcilerService
from tests.support.waiting import eventually, topics_visible

PARTITIONS = 4
TENANTS = [Tenant(f"t{n}", (User(f"u@t{n}.test", f"00500000000000{n}AAA"),)) for n in range(PARTITIONS)]


class SlowRestoreStore(StateStore):
    """A real file store that knows which partitions it has restored (and not dropped
    since) and restores slowly, so inputs arrive while a restore is still running."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.loaded: set[int] = set()
        self.restores: list[int] = []

    async def restore(self, bus: Bus, topic: str, partition: int, *, batch_size: int = 1000) -> int:
        self.loaded.discard(partition)
        await asyncio.sleep(0.3)
        n = await super().restore(bus, topic, partition, batch_size=batch_size)
        self.loaded.add(partition)
        self.restores.append(partition)
        return n

    def drop(self, partition: int) -> None:
        self.loaded.discard(partition)
        super().drop(partition)


@dataclass
class Member:
    name: str
    service: ReconcilerService
    health: Health
    store: SlowRestoreStore
    bus: ObservedBus
    task: asyncio.Task[None] | None = None

    def owned(self) -> set[int]:
        return {tp.partition for tp in self.bus.owned}

    def ready(self) -> bool:
        return self.health.ready()[0]

    def links(self, partition: int) -> set[str]:
        per = self.service.handler.states.get(partition, {})
        return {lid for st in per.values() for lid in st.links}


class ObservedBus(KafkaBus):
    """The real Kafka bus; the group consumer's callbacks also record what the group has
    given this member (eagerly: the whole assignment is revoked before the next one)."""

    def __init__(self, settings: KafkaSettings) -> None:
        super().__init__(settings)
        self.owned: set[TopicPartition] = set()

    def consumer(
        self,
        topics: Sequence[str],
        *,
        group_id: str | None,
        on_assigned: AssignCallback | None = None,
        on_revoked: AssignCallback | None = None,
        auto_offset_reset: OffsetReset = "earliest",
        assign: Iterable[TopicPartition] | None = None,
    ) -> Consumer:
        if on_assigned is None or on_revoked is None:
            return super().consumer(topics, group_id=group_id, auto_offset_reset=auto_offset_reset, assign=assign)
        assigned_cb, revoked_cb = on_assigned, on_revoked

        async def assigned(tps: set[TopicPartition]) -> None:
            self.owned |= tps
            await assigned_cb(tps)

        async def revoked(tps: set[TopicPartition]) -> None:
            self.owned -= tps
            await revoked_cb(tps)

        return super().consumer(
            topics,
            group_id=group_id,
            on_assigned=assigned,
            on_revoked=revoked,
            auto_offset_reset=auto_offset_reset,
        )


@dataclass
class Watch:
    """What the test has seen committed, and every broken promise the members made."""

    committed: dict[int, set[str]] = field(default_factory=lambda: {n: set() for n in range(PARTITIONS)})
    commands: dict[str, int] = field(default_factory=dict)  # link id -> create commands seen
    violations: list[str] = field(default_factory=list)
    handled: dict[str, int] = field(default_factory=dict)  # member -> inputs handled


def observe_handling(m: Member, watch: Watch) -> None:
    """Check each input as the member's handler receives it."""
    handler = m.service.handler
    inner = handler.handle

    async def handle(partition: int, message: Message) -> list[Output]:
        # (Not m.owned(): a revocation removes the partition from it at once but waits for
        # the batch in hand, which may still be handled here.)
        if partition not in m.store.loaded or partition not in m.service.processor._parts:
            watch.violations.append(f"{m.name} handled an input of partition {partition} before its restore")
        missing = watch.committed[partition] - m.links(partition)
        if missing:
            watch.violations.append(f"{m.name} decided on partition {partition} without links {sorted(missing)}")
        watch.handled[m.name] = watch.handled.get(m.name, 0) + 1
        return await inner(partition, message)

    handler.handle = handle  # type: ignore[method-assign]


async def sample_readiness(members: list[Member], watch: Watch) -> None:
    """Ready must mean: every partition this member owns is restored and in service."""
    while True:
        for m in members:
            if m.task is None or m.task.done() or not m.ready():
                continue
            behind = {n for n in m.owned() if n not in m.store.loaded or n not in m.service.processor._parts}
            if behind:
                watch.violations.append(f"{m.name} ready while partitions {sorted(behind)} are not restored")
        await asyncio.sleep(0.005)


def contact(n: int, i: int) -> ChangeEvent:
    t = TENANTS[n]
    return ChangeEvent(
        tenant_id=t.tenant_id,
        user=t.users[0].mailbox,
        source="exchange",
        entity="contact",
        source_id=f"AAMk-{n}-{i}",
        op="upsert",
        version=f"ck{i}",
        observed_at="2026-11-29T10:00:00Z",
        modified_at="2026-11-29T10:00:00Z",
        record={"given_name": f"N{i}", "family_name": f"P{n}", "email": f"c{i}@t{n}.test"},
    )


async def test_every_rebalance_restores_every_partition_before_processing_it(
    kafka_bootstrap: str, kafka_bus: KafkaBus, topic_prefix: str, tmp_path: Path
) -> None:
    topics = Topics.with_prefix(topic_prefix)
    await kafka_bus.create_topics(topic_specs(PARTITIONS, topic_prefix))
    await topics_visible(kafka_bus, topics.state, topics.results, topics.changes_exchange, partitions=PARTITIONS)
    registry = TenantRegistry(kafka_bus, topics.tenants)
    for t in TENANTS:
        await registry.put(t)
    group = topic_prefix + "reconciler"
    watch = Watch()
    members: list[Member] = []

    async def start(name: str) -> Member:
        bus = ObservedBus(KafkaSettings(bootstrap_servers=kafka_bootstrap))
        await bus.start()
        health = Health()
        health.set_ready(True)  # what runtime does once start-up is over
        store = SlowRestoreStore(tmp_path / f"{name}.sqlite")
        m = Member(name, ReconcilerService(bus, topics, health, store=store, group_id=group), health, store, bus)
        observe_handling(m, watch)
        m.task = asyncio.create_task(m.service.run())
        members.append(m)
        return m

    async def stop(m: Member) -> None:
        m.service.stop()
        assert m.task is not None
        await m.task
        await m.bus.stop()

    live: list[Member] = []

    async def settled() -> bool:
        # The group has settled: the live members (fewer than the partitions) own every
        # partition once, each owns some, is ready and serves exactly what it owns.
        owned = [m.owned() for m in live]
        return sorted(n for o in owned for n in o) == list(range(PARTITIONS)) and all(
            m.owned() and m.ready() and set(m.service.processor._parts) == m.owned() for m in live
        )

    cmd_reader = kafka_bus.consumer(
        [topics.commands_salesforce],
        group_id=None,
        assign=[TopicPartition(topics.commands_salesforce, n) for n in range(PARTITIONS)],
    )
    await cmd_reader.start()
    for n in range(PARTITIONS):
        cmd_reader.seek(TopicPartition(topics.commands_salesforce, n), 0)

    async def read_commands() -> None:
        # read_committed: a command seen here was committed with its link's changelog.
        while True:
            for tp, msgs in (await cmd_reader.getmany(timeout_ms=200)).items():
                for msg in msgs:
                    cmd = decode_command(msg.value or b"")
                    watch.commands[cmd.link_id] = watch.commands.get(cmd.link_id, 0) + 1
                    watch.committed[tp.partition].add(cmd.link_id)

    producer = kafka_bus.producer()
    await producer.start()
    sent = 0

    async def send_one() -> None:
        nonlocal sent
        n = sent % PARTITIONS
        ev = contact(n, sent)
        await producer.send_and_wait(topics.changes_exchange, encode(ev), key=tenant_key(ev.tenant_id), partition=n)
        sent += 1

    sending = asyncio.Event()

    async def keep_sending() -> None:
        # Not cancelled mid-send: every input counted in `sent` is on the topic.
        sending.set()
        while sending.is_set():
            await send_one()
            await asyncio.sleep(0.05)

    async def all_commanded() -> bool:
        assert len(watch.commands) <= sent, "a command for an input never sent"
        return len(watch.commands) == sent

    background = [asyncio.create_task(read_commands())]
    try:
        a = await start("a")
        live.append(a)
        background.append(asyncio.create_task(sample_readiness(members, watch)))
        await eventually(settled, "a alone owns and serves every partition")
        for _ in range(2 * PARTITIONS):
            await send_one()
        await eventually(all_commanded, "a linked every contact")
        made_on_a = {n: set(watch.committed[n]) for n in range(PARTITIONS)}
        assert all(made_on_a.values())
        assert a.store.restores.count(0) == 1

        # 1 -> 3 members with inputs flowing.
        background.append(asyncio.create_task(keep_sending()))
        b = await start("b")
        live.append(b)
        c = await start("c")
        live.append(c)
        await eventually(settled, "a, b and c share the partitions")
        moved = [n for n in range(PARTITIONS) if n not in a.owned()]
        assert moved, "some partition moved away from a"
        for n in moved:
            owner = next(m for m in live if n in m.owned())
            assert made_on_a[n] <= owner.links(n), f"{owner.name} lost a's links of partition {n}"

        # 3 -> 2: a leaves; b and c take its partitions, restored from exsf.state.
        a_parts = a.owned()
        await stop(a)
        live.remove(a)
        await eventually(settled, "b and c share the partitions")
        for n in range(PARTITIONS):
            owner = next(m for m in live if n in m.owned())
            assert watch.committed[n] <= owner.links(n), f"{owner.name} lost links of partition {n}"
        for n in a_parts:
            owner = next(m for m in live if n in m.owned())
            assert made_on_a[n] <= owner.links(n)

        sending.clear()
        await background.pop()
        await eventually(all_commanded, "every input linked")
        await asyncio.sleep(1)  # a second command for any input would show up by now
        assert sorted(set(watch.commands.values())) == [1], "one create command per input"
        assert not watch.violations, "\n".join(sorted(set(watch.violations)))
        # Every eager rebalance restored every partition its members were given: b and c
        # restored on joining and again when a left.
        assert len(b.store.restores) + len(c.store.restores) >= PARTITIONS + len(moved)
        assert watch.handled.get("b", 0) + watch.handled.get("c", 0) > 0
    finally:
        for bg in background:
            bg.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        for m in live:
            await stop(m)
        await cmd_reader.stop()
        await producer.stop()
