"""The state store writes locally only after Kafka commits, and restores from the changelog."""

from __future__ import annotations

from pathlib import Path

from services.core.bus.base import Bus, TopicSpec
from services.core.state_store import StateStore
from tests.support.waiting import topics_visible


async def test_stage_commit_abort_and_restore(bus: Bus, topic_prefix: str) -> None:
    topic = topic_prefix + "state"
    await bus.create_topics([TopicSpec(topic, 2, compacted=True)])

    await topics_visible(bus, topic, partitions=2)
    store = StateStore()
    store.stage(1, b"t/contact/L1", b"v1")
    store.stage(1, b"t/contact/L2", b"v1")
    assert store.get(1, b"t/contact/L1") == b"v1"  # read-your-writes before commit
    assert list(store.items(1)) == []  # ...but nothing durable yet
    outs = store.changelog(1, topic)
    assert {(o.key, o.value, o.partition) for o in outs} == {(b"t/contact/L1", b"v1", 1), (b"t/contact/L2", b"v1", 1)}

    p = bus.producer(transactional_id=topic_prefix + "w")
    await p.start()
    async with p.transaction():
        for o in outs:
            await p.send(o.topic, o.value, key=o.key, partition=o.partition)
    store.commit(1)
    assert dict(store.items(1)) == {b"t/contact/L1": b"v1", b"t/contact/L2": b"v1"}

    store.stage(1, b"t/contact/L1", b"v2")
    store.abort(1)  # the transaction failed: staged change forgotten
    assert store.get(1, b"t/contact/L1") == b"v1"

    store.stage(1, b"t/contact/L2", None)
    async with p.transaction():
        for o in store.changelog(1, topic):
            await p.send(o.topic, o.value, key=o.key, partition=o.partition)
    store.commit(1)
    await p.stop()

    fresh = StateStore()
    assert await fresh.restore(bus, topic, 1) == 1
    assert dict(fresh.items(1)) == {b"t/contact/L1": b"v1"}
    assert list(fresh.items(0)) == []


async def test_restore_streams_in_bounded_batches(bus: Bus, topic_prefix: str, tmp_path: Path) -> None:
    """A restore holds one changelog batch at a time (never the whole partition) and keeps
    compaction semantics: the latest record per key wins and a tombstone deletes."""
    topic = topic_prefix + "state"
    await bus.create_topics([TopicSpec(topic, 2, compacted=True)])
    await topics_visible(bus, topic, partitions=2)
    p = bus.producer(transactional_id=topic_prefix + "w")
    await p.start()
    expected: dict[bytes, bytes] = {}
    async with p.transaction():
        for i in range(600):
            k = f"t/contact/L{i % 250}".encode()
            v = None if i % 7 == 0 else f"v{i}".encode()
            await p.send(topic, v, key=k, partition=1)
            if v is None:
                expected.pop(k, None)
            else:
                expected[k] = v
        await p.send(topic, b"other", key=b"t/contact/X", partition=0)
    await p.stop()

    batches = [b async for b in bus.read_batches(topic, [1], max_records=50)]
    assert sum(len(b) for b in batches) == 600 and max(len(b) for b in batches) <= 50

    for store in (StateStore(), StateStore(tmp_path / "s.sqlite")):  # on-loop and worker-thread paths
        store.stage(1, b"t/contact/stale", b"gone after restore")
        store.commit(1)
        assert await store.restore(bus, topic, 1, batch_size=50) == len(expected)
        assert 0 < store.restore_peak_batch <= 50
        assert dict(store.items(1)) == expected
        assert list(store.items(0)) == []
        store.close()
