"""Plain records the Exchange client hands to its callers (ingest service, writer).
Items themselves stay Graph-JSON dicts, camelCase as on the wire."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

# The exsf link id travels on Outlook items (contacts, events, messages) as a named
# single-value extended property in exsf's own property set.
EXSF_PROPERTY_SET = "66f5a359-4659-4830-9070-00047ec6ac6e"
LINK_PROPERTY_ID = f"String {{{EXSF_PROPERTY_SET}}} Name exsfLinkId"
# To Do tasks have no extended properties in Graph v1.0; their link id is a linkedResource.
LINKED_RESOURCE_APP = "exsf"

CONTACT_FOLDER_NAME = "Salesforce Contacts"
MAIL_FOLDER_NAME = "Salesforce Emails"
TODO_LIST_NAME = "Salesforce Tasks"
CATEGORY_NAME = "Salesforce"
CATEGORY_COLOR = "preset7"  # Blue

StreamKind = Literal["contacts", "events", "tasks", "messages"]
ItemKind = Literal["contact", "event", "task", "message"]


@dataclass(frozen=True, slots=True)
class PreparedMailbox:
    contact_folder_id: str
    mail_folder_id: str
    todo_list_id: str
    category_name: str


@dataclass(frozen=True, slots=True)
class DeltaStream:
    """One delta-tracked collection of a mailbox. Build with the class methods."""

    kind: StreamKind
    container_id: str | None = None  # contact folder / mail folder / To Do list id; None for events
    window_start: datetime | None = None  # events only (calendarView window, UTC)
    window_end: datetime | None = None
    # Only items with the "Salesforce" category belong to the sync (default folders/lists).
    category_filter: bool = False

    @classmethod
    def contacts(cls, folder_id: str | None) -> DeltaStream:
        """A contact folder, or with None the mailbox's default Contacts folder (which syncs
        only contacts with the "Salesforce" category)."""
        return cls("contacts", folder_id, category_filter=folder_id is None)

    @classmethod
    def events(cls, start: datetime, end: datetime) -> DeltaStream:
        return cls("events", None, start, end)

    @classmethod
    def tasks(cls, list_id: str, *, category_filter: bool = False) -> DeltaStream:
        return cls("tasks", list_id, category_filter=category_filter)

    @classmethod
    def messages(cls, folder_id: str) -> DeltaStream:
        return cls("messages", folder_id)

    @property
    def key(self) -> str:
        """A stable name for cursor storage, e.g. "contacts:<folder id>"."""
        if self.kind == "events":
            return f"events:{_iso(self.window_start)}/{_iso(self.window_end)}"
        return f"{self.kind}:{self.container_id or 'default'}"


def _iso(dt: datetime | None) -> str:
    return "" if dt is None else dt.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(slots=True)
class DeltaPage:
    items: list[dict[str, Any]]  # full Graph-JSON objects (with "@odata.etag")
    removed: list[str]  # ids that came with "@removed"
    next_link: str | None  # more pages follow in this round
    delta_link: str | None  # the round is complete: save this as the cursor

    @property
    def cursor(self) -> str:
        """The link to persist after this page (exactly one of next_link / delta_link is set)."""
        link = self.next_link or self.delta_link
        assert link is not None
        return link


@dataclass(slots=True)
class BatchRequest:
    """One $batch sub-request. `url` is relative to the API root, e.g. "/users/a@b/contacts"."""

    id: str
    method: str
    url: str
    body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    depends_on: list[str] = field(default_factory=list)


@dataclass(slots=True)
class BatchResponse:
    id: str
    status: int
    headers: dict[str, str]
    body: Any  # dict for JSON, None for 204


def link_id_of(item: dict[str, Any]) -> str | None:
    """The exsf link id carried by a Graph item (extended property or, for tasks, linkedResource)."""
    for prop in item.get("singleValueExtendedProperties") or []:
        if str(prop.get("id", "")).lower() == LINK_PROPERTY_ID.lower():
            value = prop.get("value")
            return str(value) if value is not None else None
    for res in item.get("linkedResources") or []:
        if res.get("applicationName") == LINKED_RESOURCE_APP and res.get("externalId"):
            return str(res["externalId"])
    return None


def with_link_id(kind: str, body: Mapping[str, Any], link_id: str) -> dict[str, Any]:
    """A copy of `body` carrying the exsf link id the way Graph allows for that kind."""
    out = copy.deepcopy(dict(body))
    if kind == "task":
        resources = [r for r in out.get("linkedResources") or [] if r.get("applicationName") != LINKED_RESOURCE_APP]
        resources.append({"applicationName": LINKED_RESOURCE_APP, "externalId": link_id, "displayName": "Salesforce"})
        out["linkedResources"] = resources
    else:
        props = [
            p
            for p in out.get("singleValueExtendedProperties") or []
            if str(p.get("id", "")).lower() != LINK_PROPERTY_ID.lower()
        ]
        props.append({"id": LINK_PROPERTY_ID, "value": link_id})
        out["singleValueExtendedProperties"] = props
    return out
