"""A fenced transactional producer must not make asyncio log "Future exception was never
retrieved ... ProducerFenced" at ERROR (operators alert on ERROR lines; issue 11 item 6).
The fence is real: a second producer with the same transactional id on the real broker. The
fenced producer's failure must still reach the caller as ProducerFenced."""

from __future__ import annotations

import asyncio
import gc
import uuid
from typing import Any

import pytest

from services.core.bus.base import ProducerFenced, TopicSpec
from services.core.bus.kafka import KafkaBus
from tests.support.waiting import topics_visible


async def test_fenced_producer_raises_and_logs_no_unretrieved_future(kafka_bus: KafkaBus) -> None:
    topic = f"fence{uuid.uuid4().hex[:8]}"
    await kafka_bus.create_topics([TopicSpec(topic, 2)])
    await topics_visible(kafka_bus, topic, partitions=2)
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    old = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, ctx: reported.append(ctx))
    try:
        tid = f"exsf-test-{uuid.uuid4().hex[:8]}"
        first = kafka_bus.producer(transactional_id=tid)
        await first.start()
        async with first.transaction():
            await first.send(topic, b"before", partition=0)
        second = kafka_bus.producer(transactional_id=tid)
        await second.start()  # fences `first`
        with pytest.raises(ProducerFenced):
            async with first.transaction():
                # Several records on both partitions: each is a delivery future (and a
                # batch) that the fence fails.
                for i in range(6):
                    await first.send(topic, b"x%d" % i, partition=i % 2)
        await first.stop()
        async with second.transaction():
            await second.send(topic, b"after", partition=0)
        await second.stop()
        del first
        # Futures report an unretrieved exception when collected.
        for _ in range(3):
            gc.collect()
            await asyncio.sleep(0.1)
    finally:
        loop.set_exception_handler(old)
    assert not [c.get("message") for c in reported], reported
