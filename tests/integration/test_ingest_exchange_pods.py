"""Webhooks across pods (issue 11, deliverable 2) on the real broker and the Graph emulator
(real msgraph-sdk over HTTP): two ingest-exchange instances behind one round-robin front,
as a k8s Service spreads Graph's POSTs. Polling is 1 h, so a change can only arrive through
a notification, and half of them land on the pod that does not own the stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import structlog
from structlog.typing import EventDict, WrappedLogger

from services.core.bus.base import Consumer, TopicPartition
from services.core.bus.kafka import KafkaBus, KafkaSettings
from services.core.envelopes import ChangeEvent, decode_change_event
from services.core.sideserver import Health
from services.core.topics import Topics
from services.emulators.graph.admin_client import GraphAdminClient
from services.ingest_exchange.service import ExchangeIngestService
from tests.support.exchange_cluster import (
    PARTITIONS,
    ExchangeWorld,
    exchange_world,
    logged_events,
    start_ingest_exchange,
)
from tests.support.front import RoundRobinFront
from tests.support.processes import Proc, free_port
from tests.support.waiting import eventually

ALICE, BOB = "alice@contoso.test", "bob@contoso.test"
STREAMS = 12  # 2 mailboxes x 6 tracked collections


@dataclass
class Pod:
    bus: KafkaBus
    port: int
    service: ExchangeIngestService
    task: asyncio.Task[None]

    async def stop(self) -> None:
        self.service.stop()
        await self.task
        await self.bus.stop()


@dataclass
class Cluster:
    world: ExchangeWorld
    reader: Consumer
    pods: list[Pod] = field(default_factory=list)
    seen: list[ChangeEvent] = field(default_factory=list)

    @property
    def topics(self) -> Topics:
        return self.world.topics

    @property
    def admin(self) -> GraphAdminClient:
        return self.world.admin

    @property
    def front(self) -> RoundRobinFront:
        return self.world.front

    async def start_pod(self) -> Pod:
        bus = KafkaBus(KafkaSettings(bootstrap_servers=self.world.bootstrap))
        await bus.start()
        port = free_port()
        service = ExchangeIngestService(
            bus, self.topics, Health(), webhook_host="127.0.0.1", webhook_port=port, public_url=self.front.url
        )
        pod = Pod(bus, port, service, asyncio.create_task(service.run()))
        self.pods.append(pod)
        self.front.ports = [p.port for p in self.pods]
        return pod

    async def stop_pod(self, pod: Pod) -> None:
        self.pods.remove(pod)
        self.front.ports = [p.port for p in self.pods]
        await pod.stop()

    def owner(self) -> Pod | None:
        owners = [p for p in self.pods if "contoso" in p.service.tenants]
        return owners[0] if len(owners) == 1 else None

    async def wait_for(self, pred: Any, what: str) -> ChangeEvent:
        found: list[ChangeEvent] = []

        async def check() -> bool:
            for msgs in (await self.reader.getmany(timeout_ms=200)).values():
                self.seen.extend(decode_change_event(m.value) for m in msgs)
            found[:] = [e for e in self.seen if pred(e)]
            return bool(found)

        await eventually(check, what)
        return found[0]


class LogTap:
    """A structlog processor that keeps a copy of every event dict and passes it on."""

    def __init__(self) -> None:
        self.entries: list[EventDict] = []

    def __call__(self, logger: WrappedLogger, name: str, event_dict: EventDict) -> EventDict:
        self.entries.append(dict(event_dict))
        return event_dict


@pytest.fixture
def logs() -> LogTap:
    return LogTap()


@pytest.fixture
async def cluster(kafka_bootstrap: str, topic_prefix: str, logs: LogTap) -> AsyncIterator[Cluster]:
    # Every event dict any module logs during the test, to show clientState is never in one.
    old = structlog.get_config()["processors"]
    structlog.configure(processors=[*old[:-1], logs, *old[-1:]])
    try:
        async with exchange_world(
            kafka_bootstrap, topic_prefix, mailboxes=(ALICE, BOB), entities=("contact", "event", "task", "email")
        ) as w:
            tps = [TopicPartition(w.topics.changes_exchange, p) for p in range(PARTITIONS)]
            reader = w.setup.consumer([w.topics.changes_exchange], group_id=None, assign=tps)
            await reader.start()
            for tp in tps:
                reader.seek(tp, 0)
            c = Cluster(w, reader)
            try:
                yield c
            finally:
                for pod in list(c.pods):
                    await c.stop_pod(pod)
                await reader.stop()
    finally:
        structlog.configure(processors=old)


async def _streaming(c: Cluster) -> bool:
    """Every pod holds a shard (the group is settled), one pod owns the tenant and runs every
    stream, and each stream has one live subscription."""
    if not all(p.service.shards.shards for p in c.pods):
        return False
    owner = c.owner()
    if owner is None:
        return False
    t = owner.service.tenants["contoso"]
    if len(t.workers) != STREAMS or not all(w.rounds >= 1 for w in t.workers):
        return False
    if not all(s.id for s in t.subscriptions) or len(t.subscriptions) != STREAMS:
        return False
    live = await c.admin.subscriptions()
    return len(live) == STREAMS and {s["id"] for s in live} == {s.id for s in t.subscriptions}


def _assert_no_client_state(logs: LogTap, states: set[str]) -> None:
    assert states and all(states)
    assert any(e.get("event") == "subscription.created" for e in logs.entries), "logs were captured"
    text = "\n".join(repr(e) for e in logs.entries)
    leaked = [s for s in states if s in text]
    assert not leaked, "a clientState appeared in log output"


async def test_a_change_notified_to_either_pod_is_published_by_the_owner(cluster: Cluster, logs: LogTap) -> None:
    c = cluster
    await c.start_pod()
    await c.start_pod()
    await eventually(lambda: _streaming(c), "one pod streams every stream with one subscription each")
    owner = c.owner()
    assert owner is not None
    other = next(p for p in c.pods if p is not owner)
    states = {str(s["clientState"]) for s in await c.admin.subscriptions()}

    # Several changes, one notification each (and some validation POSTs before): round
    # robin puts some of them on the pod that does not own the stream.
    made = []
    for i in range(4):
        item = await c.admin.create_item(
            ALICE if i % 2 == 0 else BOB,
            "contact",
            {"givenName": f"N{i}", "surname": "Pod"},
            container="Salesforce Contacts",
        )
        made.append(item["id"])
        await c.wait_for(lambda e, sid=item["id"]: e.source_id == sid and e.op == "upsert", f"contact {i} published")
    assert c.front.hits[owner.port] >= 1 and c.front.hits[other.port] >= 1, c.front.hits
    # The non-owner answered genuine notifications by forwarding them through Kafka; it
    # never runs the tenant itself.
    assert other.service.receiver.forwarded >= 1, c.front.hits
    assert "contoso" not in other.service.tenants
    assert other.service.receiver.rejected == 0 and owner.service.receiver.rejected == 0
    _assert_no_client_state(logs, states)


async def test_restarts_keep_exactly_one_subscription_per_stream(cluster: Cluster, logs: LogTap) -> None:
    c = cluster
    await c.start_pod()
    await c.start_pod()
    await eventually(lambda: _streaming(c), "streaming with two pods")
    states = {str(s["clientState"]) for s in await c.admin.subscriptions()}
    for round_ in range(3):
        owner = c.owner()
        assert owner is not None
        await c.stop_pod(owner)  # the survivor takes the shard over
        await c.start_pod()
        await eventually(lambda: _streaming(c), f"streaming again after restart {round_}")
        live = await c.admin.subscriptions()
        assert len(live) == STREAMS
        assert len({s["resource"] for s in live}) == STREAMS, "one subscription per stream"
        states |= {str(s["clientState"]) for s in live}
        # Notifications still reach the owner through the front after the restart.
        item = await c.admin.create_item(
            ALICE, "contact", {"givenName": f"R{round_}", "surname": "Pod"}, container="Salesforce Contacts"
        )
        await c.wait_for(lambda e, sid=item["id"]: e.source_id == sid, f"change after restart {round_}")
    _assert_no_client_state(logs, states)


def _adopted(log: Path) -> int:
    """Streams for which this pod logged its subscription as reused or created."""
    return sum(e in ("subscription.reused", "subscription.created") for e in logged_events(log))


async def test_kill9_restarts_reuse_subscriptions_never_double_them(cluster: Cluster, tmp_path: Path) -> None:
    """An ingest-exchange process SIGKILLed leaves its subscriptions live on Graph; the next
    process adopts them (reuse the recorded one, delete any other): exactly one per stream."""
    c = cluster
    procs: list[Proc] = []
    try:
        for gen in range(4):
            p = start_ingest_exchange(c.world, tmp_path, f"ingest{gen}")
            procs.append(p)

            async def settled(p: Proc = p) -> bool:
                if _adopted(p.log_path) < STREAMS:
                    return False
                live = await c.admin.subscriptions()
                return len(live) == STREAMS

            await eventually(settled, f"process {gen} holds one subscription per stream", timeout=120)
            live = await c.admin.subscriptions()
            assert len({s["resource"] for s in live}) == STREAMS, "one subscription per stream"
            if gen > 0:
                assert "subscription.reused" in p.log_path.read_text(), "the crashed pod's subscriptions were reused"
            item = await c.admin.create_item(
                ALICE, "contact", {"givenName": f"K{gen}", "surname": "Pod"}, container="Salesforce Contacts"
            )
            await c.wait_for(lambda e, sid=item["id"]: e.source_id == sid, f"change notified to process {gen}")
            text = p.log_path.read_text(errors="replace")
            assert not [s for s in live if str(s["clientState"]) in text], "clientState in a process log"
            p.kill9()
    finally:
        for p in procs:
            p.kill9()


async def test_subscription_removed_on_either_pod_is_replaced_by_the_owner(cluster: Cluster, logs: LogTap) -> None:
    """Lifecycle events go through the front like changes: the pod that gets one for
    another pod's subscription forwards it, and the owner recreates the removed one."""
    c = cluster
    await c.start_pod()
    await c.start_pod()
    await eventually(lambda: _streaming(c), "streaming with two pods")
    owner = c.owner()
    assert owner is not None
    other = next(p for p in c.pods if p is not owner)
    before = {s["id"]: s["resource"] for s in await c.admin.subscriptions()}
    states = {str(s["clientState"]) for s in await c.admin.subscriptions()}
    forwarded = other.service.receiver.forwarded
    for sid in before:
        await c.admin.lifecycle(sid, "subscriptionRemoved")

    async def replaced() -> bool:
        live = await c.admin.subscriptions()
        return len(live) == STREAMS and not ({s["id"] for s in live} & set(before))

    await eventually(replaced, "every removed subscription recreated")
    live = await c.admin.subscriptions()
    assert {s["resource"] for s in live} == set(before.values())
    assert other.service.receiver.forwarded > forwarded, c.front.hits
    assert other.service.receiver.rejected == 0 and owner.service.receiver.rejected == 0
    assert c.owner() is owner
    states |= {str(s["clientState"]) for s in live}
    # The new subscriptions work through the front, from either pod.
    item = await c.admin.create_item(
        BOB, "contact", {"givenName": "L", "surname": "Pod"}, container="Salesforce Contacts"
    )
    await c.wait_for(lambda e: e.source_id == item["id"], "change after the lifecycle round")
    _assert_no_client_state(logs, states)
