"""Tenants and their API clients, as the writer sees them.

Tenant configs come from exsf.tenants: loaded at start, re-read when a command names a
tenant we do not know (at most once per `min_reload_s`, so a flood of bogus tenant ids
cannot turn into a flood of topic reads; such a command waits for the next allowed
reload) and periodically by the service. Clients are built per tenant from that
tenant's own endpoints and secret references only, and rebuilt when its config
changes. Prepared mailboxes (folder / To Do list ids from ExchangeClient.ensure_mailbox)
are cached per tenant and mailbox.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import structlog

from services.connectors.exchange.client import ExchangeClient
from services.connectors.exchange.models import PreparedMailbox
from services.connectors.salesforce.auth import SalesforceAuth
from services.connectors.salesforce.rest import SalesforceRest
from services.core.secrets import resolve_secret
from services.core.tenant_registry import TenantRegistry
from services.core.tenants import Tenant
from services.writer.config import WriterSettings
from services.writer.throttle import Gate

log = structlog.get_logger(__name__)

ExchangeFactory = Callable[[Tenant, WriterSettings], ExchangeClient]
SalesforceFactory = Callable[[Tenant, WriterSettings], SalesforceRest]


def default_exchange(tenant: Tenant, settings: WriterSettings) -> ExchangeClient:
    return ExchangeClient(
        tenant.graph,
        resolve_secret(tenant.graph.client_secret_ref),
        max_retries=settings.graph_max_retries,
        retry_delay_s=settings.graph_retry_delay_s,
    )


def default_salesforce(tenant: Tenant, settings: WriterSettings) -> SalesforceRest:
    return SalesforceRest(SalesforceAuth.from_endpoint(tenant.salesforce))


class TenantDirectory:
    def __init__(
        self,
        registry: TenantRegistry,
        settings: WriterSettings,
        *,
        exchange_factory: ExchangeFactory = default_exchange,
        salesforce_factory: SalesforceFactory = default_salesforce,
        min_reload_s: float = 1.0,
    ) -> None:
        self.registry = registry
        self.settings = settings
        self.exchange_factory = exchange_factory
        self.salesforce_factory = salesforce_factory
        self.min_reload_s = min_reload_s
        self.tenants: dict[str, Tenant] = {}
        self._loaded_at = float("-inf")
        self._reload_lock = asyncio.Lock()
        self._exchange: dict[str, tuple[Tenant, ExchangeClient]] = {}
        self._salesforce: dict[str, tuple[Tenant, SalesforceRest]] = {}
        self._prepared: dict[tuple[str, str], PreparedMailbox] = {}
        self._prepare_locks: dict[tuple[str, str], asyncio.Lock] = {}
        # Graph: per (tenant, mailbox); Salesforce: per tenant.
        self.graph_gate = Gate(settings.mailbox_concurrency)
        self.salesforce_gate = Gate(settings.salesforce_concurrency)
        self.reloads = 0

    async def reload(self) -> None:
        async with self._reload_lock:
            self.tenants = await self.registry.load()
            self._loaded_at = time.monotonic()
            self.reloads += 1
        for tid in list(self._exchange):
            if self.tenants.get(tid) != self._exchange[tid][0]:
                await self._drop_exchange(tid)
        for tid in list(self._salesforce):
            if self.tenants.get(tid) != self._salesforce[tid][0]:
                await self._drop_salesforce(tid)
        log.info("writer.tenants_loaded", tenants=len(self.tenants))

    async def tenant(self, tenant_id: str) -> Tenant | None:
        t = self.tenants.get(tenant_id)
        if t is None:
            # Reload, but at most once per min_reload_s: a command naming a tenant enrolled a
            # moment ago waits for the next allowed reload rather than failing.
            wait = self.min_reload_s - (time.monotonic() - self._loaded_at)
            if wait > 0:
                await asyncio.sleep(wait)
            await self.reload()
            t = self.tenants.get(tenant_id)
        return t

    def exchange(self, tenant: Tenant) -> ExchangeClient:
        held = self._exchange.get(tenant.tenant_id)
        if held is None:
            held = self._exchange[tenant.tenant_id] = (tenant, self.exchange_factory(tenant, self.settings))
        return held[1]

    def salesforce(self, tenant: Tenant) -> SalesforceRest:
        held = self._salesforce.get(tenant.tenant_id)
        if held is None:
            held = self._salesforce[tenant.tenant_id] = (tenant, self.salesforce_factory(tenant, self.settings))
        return held[1]

    async def prepared(self, tenant: Tenant, mailbox: str) -> PreparedMailbox:
        """Folder and list ids of the mailbox (created where missing), cached."""
        key = (tenant.tenant_id, mailbox.lower())
        got = self._prepared.get(key)
        if got is not None:
            return got
        lock = self._prepare_locks.setdefault(key, asyncio.Lock())
        async with lock:
            got = self._prepared.get(key)
            if got is None:
                async with self.graph_gate.slot(key):
                    got = await self.exchange(tenant).ensure_mailbox(mailbox)
                self._prepared[key] = got
        return got

    def forget_mailbox(self, tenant_id: str, mailbox: str) -> None:
        """A folder or list vanished (404 on create): prepare the mailbox again next time."""
        self._prepared.pop((tenant_id, mailbox.lower()), None)

    async def _drop_exchange(self, tenant_id: str) -> None:
        _, client = self._exchange.pop(tenant_id)
        for key in [k for k in self._prepared if k[0] == tenant_id]:
            del self._prepared[key]
        try:
            await client.close()
        except Exception as exc:  # closing a stale client must not stop the writer
            log.warning("writer.client_close_failed", error=type(exc).__name__)

    async def _drop_salesforce(self, tenant_id: str) -> None:
        _, rest = self._salesforce.pop(tenant_id)
        try:
            await rest.close()
            await rest.auth.close()
        except Exception as exc:
            log.warning("writer.client_close_failed", error=type(exc).__name__)

    async def close(self) -> None:
        for tid in list(self._exchange):
            await self._drop_exchange(tid)
        for tid in list(self._salesforce):
            await self._drop_salesforce(tid)
