"""A transactional producer that has been stopped fails every transaction call at once.

aiokafka resolves commit/abort/send_offsets only from its sender task, which stop() ends: a
call made after stop awaits the transaction waiter forever (checked against aiokafka 0.14).
The bus guards each call so the caller gets a BusError (abort: one warning, left to the
broker) instead of a hung task. Real broker, real aiokafka.
"""

from __future__ import annotations

import asyncio

import pytest
from structlog.testing import capture_logs

from services.core.bus.base import BusError, TopicPartition, TopicSpec
from services.core.bus.kafka import KafkaBus
from tests.support.waiting import topics_visible


async def test_transaction_calls_on_a_stopped_producer_fail_instead_of_hanging(
    kafka_bus: KafkaBus, topic_prefix: str
) -> None:
    src = topic_prefix + "stopped"
    await kafka_bus.create_topics([TopicSpec(src, 1)])
    await topics_visible(kafka_bus, src, partitions=1)
    with capture_logs() as logs:
        await _each_call_on_a_stopped_producer(kafka_bus, topic_prefix, src)
    # The abort is one warning line, not a traceback.
    aborts = [e for e in logs if e["event"] == "bus.abort_failed"]
    assert len(aborts) == 1, logs
    assert aborts[0]["log_level"] == "warning" and "exc_info" not in aborts[0]
    assert not [e for e in logs if e["log_level"] in ("error", "critical")], logs
    # Nothing of those transactions is visible to a read_committed reader.
    reader = kafka_bus.consumer([src], group_id=None, assign=[TopicPartition(src, 0)])
    await reader.start()
    reader.seek(TopicPartition(src, 0), 0)
    got = await reader.getmany(timeout_ms=1000)
    await reader.stop()
    assert not any(got.values())


async def _each_call_on_a_stopped_producer(kafka_bus: KafkaBus, topic_prefix: str, src: str) -> None:
    for call in ("begin", "commit", "offsets", "abort"):
        p = kafka_bus.producer(transactional_id=f"{topic_prefix}stopped-{call}")
        await p.start()
        if call != "begin":
            await p.begin_transaction()
            await p.send(src, b"x", partition=0)
        await p.stop()
        # The bound only keeps a regression from hanging the suite; the guard fails at once.
        if call == "begin":
            with pytest.raises(BusError, match="stopped producer"):
                await asyncio.wait_for(p.begin_transaction(), 30)
        elif call == "commit":
            with pytest.raises(BusError, match="stopped producer"):
                await asyncio.wait_for(p.commit_transaction(), 30)
        elif call == "offsets":
            with pytest.raises(BusError, match="stopped producer"):
                await asyncio.wait_for(p.send_offsets_to_transaction({TopicPartition(src, 0): 1}, "g"), 30)
        else:
            await asyncio.wait_for(p.abort_transaction(), 30)  # logged, left to the broker
