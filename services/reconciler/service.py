"""services/reconciler: exsf.changes.* + exsf.results -> exsf.commands.*, exsf.state, exsf.audit.

A consumer-group member (`exsf-reconciler`) on the three co-partitioned input topics; each
partition batch is one Kafka transaction (changelog + commands + audit + offsets) through
the shared PartitionedProcessor. The local store lives in EXSF_STATE_DIR (default ./state).
"""

from __future__ import annotations

import os
from pathlib import Path

import structlog

from services.core.bus.base import Bus
from services.core.config import BusConfig, open_bus
from services.core.processor import PartitionedProcessor
from services.core.sideserver import Health
from services.core.state_store import StateStore
from services.core.topics import Topics
from services.reconciler.handler import SERVICE, ReconcilerHandler, TenantCache

log = structlog.get_logger(__name__)


def state_dir(explicit: str | None = None) -> Path:
    d = Path(explicit or os.environ.get("EXSF_STATE_DIR", "state"))
    d.mkdir(parents=True, exist_ok=True)
    return d


class ReconcilerService:
    def __init__(
        self,
        bus: Bus,
        topics: Topics,
        health: Health,
        *,
        store: StateStore | None = None,
        group_id: str = "exsf-reconciler",
        tick_seconds: float = 30.0,
    ) -> None:
        self.store = store or StateStore(state_dir() / "reconciler.sqlite")
        self.handler = ReconcilerHandler(bus, topics, self.store, TenantCache(bus, topics.tenants))
        self.processor = PartitionedProcessor(
            bus,
            service=SERVICE,
            group_id=group_id,
            topics=[topics.changes_exchange, topics.changes_salesforce, topics.results],
            handler=self.handler,
            deadletter_topic=topics.deadletter,
            transactional_prefix=f"exsf-{SERVICE}" if group_id == "exsf-reconciler" else group_id,
            tick_seconds=tick_seconds,
            health=health,
        )

    async def run(self) -> None:
        try:
            await self.processor.run()
        finally:
            self.store.close()

    def stop(self) -> None:
        self.processor.stop()


async def create(bus: Bus, topics: Topics, health: Health) -> ReconcilerService:
    # EXSF_TOPIC_PREFIX namespaces the group and transactional ids too (see topics.Namespace).
    return ReconcilerService(bus, topics, health, group_id=topics.namespace.group(SERVICE))


async def rebuild_state(partitions: list[int] | None, directory: str | None) -> int:
    """`exsf state rebuild`: replace the local store's partitions with exsf.state's content."""
    cfg = BusConfig.from_env()
    bus = open_bus(cfg)
    await bus.start()
    topics = Topics.with_prefix(cfg.topic_prefix)
    store = StateStore(state_dir(directory) / "reconciler.sqlite")
    try:
        n = await bus.partitions_for(topics.state)
        wanted = partitions if partitions else list(range(n))
        bad = [p for p in wanted if not 0 <= p < n]
        if bad:
            print(f"exsf: partitions {bad} do not exist ({topics.state} has {n})")
            return 2
        total = 0
        for i, p in enumerate(wanted, 1):
            keys = await store.restore(bus, topics.state, p)
            total += keys
            print(f"[{i}/{len(wanted)}] partition {p}: {keys} links restored", flush=True)
        print(f"rebuilt {len(wanted)} partitions, {total} links, into {state_dir(directory) / 'reconciler.sqlite'}")
        return 0
    finally:
        store.close()
        await bus.stop()
