"""Tenant model: one Salesforce org paired with one Microsoft 365 tenant, and its users.

Tenant configs live on the compacted topic exsf.tenants (key = tenant_id). They carry only
secret *references*; services resolve them at use time with `resolve_secret`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, cast

import orjson

from services.core.envelopes import ENTITIES

ConflictPolicy = Literal["latest-wins", "salesforce-wins", "exchange-wins"]
CONFLICT_POLICIES: tuple[str, ...] = ("latest-wins", "salesforce-wins", "exchange-wins")


class TenantConfigError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class User:
    mailbox: str  # the Graph user (UPN / mail); also the user key on every envelope
    salesforce_user_id: str


@dataclass(frozen=True, slots=True)
class GraphEndpoint:
    base_url: str = "https://graph.microsoft.com/v1.0"
    # Token endpoint authority; the emulator serves {authority}/{tenant}/oauth2/v2.0/token.
    authority: str = "https://login.microsoftonline.com"
    azure_tenant_id: str = ""
    client_id: str = ""
    client_secret_ref: str = ""


@dataclass(frozen=True, slots=True)
class SalesforceEndpoint:
    # login.salesforce.com, test.salesforce.com, a My Domain URL, or the emulator.
    login_url: str = "https://login.salesforce.com"
    api_version: str = "60.0"
    client_id: str = ""
    client_secret_ref: str = ""
    username: str = ""
    password_ref: str = ""
    # External id field holding the exsf link id, used for idempotent upserts.
    external_id_field: str = "exsf_Link_Id__c"


@dataclass(frozen=True, slots=True)
class Tenant:
    tenant_id: str
    users: tuple[User, ...]
    graph: GraphEndpoint = field(default_factory=GraphEndpoint)
    salesforce: SalesforceEndpoint = field(default_factory=SalesforceEndpoint)
    conflict_policy: ConflictPolicy = "latest-wins"
    entities: tuple[str, ...] = ("contact", "event", "task", "email")
    # Periodic full comparison that catches anything a missed notification left behind.
    safety_sweep_seconds: int = 3600
    poll_seconds: int = 60
    # How long the reconciler remembers a deleted pair (so late or replayed inputs about
    # it stay stale). Longer than the change topics' retention (7 days) and any replay.
    tombstone_days: int = 14

    def user_by_mailbox(self, mailbox: str) -> User | None:
        m = mailbox.lower()
        return next((u for u in self.users if u.mailbox.lower() == m), None)

    def user_by_salesforce_id(self, sf_id: str) -> User | None:
        # Salesforce ids come as 15 or 18 characters; the first 15 identify the record.
        return next((u for u in self.users if u.salesforce_user_id[:15] == sf_id[:15]), None)

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: bytes | str | Mapping[str, Any]) -> Tenant:
        d: Any = raw if isinstance(raw, Mapping) else orjson.loads(raw)
        return tenant_from_dict(d)


def tenant_from_dict(d: Mapping[str, Any]) -> Tenant:
    try:
        tid = d["tenant_id"]
        if not isinstance(tid, str) or not tid:
            raise TenantConfigError("tenant_id must be a non-empty string")
        users = tuple(User(**u) for u in d.get("users", []))
        graph = GraphEndpoint(**d.get("graph", {}))
        sf = SalesforceEndpoint(**d.get("salesforce", {}))
    except KeyError as exc:
        raise TenantConfigError(f"tenant config: missing {exc.args[0]!r}") from None
    except TypeError as exc:
        raise TenantConfigError(f"tenant config {d.get('tenant_id')!r}: {exc}") from None
    policy = d.get("conflict_policy", "latest-wins")
    if policy not in CONFLICT_POLICIES:
        raise TenantConfigError(f"tenant {tid}: conflict_policy must be one of {', '.join(CONFLICT_POLICIES)}")
    entities = tuple(d.get("entities", ENTITIES))
    bad = [e for e in entities if e not in ENTITIES]
    if bad:
        raise TenantConfigError(f"tenant {tid}: unknown entities {bad}")
    return Tenant(
        tenant_id=tid,
        users=users,
        graph=graph,
        salesforce=sf,
        conflict_policy=cast(ConflictPolicy, policy),
        entities=entities,
        safety_sweep_seconds=int(d.get("safety_sweep_seconds", 3600)),
        poll_seconds=int(d.get("poll_seconds", 60)),
        tombstone_days=_positive(tid, "tombstone_days", d.get("tombstone_days", 14)),
    )


def _positive(tid: str, name: str, value: Any) -> int:
    try:
        n = int(value)
    except (TypeError, ValueError):
        n = 0
    if n <= 0:
        raise TenantConfigError(f"tenant {tid}: {name} must be a positive whole number, not {value!r}")
    return n
