"""Stopping TenantShards on the real broker while tenants start, run and move between
members: run() returns, every runner that started is stopped (its task ended), no tenant
runs twice, no transactional producer is left open, and nothing is logged at ERROR.

The runners are real asyncio work (a task per tenant) whose start can be held open by the
test, so a stop or a handover lands exactly while a tenant is starting."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from structlog.testing import capture_logs

from services.core.bus.base import Producer, TopicPartition, TopicSpec
from services.core.bus.kafka import KafkaBus, KafkaProducer, KafkaSettings
from services.core.tenant_registry import TenantRegistry
from services.core.tenant_shards import ShardPublisher, TenantRunner, TenantShards
from services.core.tenants import Tenant, User
from tests.support.waiting import WAIT_S, eventually, topics_visible

PARTITIONS = 4


@dataclass
class Ledger:
    """Every runner's life, and the broken promises seen on the way."""

    live: dict[str, int] = field(default_factory=dict)  # tenant -> running runners
    started: list[str] = field(default_factory=list)
    starting: list[str] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    gate: asyncio.Event = field(default_factory=asyncio.Event)  # holds starts open while clear
    held: set[str] = field(default_factory=set)  # tenants whose start waits for the gate


class Runner(TenantRunner):
    def __init__(self, ledger: Ledger, tenant: Tenant) -> None:
        self.ledger, self.tenant_id = ledger, tenant.tenant_id
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.ledger.starting.append(self.tenant_id)
        if self.tenant_id in self.ledger.held:
            await self.ledger.gate.wait()
        if self.ledger.live.get(self.tenant_id):
            self.ledger.violations.append(f"{self.tenant_id} started while already running")
        self.ledger.live[self.tenant_id] = self.ledger.live.get(self.tenant_id, 0) + 1
        self.ledger.started.append(self.tenant_id)
        self.task = asyncio.create_task(self._stream())
        self.ledger.tasks.append(self.task)

    async def _stream(self) -> None:
        await asyncio.Event().wait()  # a delta loop between rounds: runs until cancelled

    async def stop(self) -> None:
        assert self.task is not None
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        self.ledger.live[self.tenant_id] -= 1


class CountingBus(KafkaBus):
    """The real Kafka bus; keeps every producer it hands out, to check each was stopped."""

    def __init__(self, settings: KafkaSettings) -> None:
        super().__init__(settings)
        self.producers: list[KafkaProducer] = []

    def producer(self, *, transactional_id: str | None = None) -> Producer:
        p = super().producer(transactional_id=transactional_id)
        assert isinstance(p, KafkaProducer)
        self.producers.append(p)
        return p


class WatchedShards(TenantShards):
    """Notes when the group starts revoking this member's shards."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.revoking = asyncio.Event()

    async def _revoked(self, tps: set[TopicPartition]) -> None:
        self.revoking.set()
        await super()._revoked(tps)


def tenant(tid: str) -> Tenant:
    return Tenant(tid, (User(f"u@{tid}.test", "005000000000001AAA"),))


@dataclass
class Cluster:
    bootstrap: str
    prefix: str
    ledger: Ledger
    buses: list[CountingBus] = field(default_factory=list)

    async def member(self) -> tuple[WatchedShards, asyncio.Task[None]]:
        bus = CountingBus(KafkaSettings(bootstrap_servers=self.bootstrap))
        await bus.start()
        self.buses.append(bus)

        async def start(t: Tenant, pub: ShardPublisher) -> TenantRunner:
            r = Runner(self.ledger, t)
            await r.start()
            return r

        s = WatchedShards(
            bus,
            service="ing",
            start_tenant=start,
            tenants_topic=self.prefix + "tenants",
            cursors_topic=self.prefix + "cursors",
            group_id=self.prefix + "ing",
        )
        return s, asyncio.create_task(s.run())

    async def close(self) -> None:
        for b in self.buses:
            await b.stop()

    def assert_clean(self) -> None:
        led = self.ledger
        assert led.violations == []
        assert all(n == 0 for n in led.live.values()), led.live
        assert all(t.done() for t in led.tasks), "a tenant's task outlived its member"
        left = [p for b in self.buses for p in b.producers if not p.stopped]
        assert left == [], f"{len(left)} producers left open"


async def setup(kafka_bus: KafkaBus, kafka_bootstrap: str, prefix: str, ids: list[str]) -> Cluster:
    tenants_topic, cursors = prefix + "tenants", prefix + "cursors"
    await kafka_bus.create_topics(
        [TopicSpec(tenants_topic, PARTITIONS, compacted=True), TopicSpec(cursors, PARTITIONS, compacted=True)]
    )
    await topics_visible(kafka_bus, tenants_topic, cursors, partitions=PARTITIONS)
    reg = TenantRegistry(kafka_bus, tenants_topic)
    for tid in ids:
        await reg.put(tenant(tid))
    return Cluster(kafka_bootstrap, prefix, Ledger())


def errors(logs: Sequence[Mapping[str, Any]], caplog: pytest.LogCaptureFixture) -> list[str]:
    """ERROR lines of ours (structlog) and of the libraries (stdlib logging, e.g. aiokafka's
    "LeaveGroup request failed")."""
    ours = [str(e) for e in logs if e.get("log_level") in ("error", "critical")]
    return ours + [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


async def test_stop_while_tenants_start(
    kafka_bus: KafkaBus, kafka_bootstrap: str, topic_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    ids = [f"tenant-{i}" for i in range(12)]
    cluster = await setup(kafka_bus, kafka_bootstrap, topic_prefix, ids)
    led = cluster.ledger
    led.held = set(ids)  # every start waits until the test opens the gate
    with capture_logs() as logs:
        a, ta = await cluster.member()

        async def one_starting() -> bool:
            return len(led.starting) == 1

        await eventually(one_starting, "the first tenant is starting")
        a.stop()
        led.gate.set()  # the start in flight completes; no further tenant may start
        await asyncio.wait_for(ta, WAIT_S)  # bound: a regression fails instead of hanging
        await cluster.close()
    assert led.started == led.starting[:1], "tenants were started after the stop"
    cluster.assert_clean()
    assert errors(logs, caplog) == []


async def test_stop_during_handover_of_a_starting_tenant(
    kafka_bus: KafkaBus, kafka_bootstrap: str, topic_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    ids = [f"tenant-{i}" for i in range(8)]
    cluster = await setup(kafka_bus, kafka_bootstrap, topic_prefix, ids)
    led = cluster.ledger
    led.gate.set()
    with capture_logs() as logs:
        a, ta = await cluster.member()

        async def all_on_a() -> bool:
            return a.running_tenants() == set(ids)

        await eventually(all_on_a, "a runs every tenant")
        # A new tenant whose start hangs on a; meanwhile b joins, so the group revokes
        # a's shards while that start is in flight.
        led.gate.clear()
        led.held = {"late"}
        await TenantRegistry(kafka_bus, topic_prefix + "tenants").put(tenant("late"))

        async def late_starting() -> bool:
            return "late" in led.starting

        await eventually(late_starting, "a is starting the late tenant")
        b, tb = await cluster.member()
        await asyncio.wait_for(a.revoking.wait(), WAIT_S)
        await asyncio.sleep(0.5)  # let a revocation that does not wait run to its end
        led.gate.set()
        everyone = set(ids) | {"late"}

        async def split() -> bool:
            ra, rb = a.running_tenants(), b.running_tenants()
            return bool(ra) and bool(rb) and ra | rb == everyone and not ra & rb

        await eventually(split, "a and b share the tenants, each once")
        assert all(n <= 1 for n in led.live.values()), led.live
        # Both stop at once (a rolling restart's worst case), one of them mid-handover.
        b.stop()
        a.stop()
        await asyncio.wait_for(asyncio.gather(ta, tb), WAIT_S)
        await cluster.close()
    cluster.assert_clean()
    assert errors(logs, caplog) == []
