"""Kafka side of webhooks across pods.

- SubscriptionLog: every pod follows exsf.subscriptions (compacted, all partitions, from
  the start) into its SubscriptionTable, and the owner of a stream records / removes its
  subscription there.
- forward_to_owner: the receiving pod sends a validated notification to the owning shard's
  partition of exsf.notifications.
- NotificationInbox: the owner reads its shards' partitions of exsf.notifications from the
  end (a notification older than the pod is covered by its first delta round) and pokes.

Records on exsf.notifications carry only the subscription id and what happened, never the
clientState: validation already happened at the receiving pod.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable

import orjson
import structlog

from services.core.bus.base import Bus, Producer, TopicPartition
from services.ingest_exchange.subscription_table import SubscriptionRecord, SubscriptionTable

log = structlog.get_logger(__name__)

OnNotification = Callable[[str, str], Awaitable[None]]  # (subscription id, "change" | lifecycle event)


class SubscriptionLog:
    def __init__(self, bus: Bus, topic: str, table: SubscriptionTable | None = None) -> None:
        self.bus = bus
        self.topic = topic
        self.table = table or SubscriptionTable()
        self._producer: Producer | None = None
        self._task: asyncio.Task[None] | None = None
        self.caught_up = asyncio.Event()

    async def start(self) -> None:
        self._producer = self.bus.producer()
        await self._producer.start()
        self._task = asyncio.create_task(self._follow())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._producer is not None:
            await self._producer.stop()

    async def record(self, rec: SubscriptionRecord) -> None:
        """Stored before the caller relies on it (other pods validate against it)."""
        assert self._producer is not None
        await self._producer.send_and_wait(self.topic, rec.encode(), key=rec.id.encode(), partition=rec.shard)
        self.table.apply(rec.id.encode(), rec.encode())

    async def remove(self, rec: SubscriptionRecord) -> None:
        assert self._producer is not None
        await self._producer.send_and_wait(self.topic, None, key=rec.id.encode(), partition=rec.shard)
        self.table.apply(rec.id.encode(), None)

    async def _follow(self) -> None:
        # A transient bus error (a topic whose metadata has not reached this broker yet, a
        # broker restart) must not end the following for good: without the table this pod
        # only answers for its own subscriptions, so retry until stopped.
        while True:
            try:
                await self._follow_inner()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("subscription_log.retrying", error=f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(1.0)

    async def _follow_inner(self) -> None:
        n = await self.bus.partitions_for(self.topic)
        tps = [TopicPartition(self.topic, p) for p in range(n)]
        ends = await self.bus.end_offsets(tps)
        consumer = self.bus.consumer([self.topic], group_id=None, assign=tps)
        await consumer.start()
        try:
            for tp in tps:
                consumer.seek(tp, 0)
            if all(ends[tp] == 0 for tp in tps):
                self.caught_up.set()
            while True:
                batch = await consumer.getmany(timeout_ms=500)
                for msgs in batch.values():
                    for m in msgs:
                        if not self.table.apply(m.key, m.value):
                            log.warning("subscription_log.unreadable", partition=m.partition, offset=m.offset)
                if not self.caught_up.is_set() and all([await consumer.position(tp) >= ends[tp] for tp in tps]):
                    self.caught_up.set()
                    log.info("subscription_log.caught_up", subscriptions=len(self.table))
        finally:
            await consumer.stop()


async def forward_to_owner(producer: Producer, topic: str, rec: SubscriptionRecord, what: str) -> None:
    value = orjson.dumps({"subscriptionId": rec.id, "event": what})
    await producer.send_and_wait(topic, value, key=rec.id.encode(), partition=rec.shard)


class NotificationInbox:
    def __init__(self, bus: Bus, topic: str, partitions: Iterable[int], on_notification: OnNotification) -> None:
        self.bus = bus
        self.topic = topic
        self.partitions = sorted(set(partitions))
        self.on_notification = on_notification
        self._task: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        tps = [TopicPartition(self.topic, p) for p in self.partitions]
        ends = await self.bus.end_offsets(tps)
        consumer = self.bus.consumer([self.topic], group_id=None, assign=tps)
        await consumer.start()
        try:
            for tp in tps:
                consumer.seek(tp, ends[tp])
            self.ready.set()
            while True:
                batch = await consumer.getmany(timeout_ms=500)
                for msgs in batch.values():
                    for m in msgs:
                        try:
                            d = orjson.loads(m.value or b"")
                            sid, what = str(d["subscriptionId"]), str(d["event"])
                        except (ValueError, KeyError, TypeError):
                            log.warning("notification.unreadable", partition=m.partition, offset=m.offset)
                            continue
                        try:
                            await self.on_notification(sid, what)
                        except Exception as exc:
                            log.warning("notification.handler_failed", subscription_id=sid, error=type(exc).__name__)
        finally:
            await consumer.stop()
