"""The topics of docs/design.md §3, and keys that place each record on its tenant's shard.

Every topic has the same partition count: a tenant's records live in partition
`partition_for(tenant_id)` on all of them, which is what lets reconciler and writer
instances own whole tenants.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from services.core.bus.base import TopicSpec
from services.core.bus.partitioning import partition_for

TENANTS = "exsf.tenants"
CHANGES_EXCHANGE = "exsf.changes.exchange"
CHANGES_SALESFORCE = "exsf.changes.salesforce"
COMMANDS_EXCHANGE = "exsf.commands.exchange"
COMMANDS_SALESFORCE = "exsf.commands.salesforce"
RESULTS = "exsf.results"
CURSORS = "exsf.cursors"
STATE = "exsf.state"
AUDIT = "exsf.audit"
DEADLETTER = "exsf.deadletter"
# Graph subscriptions (compacted, key = subscription id) and notifications forwarded from
# whichever ingest-exchange pod received them to the shard that owns the stream.
SUBSCRIPTIONS = "exsf.subscriptions"
NOTIFICATIONS = "exsf.notifications"

SEVEN_DAYS_MS = 7 * 24 * 3600 * 1000

# name -> (compacted, retention_ms)
_LAYOUT: dict[str, tuple[bool, int | None]] = {
    TENANTS: (True, None),
    CHANGES_EXCHANGE: (False, SEVEN_DAYS_MS),
    CHANGES_SALESFORCE: (False, SEVEN_DAYS_MS),
    COMMANDS_EXCHANGE: (False, SEVEN_DAYS_MS),
    COMMANDS_SALESFORCE: (False, SEVEN_DAYS_MS),
    RESULTS: (False, SEVEN_DAYS_MS),
    CURSORS: (True, None),
    STATE: (True, None),
    AUDIT: (False, 30 * 24 * 3600 * 1000),
    DEADLETTER: (False, 30 * 24 * 3600 * 1000),
    SUBSCRIPTIONS: (True, None),
    # A notification is only a poke: after an hour a poll round has long found its change.
    NOTIFICATIONS: (False, 3600 * 1000),
}

ALL_TOPICS: tuple[str, ...] = tuple(_LAYOUT)


def topic_specs(partitions: int, prefix: str = "") -> list[TopicSpec]:
    """The full topic set. `prefix` lets tests and parallel demos use separate namespaces
    on one cluster."""
    return [
        TopicSpec(prefix + name, partitions, compacted, retention) for name, (compacted, retention) in _LAYOUT.items()
    ]


def shard_of(tenant_id: str, partitions: int) -> int:
    """The tenant's partition number on every topic. Records whose key is longer than the
    tenant id (cursors, state) must be sent to this partition explicitly."""
    return partition_for(tenant_key(tenant_id), partitions)


def tenant_key(tenant_id: str) -> bytes:
    return tenant_id.encode()


def cursor_key(tenant_id: str, user: str, stream: str) -> bytes:
    return f"{tenant_id}/{user}/{stream}".encode()


def state_key(tenant_id: str, entity: str, link_id: str) -> bytes:
    return f"{tenant_id}/{entity}/{link_id}".encode()


@dataclass(frozen=True)
class Topics:
    """Topic names as one service instance sees them (with the configured prefix), so
    tests and side-by-side demos can share a cluster without seeing each other."""

    tenants: str = TENANTS
    changes_exchange: str = CHANGES_EXCHANGE
    changes_salesforce: str = CHANGES_SALESFORCE
    commands_exchange: str = COMMANDS_EXCHANGE
    commands_salesforce: str = COMMANDS_SALESFORCE
    results: str = RESULTS
    cursors: str = CURSORS
    state: str = STATE
    audit: str = AUDIT
    deadletter: str = DEADLETTER
    subscriptions: str = SUBSCRIPTIONS
    notifications: str = NOTIFICATIONS

    @classmethod
    def with_prefix(cls, prefix: str) -> Topics:
        return cls(**{f.name: prefix + getattr(cls, f.name) for f in fields(cls)})

    @property
    def namespace(self) -> Namespace:
        """The deployment namespace these topics belong to (EXSF_TOPIC_PREFIX)."""
        return Namespace(self.results[: -len(RESULTS)] if self.results.endswith(RESULTS) else "")

    def commands_for(self, target: str) -> str:
        return self.commands_exchange if target == "exchange" else self.commands_salesforce

    def changes_from(self, source: str) -> str:
        return self.changes_exchange if source == "exchange" else self.changes_salesforce


@dataclass(frozen=True)
class Namespace:
    """EXSF_TOPIC_PREFIX applied to consumer groups and transactional ids as well as topics,
    so two deployments sharing a cluster never join each other's groups or fence each
    other's producers. The empty prefix gives the historical names."""

    prefix: str = ""

    def group(self, service: str) -> str:
        return f"{self.prefix}exsf-{service}"

    def transactional_id(self, service: str, partition: int) -> str:
        return f"{self.transactional_prefix(service)}-{partition}"

    def transactional_prefix(self, service: str) -> str:
        return self.group(service)
