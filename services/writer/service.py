"""services/writer: exsf.commands.exchange + exsf.commands.salesforce -> Microsoft Graph and
Salesforce, one CommandResult per command on exsf.results.

A PartitionedProcessor (group exsf-writer) feeds WriterHandler.handle_batch; results and
consumed offsets are committed in one transaction per partition batch. The API writes are
at-least-once and made idempotent (handler.py). Tenants come from exsf.tenants, re-read
every `tenant_reload_s` and whenever a command names an unknown tenant; which tenant's
link holds an item id is followed from exsf.state (link_owners.py).
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from services.core.bus.base import Bus
from services.core.processor import PartitionedProcessor
from services.core.sideserver import Health
from services.core.tenant_registry import TenantRegistry
from services.core.topics import Topics
from services.writer.config import WriterSettings
from services.writer.directory import TenantDirectory
from services.writer.handler import SERVICE, WriterHandler
from services.writer.link_owners import LinkOwners

log = structlog.get_logger(__name__)

GROUP_ID = "exsf-writer"


class WriterService:
    def __init__(self, bus: Bus, topics: Topics, health: Health | None = None, *,
                 settings: WriterSettings | None = None, directory: TenantDirectory | None = None,
                 group_id: str = GROUP_ID, transactional_prefix: str | None = None) -> None:
        self.bus = bus
        self.topics = topics
        self.health = health
        self.settings = settings or WriterSettings()
        self.directory = directory or TenantDirectory(TenantRegistry(bus, topics.tenants), self.settings)
        self.owners = LinkOwners()
        self.handler = WriterHandler(bus, topics, self.directory, self.settings, self.owners)
        self.processor = PartitionedProcessor(
            bus,
            service=SERVICE,
            group_id=group_id,
            topics=[topics.commands_exchange, topics.commands_salesforce],
            handler=self.handler,
            deadletter_topic=topics.deadletter,
            transactional_prefix=transactional_prefix,
            max_batch=self.settings.max_batch,
            health=health,
        )

    async def _reload_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.settings.tenant_reload_s)
            try:
                await self.directory.reload()
            except Exception as exc:  # keep the last good view of the tenants
                log.warning("writer.tenant_reload_failed", error=f"{type(exc).__name__}: {exc}")

    async def _follow_owners(self) -> None:
        delay = 1.0
        while True:
            try:
                await self.owners.follow(self.bus, self.topics.state)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep the table we have; re-read from the start
                log.warning("writer.link_owners_failed", error=f"{type(exc).__name__}: {exc}", retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    async def run(self) -> None:
        await self.directory.reload()
        background = [asyncio.create_task(self._reload_periodically()), asyncio.create_task(self._follow_owners())]
        try:
            # Commands wait until every id already linked is known, or a command naming
            # another tenant's id could slip through in the first seconds after a restart.
            if self.health is not None:  # /readyz: 503 naming the table until it is loaded
                self.health.mark_pending(OWNERS_PENDING)
            await self.owners.caught_up.wait()
            if self.health is not None:
                self.health.mark_done(OWNERS_PENDING)
            await self.processor.run()
        finally:
            for task in background:
                task.cancel()
            for task in background:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await self.directory.close()

    def stop(self) -> None:
        self.processor.stop()


OWNERS_PENDING = "writer/link-owners"


async def create(bus: Bus, topics: Topics, health: Health) -> WriterService:
    # A prefixed namespace (tests, side-by-side demos on one cluster) also gets its own
    # consumer group and transactional ids, so two namespaces never fence each other.
    ns = topics.namespace
    return WriterService(bus, topics, health, settings=WriterSettings.from_env(), group_id=ns.group("writer"),
                         transactional_prefix=ns.transactional_prefix("writer"))
