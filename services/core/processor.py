"""Exactly-once consume-transform-produce over tenant-sharded topics.

The reconciler and the writer are both "read a batch of a partition, decide, write outputs
and the consumed offsets in one transaction". This module owns that loop so the services
only hold their decisions.

Why one transactional producer per input partition: aiokafka's offset commit inside a
transaction carries no consumer-group generation (no KIP-447), so a zombie that lost a
partition could still commit for it. Deriving the transactional id from service and
partition (`exsf-reconciler-7`) means the new owner's producer start fences the zombie.

Failure handling:
- a message the handler cannot process (poison) goes to the dead-letter topic with its
  error, inside the same transaction, and the partition moves on;
- `Backoff` from the handler (throttling) commits what is done, rewinds the partition to
  the message that must be retried and pauses it for the advised time - no spinning;
- a failed commit aborts, rebuilds the producer (never reuses it after an indefinite
  error), tells the handler to drop uncommitted state, and rewinds to the batch start.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import structlog

from services.core.bus.base import Bus, Consumer, Message, Producer, ProducerFenced, TopicPartition, getmany_until
from services.core.deadletter import deadletter_record
from services.core.metrics import ASSIGNED_PARTITIONS, DEADLETTERS, ERRORS, MESSAGES_CONSUMED, TRANSACTION_SECONDS
from services.core.sideserver import Health

log = structlog.get_logger(__name__)

RESTORE_RETRY_S = 2.0  # a failed restore (broker away) is retried after this pause
# How long a stopping member waits to leave its group. aiokafka's close first awaits the
# coordination task, which can sit in a JoinGroup until the group's rebalance completes (up
# to the rebalance timeout, max.poll.interval = 300 s) when the stop lands mid-rebalance;
# the broker drops a member that stopped heartbeating after session.timeout (10 s) anyway.
LEAVE_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class Output:
    topic: str
    value: bytes | None
    key: bytes | None
    # None: the input's partition number, which keeps a tenant on its shard everywhere.
    partition: int | None = None


class Backoff(Exception):
    """Raised by a handler: stop this partition here and retry this message later."""

    def __init__(self, seconds: float, reason: str) -> None:
        super().__init__(reason)
        self.seconds = seconds
        self.reason = reason


class PoisonMessage(Exception):
    """Raised by a handler for input it can never process (dead-lettered, skipped)."""


@dataclass
class BatchOutcome:
    """What a batch handler did with a batch: outputs to commit, and where to resume.

    Inputs at or after `retry_from[tp]` are not committed and are read again after
    `backoff_s` (the partition is paused meanwhile)."""

    outputs: list[Output]
    retry_from: dict[TopicPartition, int] = field(default_factory=dict)
    backoff_s: float = 0.0
    reason: str = ""


class BatchHandler(Protocol):
    """Alternative to `handle` for handlers that batch external calls (the writer)."""

    async def handle_batch(self, partition: int, messages: list[Message]) -> BatchOutcome: ...


class PartitionHandler(Protocol):
    async def assigned(self, partition: int) -> None:
        """Load or restore whatever the partition needs before its first message."""

    async def revoked(self, partition: int) -> None:
        """Release the partition (another instance will own it)."""

    async def handle(self, partition: int, message: Message) -> list[Output]:
        """Decide on one message. Raise PoisonMessage for bad input, Backoff to retry later;
        any other exception is treated as poison too, with its type in the record."""

    async def committed(self, partition: int) -> None:
        """The outputs of the handled messages are durable: make pending state final."""

    async def aborted(self, partition: int) -> None:
        """The transaction failed: forget state changes made since the last commit."""


@dataclass
class _Partition:
    number: int
    producer: Producer
    paused_until: float = 0.0
    input_tps: set[TopicPartition] = field(default_factory=set)


class PartitionedProcessor:
    def __init__(
        self,
        bus: Bus,
        *,
        service: str,
        group_id: str,
        topics: Sequence[str],
        handler: PartitionHandler,
        deadletter_topic: str,
        transactional_prefix: str | None = None,
        max_batch: int = 500,
        tick_seconds: float = 30.0,
        health: Health | None = None,
    ) -> None:
        self.bus = bus
        self.health = health
        self.service = service
        self.group_id = group_id
        self.topics = list(topics)
        self.handler = handler
        self.deadletter_topic = deadletter_topic
        self.txn_prefix = transactional_prefix or f"exsf-{service}"
        self.max_batch = max_batch
        self._parts: dict[int, _Partition] = {}
        self._unrestored: dict[int, _Partition] = {}  # assigned, state still being restored
        self._restores: dict[int, asyncio.Task[None]] = {}
        self._consumer: Consumer | None = None
        self._stopping = asyncio.Event()
        # Held by the main loop while it works on its partitions (ticks, a batch and its
        # transaction) and by the revocation callback, which aiokafka runs in its own
        # coordinator task at any moment: without it a revocation stopped a partition's
        # producer under a transaction in flight, whose commit then never returned (the
        # main loop hung; the member ignored SIGTERM until killed). With it the revocation
        # waits for the batch in hand to commit (or abort) first.
        self._busy = asyncio.Lock()
        self.processed = 0
        self.tick_seconds = tick_seconds
        self._next_tick = time.monotonic() + tick_seconds

    # --- group membership ----------------------------------------------------------
    async def _on_assigned(self, tps: set[TopicPartition]) -> None:
        if self._stopping.is_set():
            # A stopping member takes no new work: starting a transactional producer now
            # could fence the live pod that is about to own this partition.
            log.info("partitions.assigned_while_stopping", service=self.service, ignored=len(tps))
            return
        new = {tp.partition for tp in tps} - set(self._parts) - set(self._unrestored)
        # Not ready from the moment the partitions are ours: the producer starts below
        # await the broker, and /readyz must not answer 200 meanwhile
        # (tests/integration/test_reconciler_rebalance.py saw it do so).
        self._mark_restoring(new)
        for n in sorted({tp.partition for tp in tps}):
            part = self._parts.get(n) or self._unrestored.get(n)
            if part is None:
                producer = self.bus.producer(transactional_id=f"{self.txn_prefix}-{n}")
                await producer.start()  # fences any zombie holding this partition
                part = self._unrestored[n] = _Partition(n, producer)
                self._begin_restore(part)
            part.input_tps |= {tp for tp in tps if tp.partition == n}
        self._pause_unrestored()
        ASSIGNED_PARTITIONS.labels(self.service).set(len(self._parts) + len(self._unrestored))
        log.info("partitions.assigned", service=self.service, partitions=sorted({*self._parts, *self._unrestored}))

    # --- readiness hook: /readyz stays 503 while an assigned partition is restored ------
    def _restore_key(self, n: int) -> str:
        return f"{self.service}/partition-{n}"

    def _mark_restoring(self, partitions: set[int]) -> None:
        if self.health is not None:
            for n in partitions:
                self.health.mark_pending(self._restore_key(n))

    def _mark_restored(self, n: int) -> None:
        if self.health is not None:
            self.health.mark_done(self._restore_key(n))

    # --- restore outside the rebalance callback ----------------------------------------
    # aiokafka runs the assignment callback in its coordinator task and the group's join
    # waits for it; a long restore there delays the join (and risks the rebalance timeout).
    # So the callback only starts the producer (fencing zombies at once), pauses the
    # partition and starts a restore task; the main loop keeps polling (heartbeats and
    # max.poll.interval stay happy) and moves the partition into `_parts` - resuming it
    # and marking it ready - once its state is restored.
    def _begin_restore(self, part: _Partition) -> None:
        self._mark_restoring({part.number})
        self._restores[part.number] = asyncio.create_task(self._restore(part.number))

    async def _restore(self, n: int) -> None:
        while True:
            try:
                await self.handler.assigned(n)
                return
            except Exception as exc:  # e.g. the broker is briefly away: stay not-ready, retry
                ERRORS.labels(self.service, "restore").inc()
                log.error(
                    "partition.restore_failed", service=self.service, partition=n, error=f"{type(exc).__name__}: {exc}"
                )
                await asyncio.sleep(RESTORE_RETRY_S)

    def _pause_unrestored(self) -> None:
        if self._consumer is not None:
            for part in self._unrestored.values():
                self._consumer.pause(*(part.input_tps & self._consumer.assignment()))

    def _finish_restores(self, consumer: Consumer) -> None:
        for n, task in list(self._restores.items()):
            if not task.done():
                continue
            del self._restores[n]
            part = self._unrestored.pop(n)
            self._parts[n] = part
            consumer.resume(*(part.input_tps & consumer.assignment()))
            self._mark_restored(n)
            log.info("partition.restored", service=self.service, partition=n)

    async def _cancel_restore(self, n: int) -> _Partition | None:
        """A partition revoked (or the service stopping) while its restore still runs."""
        task = self._restores.pop(n, None)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        return self._unrestored.pop(n, None)

    async def _on_revoked(self, tps: set[TopicPartition]) -> None:
        async with self._busy:
            await self._revoke(tps)

    async def _revoke(self, tps: set[TopicPartition]) -> None:
        for n in sorted({tp.partition for tp in tps}):
            self._mark_restored(n)  # no longer ours: nothing left to wait for
            if n in self._unrestored:
                pending = self._unrestored[n]
                pending.input_tps -= tps
                if not pending.input_tps:
                    await self._cancel_restore(n)
                    await self.handler.revoked(n)  # drops what the restore wrote so far
                    await pending.producer.stop()
                continue
            part = self._parts.get(n)
            if part is None:
                continue
            part.input_tps -= tps
            if not part.input_tps:
                del self._parts[n]
                await self.handler.revoked(n)
                await part.producer.stop()
        ASSIGNED_PARTITIONS.labels(self.service).set(len(self._parts))
        log.info("partitions.revoked", service=self.service, partitions=sorted({tp.partition for tp in tps}))

    # --- main loop -----------------------------------------------------------------
    async def run(self) -> None:
        consumer = self.bus.consumer(
            self.topics, group_id=self.group_id, on_assigned=self._on_assigned, on_revoked=self._on_revoked
        )
        self._consumer = consumer
        await consumer.start()
        try:
            while not self._stopping.is_set():
                async with self._busy:
                    self._finish_restores(consumer)
                    self._resume_due(consumer)
                    await self._tick()
                # Not under the lock: a rebalance (and its revocation) happens meanwhile.
                batch = await self._poll(consumer)
                async with self._busy:
                    await self._handle_batch(consumer, batch)
        finally:
            # Leave the group first (revokes, stopping every partition's producer), then
            # close any producer still held so no transactional producer outlives us.
            try:
                await asyncio.wait_for(consumer.stop(), LEAVE_TIMEOUT_S)
            except TimeoutError:
                log.warning("consumer.leave_timeout", service=self.service, seconds=LEAVE_TIMEOUT_S)
            for n in list(self._unrestored):
                part = await self._cancel_restore(n)
                if part is not None:
                    await part.producer.stop()
            self._consumer = None
            for part in list(self._parts.values()):
                try:
                    await part.producer.stop()
                except Exception as exc:
                    log.warning("producer.stop_failed", error=type(exc).__name__)
            self._parts.clear()

    def stop(self) -> None:
        self._stopping.set()

    async def _handle_batch(self, consumer: Consumer, batch: dict[TopicPartition, list[Message]]) -> None:
        by_partition: dict[int, list[Message]] = {}
        for tp, msgs in batch.items():
            by_partition.setdefault(tp.partition, []).extend(msgs)
        for n, msgs in by_partition.items():
            if n in self._parts:
                await self._process(consumer, self._parts[n], msgs)
            else:
                # aiokafka can hand out records while the assignment callback is still
                # restoring the partition (or a revocation took it meanwhile): rewind, they
                # come back once ready (or go to the new owner).
                for tp in {m.tp for m in msgs} & consumer.assignment():
                    consumer.seek(tp, min(m.offset for m in msgs if m.tp == tp))

    async def _poll(self, consumer: Consumer) -> dict[TopicPartition, list[Message]]:
        return await getmany_until(consumer, self._stopping, max_records=self.max_batch)

    async def _tick(self) -> None:
        """Timer work (the reconciler's safety sweep): outputs committed in a transaction
        of their own, per partition, without consuming anything."""
        tick = getattr(self.handler, "tick", None)
        if tick is None or time.monotonic() < self._next_tick:
            return
        self._next_tick = time.monotonic() + self.tick_seconds
        for part in list(self._parts.values()):
            try:
                outputs = await tick(part.number)
            except Exception as exc:
                ERRORS.labels(self.service, "tick").inc()
                log.error(
                    "tick.failed", service=self.service, partition=part.number, error=f"{type(exc).__name__}: {exc}"
                )
                await self.handler.aborted(part.number)
                continue
            await self._commit(part, outputs, {})

    def _resume_due(self, consumer: Consumer) -> None:
        now = time.monotonic()
        for part in self._parts.values():
            if part.paused_until and part.paused_until <= now:
                part.paused_until = 0.0
                consumer.resume(*part.input_tps)

    async def _process(self, consumer: Consumer, part: _Partition, msgs: list[Message]) -> None:
        # Interleave topics by timestamp so e.g. a result and a change of one tenant are
        # seen in the order they were produced.
        msgs.sort(key=lambda m: (m.timestamp_ms, m.topic, m.offset))
        start: dict[TopicPartition, int] = {}
        for m in msgs:
            start.setdefault(m.tp, m.offset)
        outputs: list[Output] = []
        done: dict[TopicPartition, int] = {}
        backoff: Backoff | None = None
        retry_from: dict[TopicPartition, int] = {}
        batch_handler = getattr(self.handler, "handle_batch", None)
        if batch_handler is not None:
            outcome: BatchOutcome = await batch_handler(part.number, msgs)
            outputs = list(outcome.outputs)
            retry_from = dict(outcome.retry_from)
            for m in msgs:
                if m.tp not in retry_from or m.offset < retry_from[m.tp]:
                    done[m.tp] = max(done.get(m.tp, 0), m.offset + 1)
                    MESSAGES_CONSUMED.labels(self.service, m.topic).inc()
            if retry_from:
                backoff = Backoff(outcome.backoff_s, outcome.reason or "handler asked to retry")
            msgs = []
        for m in msgs:
            if m.tp in retry_from:
                continue  # this input is rewound: keep its order
            try:
                outputs.extend(await self.handler.handle(part.number, m))
            except Backoff as b:
                backoff = b if backoff is None or b.seconds > backoff.seconds else backoff
                retry_from[m.tp] = m.offset
                continue
            except Exception as exc:  # poison: record it, never stall the partition
                reason = type(exc).__name__ if not isinstance(exc, PoisonMessage) else "poison"
                DEADLETTERS.labels(self.service, reason).inc()
                log.error(
                    "message.deadlettered",
                    service=self.service,
                    topic=m.topic,
                    partition=m.partition,
                    offset=m.offset,
                    error=f"{type(exc).__name__}: {exc}",
                )
                outputs.append(Output(self.deadletter_topic, deadletter_record(self.service, exc, m), m.key))
            done[m.tp] = m.offset + 1
            MESSAGES_CONSUMED.labels(self.service, m.topic).inc()
        ok = await self._commit(part, outputs, done)
        if not ok:
            for tp, off in start.items():
                consumer.seek(tp, off)
            return
        self.processed += len(done)
        if backoff is not None:
            for tp, off in retry_from.items():
                consumer.seek(tp, off)
            part.paused_until = time.monotonic() + backoff.seconds
            consumer.pause(*part.input_tps)
            log.warning(
                "partition.backoff",
                service=self.service,
                partition=part.number,
                seconds=round(backoff.seconds, 2),
                reason=backoff.reason,
            )

    async def _commit(self, part: _Partition, outputs: list[Output], done: dict[TopicPartition, int]) -> bool:
        if not outputs and not done:
            return True
        t0 = time.perf_counter()
        try:
            async with part.producer.transaction():
                for o in outputs:
                    await part.producer.send(
                        o.topic, o.value, key=o.key, partition=part.number if o.partition is None else o.partition
                    )
                if done:
                    await part.producer.send_offsets_to_transaction(done, self.group_id)
        except ProducerFenced:
            # Another instance owns this partition now; the rebalance will revoke it here.
            ERRORS.labels(self.service, "fenced").inc()
            log.warning("partition.fenced", service=self.service, partition=part.number)
            await self.handler.aborted(part.number)
            # A fenced producer is dead for good: never reuse it. If the group still gives us
            # this partition (the fencer was a zombie or a late starter), a new producer
            # takes the id back; if not, the revocation that follows drops the partition.
            owned = self._consumer.assignment() if self._consumer is not None else set()
            if part.input_tps & owned and not self._stopping.is_set():
                await self._renew_producer(part)
            return False
        except Exception as exc:
            ERRORS.labels(self.service, "transaction").inc()
            log.error(
                "transaction.failed", service=self.service, partition=part.number, error=f"{type(exc).__name__}: {exc}"
            )
            await self.handler.aborted(part.number)
            await self._renew_producer(part)
            return False
        TRANSACTION_SECONDS.labels(self.service).observe(time.perf_counter() - t0)
        await self.handler.committed(part.number)
        return True

    async def _renew_producer(self, part: _Partition) -> None:
        try:
            await part.producer.stop()
        except Exception as exc:  # a broken producer may fail to stop; it is discarded anyway
            log.warning("producer.stop_failed", error=type(exc).__name__)
        part.producer = self.bus.producer(transactional_id=f"{self.txn_prefix}-{part.number}")
        await part.producer.start()
