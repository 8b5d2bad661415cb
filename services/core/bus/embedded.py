"""The embedded bus: a SQLite-backed log for one process with Kafka's contract.

Why SQLite: `exsf demo` and a laptop user must get the real pipeline (partitions, offsets,
group commits, transactions, compaction reads) with nothing installed, and state that
survives a restart when a file is used. One writer process is assumed; other processes may
read the same file (they poll).

How the Kafka semantics map:
- a record gets its offset at commit time; a transaction buffers its records and offsets in
  memory and writes them in ONE SQLite transaction, so read_committed readers see all or
  nothing (an abort just drops the buffer);
- transactional ids carry an epoch in the `producers` table; a producer whose epoch is
  older than the stored one is fenced at its next commit, like Kafka's zombie fencing;
- consumer groups use the eager protocol: on a membership change every member revokes
  (callback) inside its next getmany, then the coordinator computes a range assignment and
  each member takes its share (callback) - revocation always precedes reassignment.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import structlog

from services.core.bus.assignor import copartition
from services.core.bus.base import (
    AssignCallback,
    Bus,
    BusError,
    Consumer,
    Message,
    OffsetReset,
    Producer,
    ProducerFenced,
    RecordMetadata,
    TopicPartition,
    TopicSpec,
)
from services.core.bus.partitioning import partition_for

log = structlog.get_logger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS topics (
    name TEXT PRIMARY KEY, partitions INTEGER NOT NULL, compacted INTEGER NOT NULL, retention_ms INTEGER);
CREATE TABLE IF NOT EXISTS records (
    topic TEXT NOT NULL, partition INTEGER NOT NULL, offset INTEGER NOT NULL,
    key BLOB, value BLOB, ts INTEGER NOT NULL, headers BLOB,
    PRIMARY KEY (topic, partition, offset)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS records_ts ON records (topic, partition, ts);
CREATE TABLE IF NOT EXISTS group_offsets (
    group_id TEXT NOT NULL, topic TEXT NOT NULL, partition INTEGER NOT NULL, offset INTEGER NOT NULL,
    PRIMARY KEY (group_id, topic, partition)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS producers (transactional_id TEXT PRIMARY KEY, epoch INTEGER NOT NULL);
"""


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class _Pending:
    topic: str
    partition: int
    key: bytes | None
    value: bytes | None
    ts: int
    headers: tuple[tuple[str, bytes], ...]


class EmbeddedBus(Bus):
    name = "embedded"

    def __init__(self, path: str | Path = ":memory:", *, poll_interval_s: float = 0.05) -> None:
        self._path = str(path)
        self._poll_interval_s = poll_interval_s
        self._db: sqlite3.Connection | None = None
        self._appended = asyncio.Condition()
        self._groups: dict[str, _Group] = {}
        self._partitions: dict[str, int] = {}

    # --- lifecycle ------------------------------------------------------------------
    async def start(self) -> None:
        if self._db is not None:
            return
        db = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        if self._path != ":memory:":
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(_SCHEMA)
        self._db = db
        for name, n in db.execute("SELECT name, partitions FROM topics"):
            self._partitions[name] = n

    async def stop(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise BusError("embedded bus is not started")
        return self._db

    # --- admin ----------------------------------------------------------------------
    async def create_topics(self, specs: Iterable[TopicSpec]) -> list[str]:
        created = []
        for s in specs:
            cur = self.db.execute(
                "INSERT OR IGNORE INTO topics VALUES (?, ?, ?, ?)",
                (s.name, s.partitions, int(s.compacted), s.retention_ms),
            )
            if cur.rowcount:
                created.append(s.name)
                self._partitions[s.name] = s.partitions
        return created

    async def partitions_for(self, topic: str) -> int:
        n = self._partitions.get(topic)
        if n is None:
            row = self.db.execute("SELECT partitions FROM topics WHERE name = ?", (topic,)).fetchone()
            if row is None:
                raise BusError(f"unknown topic {topic!r} (run `exsf topics create`)")
            n = self._partitions[topic] = row[0]
        return n

    async def end_offsets(self, tps: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        out = {}
        for tp in tps:
            row = self.db.execute(
                "SELECT MAX(offset) FROM records WHERE topic = ? AND partition = ?", (tp.topic, tp.partition)
            ).fetchone()
            out[tp] = (row[0] + 1) if row[0] is not None else 0
        return out

    async def offsets_for_times(self, topic: str, timestamp_ms: int) -> dict[TopicPartition, int | None]:
        out: dict[TopicPartition, int | None] = {}
        for p in range(await self.partitions_for(topic)):
            row = self.db.execute(
                "SELECT MIN(offset) FROM records WHERE topic = ? AND partition = ? AND ts >= ?",
                (topic, p, timestamp_ms),
            ).fetchone()
            out[TopicPartition(topic, p)] = row[0]
        return out

    # --- factories ------------------------------------------------------------------
    def producer(self, *, transactional_id: str | None = None) -> Producer:
        return EmbeddedProducer(self, transactional_id)

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
        return EmbeddedConsumer(
            self,
            list(topics),
            group_id,
            on_assigned,
            on_revoked,
            auto_offset_reset,
            set(assign) if assign is not None else None,
        )

    # --- internals used by producer/consumer ---------------------------------------
    def _group(self, group_id: str) -> _Group:
        g = self._groups.get(group_id)
        if g is None:
            g = self._groups[group_id] = _Group(self, group_id)
        return g

    async def _append(
        self,
        records: list[_Pending],
        offsets: dict[str, dict[TopicPartition, int]],
        fence: tuple[str, int] | None,
    ) -> list[RecordMetadata]:
        """Write records and group offsets atomically (one SQLite transaction)."""
        db = self.db
        metas: list[RecordMetadata] = []
        db.execute("BEGIN IMMEDIATE")
        try:
            if fence is not None:
                row = db.execute("SELECT epoch FROM producers WHERE transactional_id = ?", (fence[0],)).fetchone()
                if row is not None and row[0] != fence[1]:
                    raise ProducerFenced(f"transactional id {fence[0]!r} was taken over by a newer producer")
            next_offset: dict[tuple[str, int], int] = {}
            for r in records:
                k = (r.topic, r.partition)
                if k not in next_offset:
                    row = db.execute("SELECT MAX(offset) FROM records WHERE topic = ? AND partition = ?", k).fetchone()
                    next_offset[k] = (row[0] + 1) if row[0] is not None else 0
                off = next_offset[k]
                next_offset[k] = off + 1
                db.execute(
                    "INSERT INTO records VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        r.topic,
                        r.partition,
                        off,
                        r.key,
                        r.value,
                        r.ts,
                        orjson.dumps([[h, v.hex()] for h, v in r.headers]) if r.headers else None,
                    ),
                )
                metas.append(RecordMetadata(r.topic, r.partition, off))
            for group_id, offs in offsets.items():
                for tp, o in offs.items():
                    db.execute(
                        "INSERT OR REPLACE INTO group_offsets VALUES (?, ?, ?, ?)",
                        (group_id, tp.topic, tp.partition, o),
                    )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        if records:
            async with self._appended:
                self._appended.notify_all()
        return metas

    def _fetch(self, tp: TopicPartition, position: int, limit: int) -> list[Message]:
        rows = self.db.execute(
            "SELECT offset, key, value, ts, headers FROM records "
            "WHERE topic = ? AND partition = ? AND offset >= ? ORDER BY offset LIMIT ?",
            (tp.topic, tp.partition, position, limit),
        ).fetchall()
        out = []
        for off, key, value, ts, headers in rows:
            hs: tuple[tuple[str, bytes], ...] = ()
            if headers:
                hs = tuple((h, bytes.fromhex(v)) for h, v in orjson.loads(headers))
            out.append(Message(tp.topic, tp.partition, off, key, value, ts, hs))
        return out

    def _committed(self, group_id: str, tp: TopicPartition) -> int | None:
        row = self.db.execute(
            "SELECT offset FROM group_offsets WHERE group_id = ? AND topic = ? AND partition = ?",
            (group_id, tp.topic, tp.partition),
        ).fetchone()
        return None if row is None else int(row[0])

    async def _wait_for_append(self, timeout_s: float) -> None:
        # Same-process writers notify; other processes writing the same file are seen by
        # polling, hence the bounded wait.
        try:
            async with self._appended:
                await asyncio.wait_for(self._appended.wait(), min(timeout_s, self._poll_interval_s * 20))
        except TimeoutError:
            pass


class EmbeddedProducer(Producer):
    def __init__(self, bus: EmbeddedBus, transactional_id: str | None) -> None:
        self._bus = bus
        self._tid = transactional_id
        self._epoch: int | None = None
        self._in_txn = False
        self._buffer: list[_Pending] = []
        self._offsets: dict[str, dict[TopicPartition, int]] = {}

    async def start(self) -> None:
        if self._tid is None:
            return
        db = self._bus.db
        db.execute("BEGIN IMMEDIATE")
        row = db.execute("SELECT epoch FROM producers WHERE transactional_id = ?", (self._tid,)).fetchone()
        self._epoch = 0 if row is None else row[0] + 1
        db.execute("INSERT OR REPLACE INTO producers VALUES (?, ?)", (self._tid, self._epoch))
        db.execute("COMMIT")

    async def stop(self) -> None:
        if self._in_txn:
            await self.abort_transaction()

    async def _pending(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None,
        partition: int | None,
        headers: Sequence[tuple[str, bytes]],
        timestamp_ms: int | None,
    ) -> _Pending:
        n = await self._bus.partitions_for(topic)
        p = partition if partition is not None else partition_for(key, n)
        if not 0 <= p < n:
            raise BusError(f"partition {p} out of range for {topic} ({n} partitions)")
        return _Pending(topic, p, key, value, timestamp_ms or _now_ms(), tuple(headers))

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
        rec = await self._pending(topic, value, key, partition, headers, timestamp_ms)
        if self._in_txn:
            self._buffer.append(rec)
        else:
            await self._bus._append([rec], {}, None)

    async def send_and_wait(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: bytes | None = None,
        partition: int | None = None,
        headers: Sequence[tuple[str, bytes]] = (),
        timestamp_ms: int | None = None,
    ) -> RecordMetadata:
        if self._in_txn:
            raise BusError("send_and_wait inside a transaction: offsets are known only at commit")
        rec = await self._pending(topic, value, key, partition, headers, timestamp_ms)
        return (await self._bus._append([rec], {}, None))[0]

    def _require_txn(self) -> None:
        if self._tid is None:
            raise BusError("transactions need a transactional_id")
        if not self._in_txn:
            raise BusError("no transaction in progress")

    async def begin_transaction(self) -> None:
        if self._tid is None:
            raise BusError("transactions need a transactional_id")
        if self._in_txn:
            raise BusError("a transaction is already in progress")
        self._in_txn = True
        self._buffer = []
        self._offsets = {}

    async def send_offsets_to_transaction(self, offsets: dict[TopicPartition, int], group_id: str) -> None:
        self._require_txn()
        self._offsets.setdefault(group_id, {}).update(offsets)

    async def commit_transaction(self) -> None:
        self._require_txn()
        assert self._tid is not None and self._epoch is not None, "producer not started"
        try:
            await self._bus._append(self._buffer, self._offsets, (self._tid, self._epoch))
        finally:
            self._in_txn = False
            self._buffer = []
            self._offsets = {}

    async def abort_transaction(self) -> None:
        self._require_txn()
        self._in_txn = False
        self._buffer = []
        self._offsets = {}


@dataclass(eq=False)
class _Group:
    """In-process coordinator of one consumer group (eager rebalance protocol)."""

    bus: EmbeddedBus
    group_id: str
    members: list[EmbeddedConsumer] = field(default_factory=list)
    generation: int = 0
    awaiting_revoke: set[int] = field(default_factory=set)
    plan: dict[int, set[TopicPartition]] | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def _bump(self) -> None:
        self.generation += 1
        self.plan = None
        self.awaiting_revoke = {id(m) for m in self.members if m._assigned}
        self._wake()
        if not self.awaiting_revoke:
            self._plan()

    def _wake(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()
        for m in self.members:
            m._wakeup.set()

    def join(self, member: EmbeddedConsumer) -> None:
        self.members.append(member)
        self._bump()

    def leave(self, member: EmbeddedConsumer) -> None:
        self.members.remove(member)
        self._bump()

    def revoked(self, member: EmbeddedConsumer) -> None:
        self.awaiting_revoke.discard(id(member))
        if not self.awaiting_revoke and self.plan is None:
            self._plan()

    def _plan(self) -> None:
        # The same co-partitioned plan as the Kafka bus (assignor.copartition), over members
        # keyed by their join position so it stays deterministic.
        keys = {f"{i:06d}": m for i, m in enumerate(self.members)}
        counts = {t: self.bus._partitions.get(t, 0) for m in self.members for t in m._topics}
        layout = copartition({k: m._topics for k, m in keys.items()}, counts)
        plan: dict[int, set[TopicPartition]] = {id(m): set() for m in self.members}
        for k, m in keys.items():
            for t, numbers in layout[k].items():
                plan[id(m)].update(TopicPartition(t, p) for p in numbers)
        self.plan = plan
        self._wake()


class EmbeddedConsumer(Consumer):
    def __init__(
        self,
        bus: EmbeddedBus,
        topics: list[str],
        group_id: str | None,
        on_assigned: AssignCallback | None,
        on_revoked: AssignCallback | None,
        reset: OffsetReset,
        assign: set[TopicPartition] | None,
    ) -> None:
        self._bus = bus
        self._topics = topics
        self._group_id = group_id
        self._on_assigned = on_assigned
        self._on_revoked = on_revoked
        self._reset = reset
        self._static = assign
        self._assigned: set[TopicPartition] = set()
        self._positions: dict[TopicPartition, int] = {}
        self._paused: set[TopicPartition] = set()
        self._generation = -1
        self._wakeup = asyncio.Event()
        self._started = False

    async def start(self) -> None:
        for t in self._topics:
            await self._bus.partitions_for(t)  # fail fast on unknown topics
        self._started = True
        if self._static is not None:
            await self._take(self._static)
        elif self._group_id is not None:
            self._bus._group(self._group_id).join(self)
        else:
            raise BusError("a consumer needs a group_id or an explicit assignment")

    async def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        if self._static is None and self._group_id is not None:
            if self._assigned and self._on_revoked:
                await self._on_revoked(set(self._assigned))
            self._assigned = set()
            self._bus._group(self._group_id).leave(self)

    async def _take(self, tps: set[TopicPartition]) -> None:
        self._assigned = set(tps)
        self._paused &= self._assigned
        self._positions = {}
        for tp in tps:
            committed = self._bus._committed(self._group_id, tp) if self._group_id else None
            if committed is not None:
                self._positions[tp] = committed
            elif self._reset == "latest":
                self._positions[tp] = (await self._bus.end_offsets([tp]))[tp]
            else:
                self._positions[tp] = 0
        if self._static is None and self._on_assigned:
            await self._on_assigned(set(tps))

    async def _sync_group(self, deadline: float) -> bool:
        """Run this member's part of a pending rebalance. False if it could not finish in time."""
        if self._static is not None or self._group_id is None:
            return True
        g = self._bus._group(self._group_id)
        while self._generation != g.generation:
            gen = g.generation
            if id(self) in g.awaiting_revoke:
                if self._on_revoked and self._assigned:
                    await self._on_revoked(set(self._assigned))
                self._assigned = set()
                self._positions = {}
                g.revoked(self)
                continue
            if g.plan is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                waiter = g.changed
                try:
                    await asyncio.wait_for(waiter.wait(), remaining)
                except TimeoutError:
                    return False
                continue
            if gen != g.generation:
                continue
            await self._take(g.plan.get(id(self), set()))
            self._generation = gen
        return True

    async def getmany(
        self, timeout_ms: int = 1000, max_records: int | None = None
    ) -> dict[TopicPartition, list[Message]]:
        if not self._started:
            raise BusError("consumer is not started")
        deadline = time.monotonic() + timeout_ms / 1000
        limit = max_records or 500
        while True:
            self._wakeup.clear()
            if not await self._sync_group(deadline):
                return {}
            out: dict[TopicPartition, list[Message]] = {}
            budget = limit
            for tp in sorted(self._assigned - self._paused):
                if budget <= 0:
                    break
                msgs = self._bus._fetch(tp, self._positions[tp], budget)
                if msgs:
                    out[tp] = msgs
                    self._positions[tp] = msgs[-1].offset + 1
                    budget -= len(msgs)
            if out:
                return out
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return {}
            wake = asyncio.ensure_future(self._wakeup.wait())
            append = asyncio.ensure_future(self._bus._wait_for_append(remaining))
            await asyncio.wait([wake, append], return_when=asyncio.FIRST_COMPLETED)
            for f in (wake, append):
                f.cancel()

    async def commit(self, offsets: dict[TopicPartition, int] | None = None) -> None:
        if self._group_id is None:
            raise BusError("commit needs a group_id")
        await self._bus._append([], {self._group_id: dict(offsets if offsets is not None else self._positions)}, None)

    def assignment(self) -> set[TopicPartition]:
        return set(self._assigned)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        if tp not in self._assigned:
            raise BusError(f"{tp} is not assigned to this consumer")
        self._positions[tp] = offset

    async def position(self, tp: TopicPartition) -> int:
        return self._positions[tp]

    async def committed(self, tp: TopicPartition) -> int | None:
        return self._bus._committed(self._group_id, tp) if self._group_id else None

    def pause(self, *tps: TopicPartition) -> None:
        self._paused.update(tps)

    def resume(self, *tps: TopicPartition) -> None:
        self._paused.difference_update(tps)
