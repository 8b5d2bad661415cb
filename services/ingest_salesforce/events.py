"""Pure conversion of Salesforce records and CDC messages into ChangeEvents.

Every upsert event carries the *full* canonical record. CDC UPDATEs hold only changed
fields (and no OwnerId), so the stream re-reads updated records over REST in bulk (one
sObject Collections call per 200 ids) before converting them here; CREATE events carry
every non-empty field and are converted directly.
"""

from __future__ import annotations

from typing import Any

from services.connectors.salesforce import mapping
from services.core.envelopes import ChangeEvent, Entity, Origin
from services.core.tenants import Tenant

ENTITY_OF_SOBJECT: dict[str, Entity] = {"Contact": "contact", "Event": "event", "Task": "task"}
UNKNOWN_USER = "*"  # a delete whose owner is not known here; the reconciler finds the link by id


def sobject_fields(entity: str, external_id_field: str | None = None) -> list[str]:
    """Every field the mapping reads, plus what the stream needs to decide."""
    names = {f for g in mapping.TABLES[entity] for f in g.fields}
    names |= {"Id", "OwnerId", "SystemModstamp", "LastModifiedDate", "IsDeleted"}
    if external_id_field:
        names.add(external_id_field)
    if entity == "task":
        names.add("TaskSubtype")
    if entity == "event":
        names |= {"IsRecurrence", "RecurrenceActivityId"}
    return sorted(names)


def is_email_task(record: dict[str, Any]) -> bool:
    """Tasks exsf made from emails are one-way (Exchange -> Salesforce): never ingested back."""
    return str(record.get("TaskSubtype") or "") == "Email"


def not_synced(entity: str, record: dict[str, Any]) -> str | None:
    """Why a record of a synced type is still not published (None: it is):
    - an email task: exsf made it from an email, one-way;
    - an occurrence Salesforce generated from a recurring Event: the series master (with
      its recurrence) is what syncs; copying occurrences too would duplicate the series."""
    if entity == "task" and is_email_task(record):
        return "email_task"
    if entity == "event" and mapping.is_series_occurrence(record):
        return "series_occurrence"
    return None


def from_record(
    tenant: Tenant, entity: Entity, record: dict[str, Any], observed_at: str, *, catch_up: bool = False
) -> ChangeEvent | None:
    """A REST record (re-read, or `catch_up` read after lost replay ids) as an upsert, or a
    delete if IsDeleted. None when its owner is not enrolled (counted and dropped by the caller)."""
    owner = mapping.owner_of(record) or ""
    user = tenant.user_by_salesforce_id(owner) if owner else None
    rid = str(record["Id"])
    version = mapping.version_of(record) or "unknown"
    if record.get("IsDeleted"):
        return delete(tenant, entity, rid, user.mailbox if user else UNKNOWN_USER, f"deleted@{version}", observed_at)
    if user is None:
        return None
    return ChangeEvent(
        tenant_id=tenant.tenant_id,
        user=user.mailbox,
        source="salesforce",
        entity=entity,
        source_id=rid,
        op="upsert",
        version=version,
        observed_at=observed_at,
        modified_at=mapping.modified_at_of(record),
        record=mapping.sf_to_canonical(entity, record),
        origin=Origin(owner_id=owner, link_tag=_link_tag(tenant, record), catch_up=catch_up),
    )


def from_caught_up(tenant: Tenant, entity: Entity, record: dict[str, Any], observed_at: str) -> ChangeEvent | None:
    """`from_record` for a record a catch-up query read (the replay ids were lost)."""
    return from_record(tenant, entity, record, observed_at, catch_up=True)


def _link_tag(tenant: Tenant, record: dict[str, Any]) -> str | None:
    """Records exsf created carry their link id in the external id field (the upsert key):
    it lets the reconciler recognise its own create even before the writer's result."""
    value = record.get(tenant.salesforce.external_id_field)
    return str(value) if value else None


def from_create(
    tenant: Tenant, entity: Entity, record_id: str, payload: dict[str, Any], header: dict[str, Any], observed_at: str
) -> ChangeEvent | None:
    """A CDC CREATE body (every non-empty field, OwnerId included)."""
    owner = mapping.owner_of(payload) or ""
    user = tenant.user_by_salesforce_id(owner) if owner else None
    if user is None:
        return None
    record, _ = mapping.cdc_to_canonical(entity, {**payload, "ChangeEventHeader": header})
    return ChangeEvent(
        tenant_id=tenant.tenant_id,
        user=user.mailbox,
        source="salesforce",
        entity=entity,
        source_id=record_id,
        op="upsert",
        version=mapping.version_of(header) or "unknown",
        observed_at=observed_at,
        modified_at=mapping.modified_at_of(header),
        record=record,
        origin=Origin(
            owner_id=owner, change_origin=str(header.get("changeOrigin") or ""), link_tag=_link_tag(tenant, payload)
        ),
    )


def delete(
    tenant: Tenant,
    entity: Entity,
    record_id: str,
    user: str,
    version: str,
    observed_at: str,
    header: dict[str, Any] | None = None,
) -> ChangeEvent:
    origin = Origin(change_origin=str(header.get("changeOrigin") or "") if header is not None else None)
    return ChangeEvent(
        tenant_id=tenant.tenant_id,
        user=user,
        source="salesforce",
        entity=entity,
        source_id=record_id,
        op="delete",
        version=version,
        observed_at=observed_at,
        modified_at=mapping.modified_at_of(header) if header else observed_at,
        origin=origin,
    )


def unlink(tenant: Tenant, entity: Entity, record: dict[str, Any], observed_at: str) -> ChangeEvent:
    """The record now belongs to someone who is not enrolled: it left the scope. Not a delete: the reconciler
    removes the mailbox copies it made and stops syncing items a mailbox had itself
    (reconciler/core/ownership.py); nothing is deleted in Salesforce."""
    return ChangeEvent(
        tenant_id=tenant.tenant_id,
        user=UNKNOWN_USER,
        source="salesforce",
        entity=entity,
        source_id=str(record["Id"]),
        op="left_scope",
        version=f"unlinked@{mapping.version_of(record)}",
        observed_at=observed_at,
        modified_at=mapping.modified_at_of(record),
        origin=Origin(owner_id=mapping.owner_of(record)),
    )
