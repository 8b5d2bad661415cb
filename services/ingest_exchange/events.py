"""Pure conversion of Graph delta items into ChangeEvents (no I/O, easy to test).

Which items belong to the sync (docs/design.md §1):
- contacts in "Salesforce Contacts", tasks in "Salesforce Tasks", messages in
  "Salesforce Emails": everything in the tracked container;
- calendar events: only those with the category "Salesforce" (or carrying our link id,
  i.e. created from Salesforce). An event without them is reported as `left_scope` with no
  content, so an event whose category was removed stops syncing and nothing private about
  other events is published.
"""

from __future__ import annotations

from typing import Any

from services.connectors.exchange import mapping
from services.connectors.exchange.models import CATEGORY_NAME, DeltaStream, link_id_of
from services.core.envelopes import ChangeEvent, Entity, Origin

ENTITY_OF: dict[str, Entity] = {"contacts": "contact", "events": "event", "tasks": "task", "messages": "email"}


def entity_of(stream: DeltaStream) -> Entity:
    return ENTITY_OF[stream.kind]


def in_scope(stream: DeltaStream, item: dict[str, Any]) -> bool:
    """Calendar events and contacts of the default Contacts folder sync only with the
    "Salesforce" category (or our link id); items of the Salesforce folders always do."""
    if stream.kind != "events" and not stream.category_filter:
        return True
    cats = {str(c).lower() for c in item.get("categories") or []}
    return CATEGORY_NAME.lower() in cats or link_id_of(item) is not None


def synced_by(stream: DeltaStream, item: dict[str, Any]) -> bool:
    """Whether `stream` tracks `item` where it is now (used when another stream of the same
    mailbox reports it removed: a move between two synced places is not an unlink)."""
    if stream.kind == "contacts" and not stream.category_filter:
        return item.get("parentFolderId") == stream.container_id
    if stream.kind == "contacts":
        return in_scope(stream, item) and bool(item.get("parentFolderId"))
    return stream.kind == "events" and in_scope(stream, item)


def upsert_event(tenant_id: str, user: str, stream: DeltaStream, item: dict[str, Any], observed_at: str) -> ChangeEvent:
    entity = entity_of(stream)
    if not in_scope(stream, item):
        return unlink_event(tenant_id, user, stream, str(item["id"]), version_of_item(item), observed_at)
    email = entity == "email" and bool(item.get("internetMessageId"))
    origin = Origin(
        stream=stream.key,
        link_tag=link_id_of(item) or None,
        ical_uid=str(item["iCalUId"]) if entity == "event" and item.get("iCalUId") else None,
        internet_message_id=str(item["internetMessageId"]) if email else None,
        has_attachments=bool(item.get("hasAttachments")) if email else None,
    )
    return ChangeEvent(
        tenant_id=tenant_id,
        user=user,
        source="exchange",
        entity=entity,
        source_id=str(item["id"]),
        op="upsert",
        version=version_of_item(item),
        observed_at=observed_at,
        modified_at=mapping.modified_at_of(item),
        record=mapping.graph_to_canonical(entity, item),
        origin=origin,
    )


def delete_event(tenant_id: str, user: str, stream: DeltaStream, item_id: str, observed_at: str) -> ChangeEvent:
    """The item is gone from the mailbox (confirmed by a 404, not only by delta's @removed)."""
    return ChangeEvent(
        tenant_id=tenant_id,
        user=user,
        source="exchange",
        entity=entity_of(stream),
        source_id=item_id,
        op="delete",
        version=f"deleted@{observed_at}",
        observed_at=observed_at,
        modified_at=observed_at,
        origin=Origin(stream=stream.key),
    )


def unlink_event(
    tenant_id: str, user: str, stream: DeltaStream, item_id: str, version: str, observed_at: str
) -> ChangeEvent:
    """The item still exists but left the sync scope (moved out of the folder, category
    removed): the link is dropped and the other side is left alone."""
    return ChangeEvent(
        tenant_id=tenant_id,
        user=user,
        source="exchange",
        entity=entity_of(stream),
        source_id=item_id,
        op="left_scope",
        version=f"unlinked@{version}",
        observed_at=observed_at,
        modified_at=observed_at,
        origin=Origin(stream=stream.key),
    )


def resync_marker(
    tenant_id: str, user: str, stream: DeltaStream, seen_ids: list[str], round_id: str, observed_at: str
) -> ChangeEvent:
    """End of a full round after an invalid delta token (410): delta cannot report what
    vanished meanwhile, so the round lists every id it saw and the reconciler treats linked
    items missing from it as gone."""
    return ChangeEvent(
        tenant_id=tenant_id,
        user=user,
        source="exchange",
        entity=entity_of(stream),
        source_id=f"resync:{stream.key}",
        op="upsert",
        version=round_id,
        observed_at=observed_at,
        record={},
        origin=Origin(stream=stream.key, resync_complete=True, seen_ids=tuple(sorted(seen_ids))),
    )


def version_of_item(item: dict[str, Any]) -> str:
    return mapping.version_of(item) or str(item.get("lastModifiedDateTime") or "unknown")
