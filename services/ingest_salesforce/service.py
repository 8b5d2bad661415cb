"""services/ingest_salesforce: Salesforce Change Data Capture -> exsf.changes.salesforce.

One streaming session per owned tenant (CDC channels of the enabled entities); tenant
shards come from the consumer group on exsf.tenants, as on the Exchange side.
"""

from __future__ import annotations

from services.core.bus.base import Bus
from services.core.sideserver import Health
from services.core.tenant_shards import ShardPublisher, TenantRunner, TenantShards
from services.core.tenants import Tenant
from services.core.topics import Topics
from services.ingest_salesforce.stream import SERVICE, SalesforceTenant


class SalesforceIngestService:
    def __init__(self, bus: Bus, topics: Topics, health: Health, *, long_poll_timeout_s: float = 150.0) -> None:
        self.bus = bus
        self.topics = topics
        self.health = health
        self.long_poll_timeout_s = long_poll_timeout_s
        self.tenants: dict[str, SalesforceTenant] = {}
        self.shards = TenantShards(
            bus,
            service=SERVICE,
            start_tenant=self._start_tenant,
            tenants_topic=topics.tenants,
            cursors_topic=topics.cursors,
        )

    async def _start_tenant(self, tenant: Tenant, publisher: ShardPublisher) -> TenantRunner:
        runner = SalesforceTenant(tenant, publisher, self.topics, long_poll_timeout_s=self.long_poll_timeout_s)
        await runner.start()
        self.tenants[tenant.tenant_id] = runner
        return runner

    async def run(self) -> None:
        await self.shards.run()

    def stop(self) -> None:
        self.shards.stop()


async def create(bus: Bus, topics: Topics, health: Health) -> SalesforceIngestService:
    return SalesforceIngestService(bus, topics, health)
