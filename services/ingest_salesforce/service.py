"""services/ingest_salesforce: Salesforce Change Data Capture -> exsf.changes.salesforce.

One streaming session per owned tenant (CDC channels of the enabled entities); tenant
shards come from the consumer group on exsf.tenants, as on the Exchange side.
"""

from __future__ import annotations

from services.core.bus.base import Bus
from services.core.sideserver import Health
from services.core.tenant_shards import ShardedIngestor, ShardPublisher
from services.core.tenants import Tenant
from services.core.topics import Topics
from services.ingest_salesforce.stream import SERVICE, SalesforceTenant


class SalesforceIngestService(ShardedIngestor[SalesforceTenant]):
    service = SERVICE

    def __init__(self, bus: Bus, topics: Topics, health: Health, *, long_poll_timeout_s: float = 150.0) -> None:
        super().__init__(bus, topics)
        self.health = health
        self.long_poll_timeout_s = long_poll_timeout_s

    def make_runner(self, tenant: Tenant, publisher: ShardPublisher) -> SalesforceTenant:
        return SalesforceTenant(tenant, publisher, self.topics, long_poll_timeout_s=self.long_poll_timeout_s)


async def create(bus: Bus, topics: Topics, health: Health) -> SalesforceIngestService:
    return SalesforceIngestService(bus, topics, health)
