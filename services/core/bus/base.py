"""The bus contract every service is written against.

It is deliberately the small subset of Kafka that exsf needs, with aiokafka's split between
producer and consumer. Two backends implement it: `kafka` (aiokafka, production) and
`embedded` (SQLite, one process: `exsf demo`, laptops). tests/integration/test_bus_contract.py
runs one suite against both, so anything a service relies on is proven on each.

Semantics both backends guarantee:
- per-partition order; key -> partition by Kafka's murmur2 partitioner (so a tenant's shard
  number is the same on every topic and on both backends);
- transactions: records and consumer offsets sent in a transaction become visible to
  read_committed consumers together, or never (abort);
- consumer groups: partitions split between members, revocation before reassignment,
  committed offsets survive restarts;
- one live producer per transactional id: initialising the same id fences the old one.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True, order=True)
class TopicPartition:
    topic: str
    partition: int

    def __str__(self) -> str:
        return f"{self.topic}[{self.partition}]"


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int
    headers: tuple[tuple[str, bytes], ...] = ()

    @property
    def tp(self) -> TopicPartition:
        return TopicPartition(self.topic, self.partition)


@dataclass(frozen=True, slots=True)
class RecordMetadata:
    topic: str
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    partitions: int
    compacted: bool = False
    # None = broker default; change topics keep >= 7 days for replay (docs/design.md §3).
    retention_ms: int | None = None


class BusError(Exception):
    pass


class ProducerFenced(BusError):
    """Another producer initialised the same transactional id: this one is a zombie."""


class TransactionAborted(BusError):
    """The transaction did not commit; none of its records or offsets are visible."""


AssignCallback = Callable[[set[TopicPartition]], Awaitable[None]]
OffsetReset = Literal["earliest", "latest"]


class Producer(abc.ABC):
    @abc.abstractmethod
    async def start(self) -> None: ...

    @abc.abstractmethod
    async def stop(self) -> None: ...

    @abc.abstractmethod
    async def send(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: bytes | None = None,
        partition: int | None = None,
        headers: Sequence[tuple[str, bytes]] = (),
        timestamp_ms: int | None = None,
    ) -> None:
        """Queue a record. Inside a transaction it becomes visible at commit; outside,
        use `send_and_wait` when the caller needs to know it is stored."""

    @abc.abstractmethod
    async def send_and_wait(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: bytes | None = None,
        partition: int | None = None,
        headers: Sequence[tuple[str, bytes]] = (),
        timestamp_ms: int | None = None,
    ) -> RecordMetadata: ...

    @abc.abstractmethod
    async def begin_transaction(self) -> None: ...

    @abc.abstractmethod
    async def commit_transaction(self) -> None: ...

    @abc.abstractmethod
    async def abort_transaction(self) -> None: ...

    @abc.abstractmethod
    async def send_offsets_to_transaction(self, offsets: dict[TopicPartition, int], group_id: str) -> None:
        """Commit consumer offsets (next offset to read) atomically with the transaction."""

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        """Commit on normal exit, abort on exception (which propagates)."""
        await self.begin_transaction()
        try:
            yield
        except BaseException:
            await self.abort_transaction()
            raise
        await self.commit_transaction()


class Consumer(abc.ABC):
    @abc.abstractmethod
    async def start(self) -> None: ...

    @abc.abstractmethod
    async def stop(self) -> None:
        """Leave the group (revoking this member's partitions); does not commit."""

    @abc.abstractmethod
    async def getmany(
        self, timeout_ms: int = 1000, max_records: int | None = None
    ) -> dict[TopicPartition, list[Message]]:
        """Fetch committed records of the assigned, unpaused partitions. Group rebalances
        (and their callbacks) happen inside this call, as in Kafka's poll."""

    @abc.abstractmethod
    async def commit(self, offsets: dict[TopicPartition, int] | None = None) -> None:
        """Commit `offsets` (next offset to read) or the current positions."""

    @abc.abstractmethod
    def assignment(self) -> set[TopicPartition]: ...

    @abc.abstractmethod
    def seek(self, tp: TopicPartition, offset: int) -> None: ...

    @abc.abstractmethod
    async def position(self, tp: TopicPartition) -> int: ...

    @abc.abstractmethod
    async def committed(self, tp: TopicPartition) -> int | None: ...

    @abc.abstractmethod
    def pause(self, *tps: TopicPartition) -> None: ...

    @abc.abstractmethod
    def resume(self, *tps: TopicPartition) -> None: ...



async def getmany_until(
    consumer: Consumer, stopping: asyncio.Event, *, timeout_ms: int = 500, max_records: int | None = None
) -> dict[TopicPartition, list[Message]]:
    """One getmany that a stop (`stopping` set) interrupts. aiokafka's getmany does not
    honour its timeout while a rebalance is in progress (the fetcher waits for the new
    assignment), so a stop landing then would wait as long as the rebalance: observed as a
    reconciler that ignored SIGTERM until killed (tests/integration/test_two_deployments.py).
    Cancelling it is safe: it is cancelled only while waiting, before it hands out records,
    and what is not committed is read again by the next owner."""
    get = asyncio.ensure_future(consumer.getmany(timeout_ms=timeout_ms, max_records=max_records))
    stop = asyncio.ensure_future(stopping.wait())
    try:
        await asyncio.wait({get, stop}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        get.cancel()
        raise
    finally:
        stop.cancel()
    if not get.done():
        get.cancel()
        await asyncio.gather(get, return_exceptions=True)
        return {}
    return get.result()


class Bus(abc.ABC):
    """Factory for producers/consumers plus the few admin and read helpers services need."""

    name: str

    @abc.abstractmethod
    async def start(self) -> None: ...

    @abc.abstractmethod
    async def stop(self) -> None: ...

    @abc.abstractmethod
    async def create_topics(self, specs: Iterable[TopicSpec]) -> list[str]:
        """Create missing topics; existing ones are left alone. Returns the names created."""

    @abc.abstractmethod
    async def partitions_for(self, topic: str) -> int: ...

    @abc.abstractmethod
    def producer(self, *, transactional_id: str | None = None) -> Producer:
        """An idempotent producer; transactional when `transactional_id` is given."""

    @abc.abstractmethod
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
        """A read_committed consumer. With `group_id`, a group member subscribed to
        `topics`; with `assign`, a standalone reader of exactly those partitions."""

    @abc.abstractmethod
    async def end_offsets(self, tps: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        """Next offset after the last committed record, per partition."""

    @abc.abstractmethod
    async def offsets_for_times(self, topic: str, timestamp_ms: int) -> dict[TopicPartition, int | None]:
        """Earliest offset whose timestamp is >= timestamp_ms, per partition (None: none)."""

    async def read_batches(
        self, topic: str, partitions: Iterable[int] | None = None, *, max_records: int = 1000
    ) -> AsyncIterator[list[Message]]:
        """Every keyed record of `topic` (tombstones included) from the start up to the
        current end, in offset order per partition, as batches of at most `max_records`.
        The caller applies them in order (latest per key wins, a tombstone deletes), so a
        restore holds one batch at a time instead of the whole partition."""
        n = await self.partitions_for(topic)
        tps = [TopicPartition(topic, p) for p in (partitions if partitions is not None else range(n))]
        ends = await self.end_offsets(tps)
        todo = {tp for tp in tps if ends[tp] > 0}
        if not todo:
            return
        consumer = self.consumer([topic], group_id=None, assign=todo)
        await consumer.start()
        try:
            for tp in todo:
                consumer.seek(tp, 0)
            idle = 0
            while todo:
                batch = await consumer.getmany(timeout_ms=500, max_records=max_records)
                out = [m for msgs in batch.values() for m in msgs if m.key is not None and m.offset < ends[m.tp]]
                if out:
                    yield out
                for tp in list(todo):
                    # Positions also move past transaction markers, which carry offsets
                    # but no records: compare positions, not the last record seen.
                    if await consumer.position(tp) >= ends[tp]:
                        todo.discard(tp)
                idle = 0 if batch else idle + 1
                if idle > 60:
                    raise BusError(f"read_batches({topic}): no progress towards end offsets {ends}")
        finally:
            await consumer.stop()

    async def read_latest(self, topic: str, partitions: Iterable[int] | None = None) -> dict[bytes, Message]:
        """The compacted view of `topic`: latest record per key, tombstones removed, read
        up to the current end. Used to load tenant configs and small compacted tables."""
        latest: dict[bytes, Message] = {}
        async for batch in self.read_batches(topic, partitions):
            for m in batch:
                assert m.key is not None  # read_batches yields keyed records only
                if m.value is None:
                    latest.pop(m.key, None)
                else:
                    latest[m.key] = m
        return latest
