"""Webhooks across pods on the real broker: pod B (not the owner) validates a notification
against the table it follows from exsf.subscriptions and forwards it through
exsf.notifications to the owning shard, where pod A's inbox receives it."""

from __future__ import annotations

import asyncio
import uuid

from services.core.bus.base import Bus
from services.core.topics import Topics, topic_specs
from services.ingest_exchange.subscription_log import NotificationInbox, SubscriptionLog, forward_to_owner
from services.ingest_exchange.subscription_table import SubscriptionRecord


async def test_forward_reaches_owner_and_table_follows_tombstones(kafka_bus: Bus) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}."
    topics = Topics.with_prefix(prefix)
    await kafka_bus.create_topics(topic_specs(4, prefix))
    a, b = SubscriptionLog(kafka_bus, topics.subscriptions), SubscriptionLog(kafka_bus, topics.subscriptions)
    got: asyncio.Queue[tuple[str, str]] = asyncio.Queue()

    async def on(sid: str, what: str) -> None:
        await got.put((sid, what))

    inbox = NotificationInbox(kafka_bus, topics.notifications, [2], on)
    await a.start()
    await b.start()
    await inbox.start()
    try:
        await asyncio.wait_for(inbox.ready.wait(), 30)
        rec = SubscriptionRecord("sub-1", "cs", "t1", "a@x", "contacts:f", "/users/a@x/contacts", "2030-01-01Z", 2)
        await a.record(rec)
        for _ in range(300):
            if b.table.check("sub-1", "cs", None) == "ok":
                break
            await asyncio.sleep(0.05)
        assert b.table.check("sub-1", "cs", None) == "ok"
        producer = kafka_bus.producer()
        await producer.start()
        try:
            await forward_to_owner(producer, topics.notifications, rec, "change")
            await forward_to_owner(producer, topics.notifications, rec, "reauthorizationRequired")
        finally:
            await producer.stop()
        assert await asyncio.wait_for(got.get(), 30) == ("sub-1", "change")
        assert await asyncio.wait_for(got.get(), 30) == ("sub-1", "reauthorizationRequired")
        await a.remove(rec)
        for _ in range(300):
            if b.table.get("sub-1") is None:
                break
            await asyncio.sleep(0.05)
        assert b.table.check("sub-1", "cs", None) == "unknown subscription"
    finally:
        await inbox.stop()
        await a.stop()
        await b.stop()
