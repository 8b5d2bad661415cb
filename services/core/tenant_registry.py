"""Tenant configs on the compacted topic exsf.tenants (key = tenant_id, value = config JSON
without secrets; a tombstone removes a tenant)."""

from __future__ import annotations

import structlog

from services.core.bus.base import Bus
from services.core.tenants import Tenant, TenantConfigError, literal_secret_problems
from services.core.topics import TENANTS, tenant_key

log = structlog.get_logger(__name__)


def check_no_inline_secrets(t: Tenant) -> None:
    """Refuse configs that carry a secret instead of a reference: exsf.tenants is readable
    by every service and kept forever (compaction). `literal:` is a secret too, allowed only
    for endpoints on this machine (the demo and the emulators)."""
    problems = literal_secret_problems(t)
    if problems:
        raise TenantConfigError(problems)


class TenantRegistry:
    def __init__(self, bus: Bus, topic: str = TENANTS) -> None:
        self.bus = bus
        self.topic = topic

    async def put(self, tenant: Tenant) -> None:
        check_no_inline_secrets(tenant)
        p = self.bus.producer()
        await p.start()
        try:
            await p.send_and_wait(self.topic, tenant.to_json(), key=tenant_key(tenant.tenant_id))
        finally:
            await p.stop()

    async def remove(self, tenant_id: str) -> None:
        p = self.bus.producer()
        await p.start()
        try:
            await p.send_and_wait(self.topic, None, key=tenant_key(tenant_id))
        finally:
            await p.stop()

    async def load(self, partitions: list[int] | None = None) -> dict[str, Tenant]:
        """All tenants (or those of the given shards). A malformed config is logged and
        skipped rather than stopping every other tenant."""
        out: dict[str, Tenant] = {}
        for key, msg in (await self.bus.read_latest(self.topic, partitions)).items():
            try:
                t = Tenant.from_json(msg.value or b"")
            except (TenantConfigError, ValueError) as exc:
                log.error("tenant.config_invalid", key=key.decode(errors="replace"), error=str(exc))
                continue
            out[t.tenant_id] = t
        return out
