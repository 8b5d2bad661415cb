"""In-memory mailbox data: containers (folders, lists, the calendar), items with
changeKeys, and per-container change history for delta queries.

Every write — from the API or from the admin API acting "as the user in Outlook" — goes
through `Store`, which bumps the mailbox sequence number, assigns a new changeKey and tells
the listeners (change notifications). Delta is computed from item sequence numbers plus
tombstones left in a container when an item is deleted from it or moved out of it.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from services.emulators.graph.ids import etag_of, new_change_key, new_id
from services.emulators.graph.wire import GraphError

CONTACT, EVENT, TASK, MESSAGE = "contact", "event", "task", "message"
CONTAINER_OF = {CONTACT: "contactFolder", EVENT: "calendar", TASK: "todoList", MESSAGE: "mailFolder"}
ODATA_TYPE = {
    CONTACT: "#microsoft.graph.contact",
    EVENT: "#microsoft.graph.event",
    TASK: "#microsoft.graph.todoTask",
    MESSAGE: "#microsoft.graph.message",
}
# Properties the server owns; a client sending them in POST/PATCH does not set them.
_SERVER_OWNED = {"id", "changeKey", "createdDateTime", "lastModifiedDateTime", "@odata.etag", "@odata.type",
                 "@odata.context", "parentFolderId", "singleValueExtendedProperties", "attachments", "type",
                 "seriesMasterId", "occurrenceId"}


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"


@dataclass
class Attachment:
    id: str
    name: str
    content_type: str
    content: bytes
    is_inline: bool = False
    modified: str = field(default_factory=now_iso)

    def render(self, *, with_bytes: bool = True) -> dict[str, Any]:
        import base64

        out: dict[str, Any] = {
            "@odata.type": "#microsoft.graph.fileAttachment",
            "id": self.id,
            "lastModifiedDateTime": self.modified,
            "name": self.name,
            "contentType": self.content_type,
            "size": len(self.content),
            "isInline": self.is_inline,
            "contentId": None,
            "contentLocation": None,
        }
        if with_bytes:
            out["contentBytes"] = base64.b64encode(self.content).decode()
        return out


@dataclass
class Item:
    id: str
    kind: str
    container: str
    data: dict[str, Any]
    change_key: str
    created: str
    modified: str
    seq: int
    ext: dict[str, tuple[str, str]] = field(default_factory=dict)  # lower(id) -> (id, value)
    attachments: dict[str, Attachment] = field(default_factory=dict)
    # Recurring series state (events): date "YYYY-MM-DD" -> override dict; cancelled dates.
    exceptions: dict[str, dict[str, Any]] = field(default_factory=dict)
    cancelled: set[str] = field(default_factory=set)
    created_seq: int = 0  # sequence number at which the item arrived in its container

    @property
    def etag(self) -> str:
        return etag_of(self.change_key)

    def render(self) -> dict[str, Any]:
        out: dict[str, Any] = {"@odata.etag": self.etag, "id": self.id}
        out["createdDateTime"] = self.created
        out["lastModifiedDateTime"] = self.modified
        if self.kind != TASK:
            out["changeKey"] = self.change_key
            out.setdefault("categories", [])
        out.update(copy.deepcopy(self.data))
        out.setdefault("categories", [])
        if self.kind in (CONTACT, MESSAGE):
            out["parentFolderId"] = self.container
        if self.kind == MESSAGE:
            out["hasAttachments"] = bool(self.attachments)
        if self.kind == EVENT:
            out.setdefault("type", "seriesMaster" if self.data.get("recurrence") else "singleInstance")
            out.setdefault("hasAttachments", bool(self.attachments))
        return out

    def ext_value(self, prop_id: str) -> str | None:
        hit = self.ext.get(prop_id.lower())
        return hit[1] if hit else None


@dataclass
class Container:
    id: str
    kind: str
    data: dict[str, Any]
    well_known: str | None = None

    def render(self) -> dict[str, Any]:
        out = {"id": self.id, **copy.deepcopy(self.data)}
        return out


@dataclass
class Tombstone:
    seq: int
    item: Item  # the item as it was when it left the container


@dataclass
class ChangeNotice:
    mailbox: str
    kind: str
    container: str
    item_id: str
    change_type: str  # created | updated | deleted
    etag: str


@dataclass
class Mailbox:
    address: str
    user_id: str
    containers: dict[str, Container] = field(default_factory=dict)
    items: dict[str, Item] = field(default_factory=dict)
    tombstones: dict[str, list[Tombstone]] = field(default_factory=dict)
    categories: dict[str, dict[str, Any]] = field(default_factory=dict)
    seq: int = 0
    default_contact_folder: str = ""
    calendar_id: str = ""
    default_todo_list: str = ""

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def container(self, container_id: str, kind: str) -> Container:
        c = self.containers.get(container_id)
        if c is None:
            c = next((x for x in self.containers.values()
                      if x.well_known and x.well_known.lower() == container_id.lower()), None)
        if c is None or c.kind != kind:
            raise GraphError(404, "ErrorItemNotFound" if kind != "todoList" else "NotFound",
                             "The specified object was not found in the store.")
        return c

    def item(self, item_id: str, kind: str | None = None) -> Item:
        it = self.items.get(item_id)
        if it is None or (kind is not None and it.kind != kind):
            raise GraphError(404, "ErrorItemNotFound", "The specified object was not found in the store.")
        return it

    def items_in(self, container_id: str) -> list[Item]:
        return [it for it in self.items.values() if it.container == container_id]


Listener = Callable[[ChangeNotice], None]


def _split_ext(payload: dict[str, Any]) -> dict[str, tuple[str, str]]:
    out: dict[str, tuple[str, str]] = {}
    for prop in payload.get("singleValueExtendedProperties") or []:
        if not isinstance(prop, dict) or "id" not in prop:
            raise GraphError(400, "ErrorInvalidExtendedProperty", "An extended property needs an id.")
        out[str(prop["id"]).lower()] = (str(prop["id"]), "" if prop.get("value") is None else str(prop["value"]))
    return out


def _clean(payload: dict[str, Any]) -> dict[str, Any]:
    return {k: copy.deepcopy(v) for k, v in payload.items() if k not in _SERVER_OWNED and not k.startswith("@")}


class Store:
    def __init__(self) -> None:
        self.mailboxes: dict[str, Mailbox] = {}
        self.listeners: list[Listener] = []

    # -- mailboxes and containers -------------------------------------------------
    def add_mailbox(self, address: str) -> Mailbox:
        key = address.lower()
        if key in self.mailboxes:
            return self.mailboxes[key]
        mb = Mailbox(address=address, user_id=str(uuid.uuid4()))
        root = self._add_container(mb, "contactFolder", {"displayName": "Contacts", "parentFolderId": ""}, "contacts")
        mb.default_contact_folder = root.id
        cal = self._add_container(mb, "calendar", {"name": "Calendar", "isDefaultCalendar": True}, "calendar")
        mb.calendar_id = cal.id
        tasks = self._add_container(
            mb, "todoList", {"displayName": "Tasks", "isOwner": True, "isShared": False,
                             "wellknownListName": "defaultList"}, "defaultList")
        mb.default_todo_list = tasks.id
        msg_root = new_id("AAMkRoot")
        for name, well_known in (("Inbox", "inbox"), ("Drafts", "drafts"), ("Sent Items", "sentitems"),
                                 ("Deleted Items", "deleteditems"), ("Archive", "archive")):
            self._add_container(mb, "mailFolder", self._mail_folder_data(name, msg_root), well_known)
        self.mailboxes[key] = mb
        return mb

    @staticmethod
    def _mail_folder_data(name: str, parent: str) -> dict[str, Any]:
        return {"displayName": name, "parentFolderId": parent, "childFolderCount": 0, "unreadItemCount": 0,
                "totalItemCount": 0, "isHidden": False}

    def _add_container(self, mb: Mailbox, kind: str, data: dict[str, Any], well_known: str | None = None) -> Container:
        c = Container(id=new_id("AAMkF"), kind=kind, data=data, well_known=well_known)
        mb.containers[c.id] = c
        return c

    def mailbox(self, address: str) -> Mailbox:
        mb = self.mailboxes.get(address.lower())
        if mb is None:
            mb = next((m for m in self.mailboxes.values() if m.user_id == address), None)
        if mb is None:
            raise GraphError(404, "ErrorInvalidUser", f"The requested user '{address}' is invalid.")
        return mb

    def create_container(self, mb: Mailbox, kind: str, data: dict[str, Any]) -> Container:
        name = data.get("displayName")
        if not isinstance(name, str) or not name:
            raise GraphError(400, "ErrorInvalidRequest", "displayName is required.")
        if any(c.kind == kind and c.data.get("displayName", "").lower() == name.lower()
               for c in mb.containers.values() if c.well_known is None or kind == "mailFolder"):
            raise GraphError(409, "ErrorFolderExists", "A folder with the specified name already exists.")
        if kind == "mailFolder":
            root = next(c for c in mb.containers.values() if c.well_known == "inbox").data["parentFolderId"]
            payload = self._mail_folder_data(name, root)
            payload["isHidden"] = bool(data.get("isHidden", False))
        elif kind == "contactFolder":
            payload = {"displayName": name, "parentFolderId": mb.default_contact_folder}
        else:
            payload = {"displayName": name, "isOwner": True, "isShared": False, "wellknownListName": "none"}
        return self._add_container(mb, kind, payload)

    # -- items --------------------------------------------------------------------
    def _notify(self, mb: Mailbox, it: Item, change_type: str, container: str | None = None) -> None:
        notice = ChangeNotice(mb.address, it.kind, container or it.container, it.id, change_type, it.etag)
        for listener in list(self.listeners):
            listener(notice)

    def create_item(self, mb: Mailbox, kind: str, container_id: str, payload: dict[str, Any]) -> Item:
        container = mb.container(container_id, CONTAINER_OF[kind])
        ts = now_iso()
        it = Item(id=new_id("AAMkI"), kind=kind, container=container.id, data=_clean(payload),
                  change_key=new_change_key(), created=ts, modified=ts, seq=mb.next_seq(), ext=_split_ext(payload))
        it.created_seq = it.seq
        mb.items[it.id] = it
        self._notify(mb, it, "created")
        return it

    def touch(self, mb: Mailbox, it: Item) -> None:
        it.change_key = new_change_key()
        it.modified = now_iso()
        it.seq = mb.next_seq()
        self._notify(mb, it, "updated")

    def update_item(self, mb: Mailbox, it: Item, patch: dict[str, Any], if_match: str | None = None) -> Item:
        check_if_match(it, if_match)
        it.data.update(_clean(patch))
        it.data = {k: v for k, v in it.data.items() if v is not None or k in ("recurrence",)}
        it.ext.update(_split_ext(patch))
        self.touch(mb, it)
        return it

    def delete_item(self, mb: Mailbox, it: Item, if_match: str | None = None) -> None:
        check_if_match(it, if_match)
        del mb.items[it.id]
        mb.tombstones.setdefault(it.container, []).append(Tombstone(mb.next_seq(), copy.deepcopy(it)))
        self._notify(mb, it, "deleted")

    def move_item(self, mb: Mailbox, it: Item, dest_id: str, *, keep_id: bool = False) -> Item:
        dest = mb.container(dest_id, CONTAINER_OF[it.kind])
        if dest.id == it.container:
            return it
        old = copy.deepcopy(it)
        del mb.items[it.id]
        mb.tombstones.setdefault(it.container, []).append(Tombstone(mb.next_seq(), old))
        self._notify(mb, old, "deleted")
        # Outlook gives a moved item a new id unless the client asked for immutable ids.
        moved = copy.deepcopy(it)
        if not keep_id:
            moved.id = new_id("AAMkI")
        moved.container = dest.id
        moved.change_key = new_change_key()
        moved.modified = now_iso()
        moved.seq = mb.next_seq()
        moved.created_seq = moved.seq
        mb.items[moved.id] = moved
        self._notify(mb, moved, "created")
        return moved

    def add_attachment(self, mb: Mailbox, it: Item, att: Attachment) -> Attachment:
        it.attachments[att.id] = att
        self.touch(mb, it)
        return att

    # -- change history -----------------------------------------------------------
    def changed_since(self, mb: Mailbox, container_id: str, since: int) -> tuple[list[Item], list[Tombstone]]:
        """Items currently in the container changed after `since`, and tombstones of items that
        left it after `since` and are not back. The initial round (since=0) has no tombstones."""
        current = sorted((it for it in mb.items_in(container_id) if it.seq > since), key=lambda i: i.seq)
        if since == 0:
            return current, []
        present = {it.id for it in mb.items_in(container_id)}
        latest: dict[str, Tombstone] = {}
        for ts in mb.tombstones.get(container_id, []):
            if ts.seq > since and ts.item.id not in present:
                latest[ts.item.id] = ts
        return current, sorted(latest.values(), key=lambda t: t.seq)


def check_if_match(it: Item, if_match: str | None) -> None:
    if if_match is None or if_match.strip() == "*":
        return
    given = if_match.strip()
    if given.startswith("W/"):
        given = given[2:]
    given = given.strip('"')
    if given != it.change_key:
        raise GraphError(
            412, "ErrorIrresolvableConflict",
            "The send or update operation could not be performed because the change key passed in the request "
            "does not match the current change key for the item.")
