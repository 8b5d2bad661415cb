"""Per-partition key-value state in local SQLite, backed by a compacted changelog topic.

Modelled on quix-streams' state stores: a processor stages changes while it handles a
batch; the staged changes are sent to the changelog inside the same Kafka transaction as
the batch's outputs and offsets, and written to SQLite only once that transaction commits.
So the local store never runs ahead of Kafka, and after a crash (or on another instance)
`restore` rebuilds a partition from the changelog alone.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import structlog

from services.core.bus.base import Bus
from services.core.processor import Output

log = structlog.get_logger(__name__)

RESTORE_BATCH = 1000  # changelog records held in memory at once while restoring
_BUSY_MS = 5000  # restore and the loop's commits share the file: wait for the lock, don't fail

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (
    partition INTEGER NOT NULL, key BLOB NOT NULL, value BLOB NOT NULL,
    PRIMARY KEY (partition, key)) WITHOUT ROWID;
"""


class StateStore:
    def __init__(self, path: str | Path = ":memory:") -> None:
        self._path = str(path)
        self._db = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        if self._path != ":memory:":
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA busy_timeout={_BUSY_MS}")
        self.restore_peak_batch = 0  # largest batch the last restore held (bounded memory)
        self._db.executescript(_SCHEMA)
        # partition -> key -> value (None = delete), in staging order
        self._staged: dict[int, dict[bytes, bytes | None]] = {}

    def close(self) -> None:
        self._db.close()

    # --- reads see staged changes first (read-your-writes within a batch) ------------
    def get(self, partition: int, key: bytes) -> bytes | None:
        staged = self._staged.get(partition, {})
        if key in staged:
            return staged[key]
        row = self._db.execute("SELECT value FROM kv WHERE partition = ? AND key = ?", (partition, key)).fetchone()
        return None if row is None else bytes(row[0])

    def items(self, partition: int, prefix: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        """Committed items of a partition (staged changes excluded), optionally by key prefix."""
        if prefix:
            rows = self._db.execute(
                "SELECT key, value FROM kv WHERE partition = ? AND key >= ? AND key < ? ORDER BY key",
                (partition, prefix, prefix + b"\xff"),
            )
        else:
            rows = self._db.execute("SELECT key, value FROM kv WHERE partition = ? ORDER BY key", (partition,))
        for k, v in rows:
            yield bytes(k), bytes(v)

    def count(self, partition: int) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM kv WHERE partition = ?", (partition,)).fetchone()[0])

    # --- staging -------------------------------------------------------------------
    def stage(self, partition: int, key: bytes, value: bytes | None) -> None:
        self._staged.setdefault(partition, {})[key] = value

    def changelog(self, partition: int, topic: str) -> list[Output]:
        """The staged changes as changelog records, to send in the batch's transaction.
        They go to the same partition number as the input, keeping the tenant's shard."""
        return [Output(topic, v, k, partition) for k, v in self._staged.get(partition, {}).items()]

    def commit(self, partition: int) -> None:
        staged = self._staged.pop(partition, {})
        if not staged:
            return
        _apply_rows(self._db, partition, list(staged.items()))

    def abort(self, partition: int) -> None:
        self._staged.pop(partition, None)

    # --- restore -------------------------------------------------------------------
    async def restore(self, bus: Bus, topic: str, partition: int, *, batch_size: int = RESTORE_BATCH) -> int:
        """Replace the partition's local state with the changelog's compacted view.

        Streams: each batch of at most `batch_size` changelog records is written as it
        arrives (in offset order, so the latest record per key wins and a tombstone
        deletes), so memory stays bounded by the batch, not the partition. For a file
        store the SQLite work runs in a worker thread on a connection of its own, off the
        event loop (heartbeats and other partitions keep going); WAL lets the main
        connection keep reading meanwhile."""
        self._staged.pop(partition, None)
        self.restore_peak_batch = 0
        writer = self._restore_connection()
        try:
            await self._run(writer, _delete_partition, partition)
            async for batch in bus.read_batches(topic, [partition], max_records=batch_size):
                self.restore_peak_batch = max(self.restore_peak_batch, len(batch))
                rows = [(m.key, m.value) for m in batch if m.key is not None]
                await self._run(writer, _apply_rows, partition, rows)
        finally:
            if writer is not self._db:
                await asyncio.to_thread(writer.close)
        n = self.count(partition)
        log.info("state.restored", topic=topic, partition=partition, keys=n)
        return n

    def _restore_connection(self) -> sqlite3.Connection:
        if self._path == ":memory:":
            return self._db  # an in-memory store (tests) has no second connection to open
        db = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        db.execute(f"PRAGMA busy_timeout={_BUSY_MS}")
        return db

    async def _run(self, db: sqlite3.Connection, fn: Callable[..., None], *args: object) -> None:
        if db is self._db:
            fn(db, *args)  # shared with the loop's own writes: stay on the loop thread
        else:
            await asyncio.to_thread(fn, db, *args)

    def drop(self, partition: int) -> None:
        """Forget a partition this instance no longer owns."""
        self._staged.pop(partition, None)
        self._db.execute("DELETE FROM kv WHERE partition = ?", (partition,))


def _delete_partition(db: sqlite3.Connection, partition: int) -> None:
    db.execute("DELETE FROM kv WHERE partition = ?", (partition,))


def _apply_rows(db: sqlite3.Connection, partition: int, rows: list[tuple[bytes, bytes | None]]) -> None:
    """One changelog batch in one SQLite transaction, in changelog order."""
    db.execute("BEGIN")
    try:
        for k, v in rows:
            if v is None:
                db.execute("DELETE FROM kv WHERE partition = ? AND key = ?", (partition, k))
            else:
                db.execute("INSERT OR REPLACE INTO kv VALUES (?, ?, ?)", (partition, k, v))
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
