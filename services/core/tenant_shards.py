"""Tenant shard ownership for the ingestors, and their exactly-once publishing.

Ingestors have no input topic to be sharded by, so they join a consumer group on the
compacted exsf.tenants: the partitions an instance is assigned are the tenant shards it
streams. The group never commits offsets, so every assignment re-reads the partition's
tenant configs from the start (compaction keeps that small); later records are config
changes (restart that tenant) or tombstones (stop it). No other coordinator exists.

Each owned shard has one transactional producer, `exsf-<service>-<partition>`: a delta
page's events and the cursor that follows them commit together, and a zombie instance that
lost the shard is fenced when the new owner starts the same transactional id.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar, cast

import structlog

from services.core.bus.base import Bus, Consumer, Message, Producer, TopicPartition, getmany_until
from services.core.metrics import ASSIGNED_PARTITIONS, STREAMS_ACTIVE, TRANSACTION_SECONDS
from services.core.processor import LEAVE_TIMEOUT_S, Output
from services.core.tenants import Tenant, TenantConfigError
from services.core.topics import CURSORS, TENANTS, Namespace, Topics

log = structlog.get_logger(__name__)


class ShardPublisher:
    """Publishes a batch of records and a cursor in one transaction for one shard."""

    def __init__(
        self, bus: Bus, service: str, partition: int, cursors_topic: str = CURSORS, namespace: str = ""
    ) -> None:
        self.bus = bus
        self.namespace = namespace
        self.service = service
        self.partition = partition
        self.cursors_topic = cursors_topic
        self._producer: Producer | None = None
        # Several tenant streams share the shard's producer; transactions must not interleave.
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        self._producer = self.bus.producer(
            transactional_id=Namespace(self.namespace).transactional_id(self.service, self.partition)
        )
        await self._producer.start()

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def publish(self, records: Sequence[Output], cursor: tuple[bytes, bytes | None] | None = None) -> None:
        """All of `records` and the cursor become visible together, or none of them
        (the exception propagates; the caller retries from its previous cursor)."""
        async with self._lock:
            if self._producer is None:
                raise RuntimeError(f"shard {self.partition} publisher is stopped")
            t0 = time.perf_counter()
            try:
                async with self._producer.transaction():
                    for r in records:
                        await self._producer.send(
                            r.topic,
                            r.value,
                            key=r.key,
                            partition=self.partition if r.partition is None else r.partition,
                        )
                    if cursor is not None:
                        await self._producer.send(
                            self.cursors_topic, cursor[1], key=cursor[0], partition=self.partition
                        )
            except Exception:
                # Never reuse a transactional producer after a failed transaction.
                await self._renew()
                raise
            TRANSACTION_SECONDS.labels(self.service).observe(time.perf_counter() - t0)

    async def _renew(self) -> None:
        old, self._producer = self._producer, None
        if old is not None:
            with contextlib.suppress(Exception):
                await old.stop()
        await self.start()

    async def cursors(self) -> dict[bytes, bytes]:
        """The shard's stored cursors (compacted view)."""
        latest = await self.bus.read_latest(self.cursors_topic, [self.partition])
        return {k: m.value for k, m in latest.items() if m.value is not None}


class TenantRunner:
    """What a service runs per tenant; `stop` must end every task `start` started."""

    async def start(self) -> None:
        return None

    async def stop(self) -> None:  # pragma: no cover - interface
        raise NotImplementedError


StartTenant = Callable[[Tenant, ShardPublisher], Awaitable[TenantRunner]]


@dataclass
class _Shard:
    publisher: ShardPublisher
    tenants: dict[str, tuple[Tenant, TenantRunner]] = field(default_factory=dict)


class TenantShards:
    def __init__(
        self,
        bus: Bus,
        *,
        service: str,
        start_tenant: StartTenant,
        tenants_topic: str = TENANTS,
        cursors_topic: str = CURSORS,
        group_id: str | None = None,
        namespace: str = "",
    ) -> None:
        self.bus = bus
        self.namespace = namespace
        self.service = service
        self.start_tenant = start_tenant
        self.tenants_topic = tenants_topic
        self.cursors_topic = cursors_topic
        self.group_id = group_id or Namespace(namespace).group(service)
        self.shards: dict[int, _Shard] = {}
        self._stopping = asyncio.Event()
        # Held by the main loop while it applies tenant configs (a tenant start awaits its
        # runner) and by the revocation callback, which aiokafka runs in its coordinator
        # task at any moment. Without it a shard revoked while one of its tenants was
        # starting was stopped without that tenant, whose runner then joined the discarded
        # shard and ran on (its tasks never stopped, the tenant streamed twice once the new
        # owner started it): tests/integration/test_tenant_shards_stop.py.
        self._busy = asyncio.Lock()

    def running_tenants(self) -> set[str]:
        return {t for s in self.shards.values() for t in s.tenants}

    async def _assigned(self, tps: set[TopicPartition]) -> None:
        if self._stopping.is_set():
            # A stopping member takes no new shard: its producer could fence the live pod.
            log.info("shards.assigned_while_stopping", service=self.service, ignored=len(tps))
            return
        for tp in sorted(tps):
            if tp.partition not in self.shards:
                pub = ShardPublisher(self.bus, self.service, tp.partition, self.cursors_topic, self.namespace)
                await pub.start()
                if self._stopping.is_set():
                    # The stop came while the producer started: the clean-up in run() may
                    # already be over, so this producer must not be left to it.
                    await pub.stop()
                    log.info("shards.assigned_while_stopping", service=self.service, ignored=len(tps))
                    return
                self.shards[tp.partition] = _Shard(pub)
        ASSIGNED_PARTITIONS.labels(self.service).set(len(self.shards))
        log.info("shards.assigned", service=self.service, shards=sorted(self.shards))

    async def _revoked(self, tps: set[TopicPartition]) -> None:
        async with self._busy:  # a tenant start in flight finishes first, then stops here
            await self._revoke(tps)

    async def _revoke(self, tps: set[TopicPartition]) -> None:
        for tp in sorted(tps):
            shard = self.shards.pop(tp.partition, None)
            if shard is None:
                continue
            for tid in list(shard.tenants):
                await self._stop_tenant(shard, tid)
            await shard.publisher.stop()
        ASSIGNED_PARTITIONS.labels(self.service).set(len(self.shards))
        log.info("shards.revoked", service=self.service, shards=sorted(tp.partition for tp in tps))

    async def _stop_tenant(self, shard: _Shard, tenant_id: str) -> None:
        _, runner = shard.tenants.pop(tenant_id)
        try:
            await runner.stop()
        except Exception as exc:
            log.error("tenant.stop_failed", tenant_id=tenant_id, error=f"{type(exc).__name__}: {exc}")
        STREAMS_ACTIVE.labels(self.service).set(len(self.running_tenants()))

    async def _apply(self, partition: int, key: bytes | None, value: bytes | None) -> None:
        shard = self.shards.get(partition)
        if shard is None or key is None:
            return
        tenant_id = key.decode()
        if value is None:
            if tenant_id in shard.tenants:
                log.info("tenant.removed", tenant_id=tenant_id)
                await self._stop_tenant(shard, tenant_id)
            return
        try:
            tenant = Tenant.from_json(value)
        except (TenantConfigError, ValueError) as exc:
            log.error("tenant.config_invalid", tenant_id=tenant_id, error=str(exc))
            return
        current = shard.tenants.get(tenant_id)
        if current is not None:
            if current[0] == tenant:
                return
            await self._stop_tenant(shard, tenant_id)
        try:
            runner = await self.start_tenant(tenant, shard.publisher)
        except Exception as exc:
            log.error("tenant.start_failed", tenant_id=tenant_id, error=f"{type(exc).__name__}: {exc}")
            return
        shard.tenants[tenant_id] = (tenant, runner)
        STREAMS_ACTIVE.labels(self.service).set(len(self.running_tenants()))
        log.info("tenant.started", tenant_id=tenant_id, shard=partition, users=len(tenant.users))

    async def run(self) -> None:
        consumer = self.bus.consumer(
            [self.tenants_topic],
            group_id=self.group_id,
            on_assigned=self._assigned,
            on_revoked=self._revoked,
            auto_offset_reset="earliest",
        )
        await consumer.start()
        try:
            while not self._stopping.is_set():
                batch = await self._poll(consumer)
                async with self._busy:
                    await self._apply_batch(consumer, batch)
        finally:
            # Leave the group (revokes: every tenant stops cleanly), bounded as the
            # processor's is (see LEAVE_TIMEOUT_S: aiokafka's close can sit in a JoinGroup
            # until the group's rebalance completes).
            try:
                await asyncio.wait_for(consumer.stop(), LEAVE_TIMEOUT_S)
            except TimeoutError:
                log.warning("consumer.leave_timeout", service=self.service, seconds=LEAVE_TIMEOUT_S)
            # No transactional producer outlives the member, even one a callback left behind.
            for partition in list(self.shards):
                shard = self.shards.pop(partition)
                for tid in list(shard.tenants):
                    await self._stop_tenant(shard, tid)
                await shard.publisher.stop()

    async def _apply_batch(self, consumer: Consumer, batch: dict[TopicPartition, list[Message]]) -> None:
        for tp, msgs in batch.items():
            if tp.partition not in self.shards:
                # Delivered before the assignment callback finished: read again later.
                if tp in consumer.assignment():
                    consumer.seek(tp, msgs[0].offset)
                continue
            for m in msgs:
                if self._stopping.is_set():
                    # Start no more tenants once stopping (each start awaits its runner);
                    # the group never commits, so the next owner reads these configs anyway.
                    return
                await self._apply(tp.partition, m.key, m.value)

    async def _poll(self, consumer: Consumer) -> dict[TopicPartition, list[Message]]:
        return await getmany_until(consumer, self._stopping)

    def stop(self) -> None:
        self._stopping.set()


R = TypeVar("R", bound=TenantRunner)


class ShardedIngestor(Generic[R]):
    """An ingest service: one runner per tenant of the shards this instance owns."""

    service = "ingest"

    def __init__(self, bus: Bus, topics: Topics) -> None:
        self.bus = bus
        self.topics = topics
        self.shards = TenantShards(
            bus,
            service=self.service,
            start_tenant=self._start_tenant,
            tenants_topic=topics.tenants,
            cursors_topic=topics.cursors,
            namespace=topics.namespace.prefix,
        )

    def make_runner(self, tenant: Tenant, publisher: ShardPublisher) -> R:
        raise NotImplementedError

    @property
    def tenants(self) -> dict[str, R]:
        """The runners of the tenants running here now (derived from the owned shards)."""
        return {
            tid: cast(R, runner) for shard in self.shards.shards.values() for tid, (_, runner) in shard.tenants.items()
        }

    async def _start_tenant(self, tenant: Tenant, publisher: ShardPublisher) -> TenantRunner:
        runner = self.make_runner(tenant, publisher)
        await runner.start()
        return runner

    async def run(self) -> None:
        await self.shards.run()

    def stop(self) -> None:
        self.shards.stop()
