"""A crash between Graph's subscription create and exsf's record of it (issue 11, deliverable
2: "never orphaned"). The ingest-exchange process runs as a real OS process against the real
broker and the Graph emulator (real msgraph-sdk over HTTP); the test hook
EXSF_TEST_CRASH_AFTER_SUBSCRIPTION_CREATE makes it SIGKILL itself the moment Graph answers a
create, before anything is written to exsf.subscriptions. The next process must find that
subscription through Graph's list and delete it: exactly one subscription per stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.connectors.exchange.client import ExchangeClient
from services.core.secrets import resolve_secret
from services.core.tenants import GraphEndpoint
from services.emulators.graph.app import serve
from services.emulators.graph.config import GraphEmulatorConfig
from services.ingest_exchange.subscription_log import SubscriptionLog
from services.ingest_exchange.webhook import CRASH_AFTER_CREATE_ENV, GraphSubscriptions
from tests.support.exchange_cluster import ExchangeWorld, exchange_world, logged_events, start_ingest_exchange
from tests.support.waiting import eventually

ALICE = "alice@contoso.test"
STREAMS = 3  # contacts folder, default contacts (tagged), calendar


@pytest.fixture
async def world(kafka_bootstrap: str, topic_prefix: str) -> AsyncIterator[ExchangeWorld]:
    async with exchange_world(kafka_bootstrap, topic_prefix, mailboxes=(ALICE,), entities=("contact", "event")) as w:
        yield w


async def test_kill9_between_graph_create_and_record_leaves_no_orphan(world: ExchangeWorld, tmp_path: Path) -> None:
    w = world
    crashed = start_ingest_exchange(w, tmp_path, "crashing", {CRASH_AFTER_CREATE_ENV: "1"})
    try:
        async def died() -> bool:
            return not crashed.alive()

        await eventually(died, "the process SIGKILLed itself after Graph's create", timeout=90)
        orphans = await w.admin.subscriptions()
        assert orphans, "Graph holds the subscription the dead process never recorded"
        assert "subscription.created" not in logged_events(crashed.log_path)

        # What the topic holds now: a pending trace for the orphan, no record of it.
        sublog = SubscriptionLog(w.setup, w.topics.subscriptions)
        await sublog.start()
        try:
            await eventually(lambda: _true(sublog.caught_up.is_set()), "subscription table read")
            recorded = {r.id for r in sublog.table.of_shard(0) + sublog.table.of_shard(1) if not r.pending}
            traces = [r for r in sublog.table.of_shard(0) + sublog.table.of_shard(1) if r.pending]
        finally:
            await sublog.stop()
        assert not ({s["id"] for s in orphans} & recorded), "the orphan was never recorded"
        assert traces, "a pending trace was written before Graph's create"
    finally:
        crashed.kill9()

    p = start_ingest_exchange(w, tmp_path, "restarted")
    try:
        async def settled() -> bool:
            ev = logged_events(p.log_path)
            if ev.count("subscription.created") + ev.count("subscription.reused") < STREAMS:
                return False
            return len(await w.admin.subscriptions()) == STREAMS

        await eventually(settled, "the restarted process holds one subscription per stream", timeout=120)
        live = await w.admin.subscriptions()
        assert len(live) == STREAMS
        assert len({s["resource"] for s in live}) == STREAMS, "one subscription per stream"
        assert not ({s["id"] for s in orphans} & {s["id"] for s in live}), "the orphans were deleted"
        assert "subscription.orphan_deleted" in logged_events(p.log_path)

        # The pending traces are gone and every live subscription is recorded.
        sublog = SubscriptionLog(w.setup, w.topics.subscriptions)
        await sublog.start()
        try:
            async def clean() -> bool:
                recs = sublog.table.of_shard(0) + sublog.table.of_shard(1)
                return (sublog.caught_up.is_set() and not [r for r in recs if r.pending]
                        and {r.id for r in recs} == {s["id"] for s in live})

            await eventually(clean, "no pending trace left, every live subscription recorded")
        finally:
            await sublog.stop()
    finally:
        p.kill9()


async def _true(value: bool) -> bool:
    return value


async def test_one_graph_listing_serves_every_stream_adopting_at_once() -> None:
    """Adoption lists all of the app's subscriptions (paged); a pod starting thousands of
    streams must not list once per stream. Real client, real emulator over HTTP."""
    cfg = GraphEmulatorConfig(mailboxes=(ALICE,), client_id="exsf-app", client_secret="s3cret")
    runner, url = await serve(config=cfg)
    endpoint = GraphEndpoint(base_url=url + "/v1.0", authority=url, azure_tenant_id=cfg.tenant_id,
                             client_id="exsf-app", client_secret_ref="literal:s3cret")
    client = ExchangeClient(endpoint, resolve_secret(endpoint.client_secret_ref))
    try:
        shared = GraphSubscriptions(client, ttl_s=30)
        results = await asyncio.gather(*(shared.listed() for _ in range(8)))
        assert shared.calls == 1 and all(r == [] for r in results)
        fresh = GraphSubscriptions(client, ttl_s=0)
        await fresh.listed()
        await fresh.listed()
        assert fresh.calls == 2, "an expired listing is read again"
    finally:
        await client.close()
        await runner.cleanup()
