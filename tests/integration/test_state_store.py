"""The state store writes locally only after Kafka commits, and restores from the changelog."""

from __future__ import annotations

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
