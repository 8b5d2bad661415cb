"""The table of live Graph subscriptions every ingest-exchange pod keeps.

Graph posts a subscription's notifications to one URL, and the k8s Service hands each POST
to any pod; so every pod must be able to tell a genuine notification from a forged one. The
owner of a stream records its subscription on the compacted topic exsf.subscriptions (key =
subscription id, tombstone when deleted); every pod follows that topic into this table and
validates against it. The record also names the owning shard, so a receiving pod knows which
partition of exsf.notifications to forward to, and a pod taking a shard over after a crash
finds that shard's subscriptions to reuse or delete instead of orphaning them.

clientState is the shared secret Graph echoes in every notification
(https://learn.microsoft.com/graph/change-notifications-delivery-webhooks): it is kept out
of repr() and logs.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

import orjson

Verdict = Literal["ok", "unknown subscription", "clientState mismatch", "tenant mismatch"]


@dataclass(frozen=True)
class SubscriptionRecord:
    id: str
    client_state: str = field(repr=False)
    tenant_id: str
    mailbox: str
    stream: str
    resource: str
    expiry: str  # ISO 8601, as Graph's expirationDateTime
    shard: int  # the partition of exsf.tenants (and of exsf.notifications) owning the stream
    # The Azure AD (directory) tenant whose mailbox this is: Graph names it as `tenantId` in
    # every notification, so a notification naming another directory is refused.
    directory_tenant: str = ""
    # Written BEFORE Graph's create (key "pending:<nonce>"), removed once the real record is
    # stored: a crash in between leaves this trace, and the next owner lists Graph's
    # subscriptions and deletes the one no record owns. Never valid for a notification.
    pending: bool = False

    def encode(self) -> bytes:
        return orjson.dumps(
            {
                "id": self.id,
                "clientState": self.client_state,
                "tenant": self.tenant_id,
                "mailbox": self.mailbox,
                "stream": self.stream,
                "resource": self.resource,
                "expiry": self.expiry,
                "shard": self.shard,
                "directoryTenant": self.directory_tenant,
                "pending": self.pending,
            }
        )

    @classmethod
    def decode(cls, raw: bytes) -> SubscriptionRecord:
        """Raises ValueError (or KeyError/TypeError) on a record that is not ours."""
        d = orjson.loads(raw)
        return cls(
            id=str(d["id"]),
            client_state=str(d["clientState"]),
            tenant_id=str(d["tenant"]),
            mailbox=str(d["mailbox"]),
            stream=str(d["stream"]),
            resource=str(d["resource"]),
            expiry=str(d["expiry"]),
            shard=int(d["shard"]),
            directory_tenant=str(d.get("directoryTenant") or ""),
            pending=bool(d.get("pending", False)),
        )

    def verdict(self, client_state: str, tenant_id: str | None) -> Verdict:
        """Does a notification carrying this clientState and Graph `tenantId` belong here?"""
        return check_notification(self.client_state, self.directory_tenant, client_state, tenant_id)

    def expired(self, now: datetime) -> bool:
        return datetime.fromisoformat(self.expiry.replace("Z", "+00:00")) <= now

    @property
    def stream_key(self) -> tuple[str, str, str]:
        return (self.tenant_id, self.mailbox, self.stream)


_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def directory_tenant_of(azure_tenant_id: str) -> str:
    """The directory id to hold notifications to, from a tenant's configured azure_tenant_id.
    Graph's `tenantId` is always the directory GUID, but the token authority also accepts a
    verified domain ("contoso.onmicrosoft.com"): such a value cannot be compared, so it gives
    "" and the check rests on clientState alone (as it would without a tenantId)."""
    value = azure_tenant_id.strip()
    return value.lower() if _GUID.fullmatch(value) else ""


def check_notification(
    expected_state: str, expected_tenant: str, client_state: str, tenant_id: str | None
) -> Verdict:
    """clientState first (constant time: it is the shared secret), then the directory tenant.
    A notification with no tenantId is let through on clientState alone (older payloads and
    lifecycle events of some resources omit it); one naming another tenant is refused: the
    stream was never subscribed for that directory, so its change cannot be ours to fetch."""
    if not secrets.compare_digest(client_state.encode(), expected_state.encode()):
        return "clientState mismatch"
    if expected_tenant and tenant_id and tenant_id.lower() != expected_tenant.lower():
        return "tenant mismatch"
    return "ok"


class SubscriptionTable:
    """Latest record per subscription id, as read from the compacted topic."""

    def __init__(self) -> None:
        self._by_id: dict[str, SubscriptionRecord] = {}

    def __len__(self) -> int:
        return len(self._by_id)

    def get(self, subscription_id: str) -> SubscriptionRecord | None:
        return self._by_id.get(subscription_id)

    def apply(self, key: bytes | None, value: bytes | None) -> bool:
        """Apply one record of the topic; False for a record that cannot be read (the caller
        logs it once; the table is left as it was)."""
        if key is None:
            return False
        if value is None:
            self._by_id.pop(key.decode(), None)
            return True
        try:
            rec = SubscriptionRecord.decode(value)
        except (ValueError, KeyError, TypeError):
            return False
        if rec.id != key.decode():
            return False
        self._by_id[rec.id] = rec
        return True

    def check(self, subscription_id: str, client_state: str, tenant_id: str | None) -> Verdict:
        """Validate a notification. `tenant_id` is Graph's tenantId field (None if absent)."""
        rec = self._by_id.get(subscription_id)
        if rec is None or rec.pending:
            return "unknown subscription"
        return rec.verdict(client_state, tenant_id)

    def of_shard(self, shard: int) -> list[SubscriptionRecord]:
        """Subscriptions a pod taking over `shard` must reuse or delete."""
        return [r for r in self._by_id.values() if r.shard == shard]

    def pending_of_resource(self, tenant_id: str, mailbox: str, resource: str) -> list[SubscriptionRecord]:
        """Traces of creates that may have reached Graph without their record (see `pending`)."""
        key = (tenant_id, mailbox, resource)
        return [r for r in self._by_id.values() if r.pending and (r.tenant_id, r.mailbox, r.resource) == key]

    def of_resource(self, tenant_id: str, mailbox: str, resource: str) -> list[SubscriptionRecord]:
        """All recorded subscriptions of one watched resource, oldest expiry first. Matched by
        resource, not stream key: the calendar stream's key changes daily with its window,
        its subscription does not. More than one means an earlier owner crashed between
        creating a new one and deleting the old; keep one, delete the rest."""
        key = (tenant_id, mailbox, resource)
        return sorted(
            (r for r in self._by_id.values() if not r.pending and (r.tenant_id, r.mailbox, r.resource) == key),
            key=lambda r: r.expiry,
        )
