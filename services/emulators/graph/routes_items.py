"""Contacts and contact folders, To Do lists and tasks, mail folders and messages (with
file attachments and upload sessions), and master categories."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from services.emulators.graph.common import immutable_ids, item_resp, list_items, mailbox_of, paged
from services.emulators.graph.delta import removed_entry, run_delta
from services.emulators.graph.ids import new_id, new_token
from services.emulators.graph.ledger import Snapshot
from services.emulators.graph.odata import dict_filter, render_item
from services.emulators.graph.state import UploadSession
from services.emulators.graph.store import (
    CONTACT,
    CONTAINER_OF,
    MESSAGE,
    ODATA_TYPE,
    TASK,
    Attachment,
    Mailbox,
    now_iso,
)
from services.emulators.graph.wire import Ctx, GraphError, Resp, Router

ContainerOf = Callable[[Ctx, Mailbox], str]

_CONTEXT = {CONTACT: "contacts", TASK: "todoTasks", MESSAGE: "messages"}


def _folder_param(name: str, default: Callable[[Mailbox], str]) -> ContainerOf:
    def resolve(ctx: Ctx, mb: Mailbox) -> str:
        return ctx.params[name] if name in ctx.params else default(mb)

    return resolve


def defaults_for(kind: str, payload: dict[str, Any]) -> dict[str, Any]:
    """Properties Outlook fills in on create when the client leaves them out."""
    p = dict(payload)
    if kind == CONTACT:
        if not p.get("displayName"):
            p["displayName"] = " ".join(x for x in (p.get("givenName"), p.get("surname")) if x)
        for key in ("businessPhones", "homePhones", "emailAddresses", "imAddresses", "children"):
            p.setdefault(key, [])
    elif kind == TASK:
        if "singleValueExtendedProperties" in p:
            raise GraphError(400, "invalidRequest", "Invalid property 'singleValueExtendedProperties' for todoTask.")
        p.setdefault("status", "notStarted")
        p.setdefault("importance", "normal")
        p.setdefault("isReminderOn", False)
        p.setdefault("body", {"content": "", "contentType": "text"})
    elif kind == MESSAGE:
        p.setdefault("receivedDateTime", now_iso())
        p.setdefault("sentDateTime", p["receivedDateTime"])
        p.setdefault("isRead", False)
        p.setdefault("isDraft", False)
        p.setdefault("importance", "normal")
        p.setdefault("body", {"contentType": "text", "content": ""})
        p.setdefault("internetMessageId", f"<{new_token()}@emulator.test>")
        p.setdefault("conversationId", new_id("AAQk"))
        body = p.get("body") or {}
        p.setdefault("bodyPreview", str(body.get("content", ""))[:255])
        for key in ("toRecipients", "ccRecipients", "bccRecipients", "replyTo"):
            p.setdefault(key, [])
    return p


def register(router: Router) -> None:
    u = "users/{user}"
    # -- containers
    for kind, path in (("contactFolder", f"{u}/contactFolders"), ("mailFolder", f"{u}/mailFolders"),
                       ("todoList", f"{u}/todo/lists")):
        router.add("GET", path, _list_containers(kind))
        router.add("POST", path, _create_container(kind))
        router.add("GET", path + "/{folder}", _get_container(kind))

    # -- items, per kind: collection path in a container, and the default-container path
    specs: list[tuple[str, str, ContainerOf]] = [
        (CONTACT, f"{u}/contactFolders/{{folder}}/contacts", _folder_param("folder", lambda m: "")),
        (CONTACT, f"{u}/contacts", lambda ctx, mb: mb.default_contact_folder),
        (TASK, f"{u}/todo/lists/{{folder}}/tasks", _folder_param("folder", lambda m: "")),
        (MESSAGE, f"{u}/mailFolders/{{folder}}/messages", _folder_param("folder", lambda m: "")),
        (MESSAGE, f"{u}/messages", lambda ctx, mb: mb.container("drafts", "mailFolder").id),
    ]
    for kind, path, container_of in specs:
        router.add("GET", path, _list(kind, container_of, all_folders=(path == f"{u}/messages")))
        router.add("POST", path, _create(kind, container_of))
        router.add("GET", path + "/delta", _delta(kind, container_of))
        router.add("GET", path + "/{id}", _get(kind))
        router.add("PATCH", path + "/{id}", _patch(kind))
        router.add("DELETE", path + "/{id}", _delete(kind))
        if kind == MESSAGE:
            router.add("POST", path + "/{id}/move", _move)
            router.add("GET", path + "/{id}/attachments", _list_attachments)
            router.add("POST", path + "/{id}/attachments", _add_attachment)
            router.add("GET", path + "/{id}/attachments/{att}", _get_attachment)
            router.add("POST", path + "/{id}/attachments/createUploadSession", _create_upload_session)

    router.add("GET", f"{u}/outlook/masterCategories", _list_categories)
    router.add("POST", f"{u}/outlook/masterCategories", _create_category)
    router.add("GET", f"{u}/outlook/masterCategories/{{cat}}", _get_category)
    router.add("DELETE", f"{u}/outlook/masterCategories/{{cat}}", _delete_category)


# -- containers -------------------------------------------------------------------
def _container_hidden(kind: str, c: Any, mb: Mailbox) -> bool:
    # GET /contactFolders lists the folders under the default Contacts folder, not itself.
    return kind == "contactFolder" and c.id == mb.default_contact_folder


def _list_containers(kind: str) -> Callable[[Ctx], Any]:
    async def handler(ctx: Ctx) -> Resp:
        mb = mailbox_of(ctx)
        keep = dict_filter(ctx.query)
        values = [c.render() for c in mb.containers.values() if c.kind == kind and not _container_hidden(kind, c, mb)]
        return paged(ctx, [v for v in values if keep(v)], f"users('{mb.address}')/{kind}s")

    return handler


def _create_container(kind: str) -> Callable[[Ctx], Any]:
    async def handler(ctx: Ctx) -> Resp:
        mb = mailbox_of(ctx)
        c = ctx.state.store.create_container(mb, kind, ctx.json())
        return Resp(201, c.render())

    return handler


def _get_container(kind: str) -> Callable[[Ctx], Any]:
    async def handler(ctx: Ctx) -> Resp:
        mb = mailbox_of(ctx)
        return Resp(200, mb.container(ctx.params["folder"], kind).render())

    return handler


# -- items ------------------------------------------------------------------------
def _list(kind: str, container_of: ContainerOf, *, all_folders: bool = False) -> Callable[[Ctx], Any]:
    async def handler(ctx: Ctx) -> Resp:
        mb = mailbox_of(ctx)
        if all_folders:
            items = [it for it in mb.items.values() if it.kind == kind]
        else:
            cid = mb.container(container_of(ctx, mb), CONTAINER_OF[kind]).id
            items = mb.items_in(cid)
        return list_items(ctx, items, _CONTEXT[kind])

    return handler


def _create(kind: str, container_of: ContainerOf) -> Callable[[Ctx], Any]:
    async def handler(ctx: Ctx) -> Resp:
        mb = mailbox_of(ctx)
        cid = mb.container(container_of(ctx, mb), CONTAINER_OF[kind]).id
        it = ctx.state.store.create_item(mb, kind, cid, defaults_for(kind, ctx.json()))
        ctx.state.ledger.created(mb.address, it)
        return item_resp(ctx, it, 201)

    return handler


def _get(kind: str) -> Callable[[Ctx], Any]:
    async def handler(ctx: Ctx) -> Resp:
        return item_resp(ctx, mailbox_of(ctx).item(ctx.params["id"], kind))

    return handler


def _patch(kind: str) -> Callable[[Ctx], Any]:
    async def handler(ctx: Ctx) -> Resp:
        mb = mailbox_of(ctx)
        it = mb.item(ctx.params["id"], kind)
        before = Snapshot.of(it)
        ctx.state.store.update_item(mb, it, ctx.json(), ctx.header("if-match"))
        ctx.state.ledger.updated(mb.address, it, before, ctx.header("if-match"))
        return item_resp(ctx, it)

    return handler


def _delete(kind: str) -> Callable[[Ctx], Any]:
    async def handler(ctx: Ctx) -> Resp:
        mb = mailbox_of(ctx)
        it = mb.item(ctx.params["id"], kind)
        ctx.state.store.delete_item(mb, it, ctx.header("if-match"))
        return Resp(204)

    return handler


def _delta(kind: str, container_of: ContainerOf) -> Callable[[Ctx], Any]:
    async def handler(ctx: Ctx) -> Resp:
        mb = mailbox_of(ctx)
        cid = mb.container(container_of(ctx, mb), CONTAINER_OF[kind]).id
        store = ctx.state.store

        def build(since: int, params: dict[str, str]) -> tuple[list[dict[str, Any]], int]:
            current, gone = store.changed_since(mb, cid, since)
            # Messages delta takes a custom changeType option limiting the round to one kind of change.
            change = (params.get("changetype") or "").lower() if kind == MESSAGE else ""
            if change == "created":
                current, gone = [it for it in current if it.created_seq > since], []
            elif change == "updated":
                current, gone = [it for it in current if it.created_seq <= since], []
            elif change == "deleted":
                current = []
            entries = [render_item(params, it) for it in current]
            entries += [removed_entry(ODATA_TYPE[kind], t.item.id) for t in gone]
            return entries, mb.seq

        return run_delta(ctx, f"{kind}:{mb.address}:{cid}", build, f"Collection({kind})")

    return handler


async def _move(ctx: Ctx) -> Resp:
    mb = mailbox_of(ctx)
    it = mb.item(ctx.params["id"], MESSAGE)
    # The SDK sends the action parameter as "DestinationId"; Graph matches it case-insensitively.
    dest = next((v for k, v in ctx.json().items() if k.lower() == "destinationid"), None)
    if not isinstance(dest, str) or not dest:
        raise GraphError(400, "ErrorInvalidIdMalformed", "destinationId is required.")
    moved = ctx.state.store.move_item(mb, it, dest, keep_id=immutable_ids(ctx))
    return item_resp(ctx, moved, 201)


# -- attachments --------------------------------------------------------------------
async def _list_attachments(ctx: Ctx) -> Resp:
    it = mailbox_of(ctx).item(ctx.params["id"], MESSAGE)
    return paged(ctx, [a.render() for a in it.attachments.values()], "attachments")


async def _get_attachment(ctx: Ctx) -> Resp:
    it = mailbox_of(ctx).item(ctx.params["id"], MESSAGE)
    att = it.attachments.get(ctx.params["att"])
    if att is None:
        raise GraphError(404, "ErrorItemNotFound", "The specified object was not found in the store.")
    return Resp(200, att.render())


async def _add_attachment(ctx: Ctx) -> Resp:
    mb = mailbox_of(ctx)
    it = mb.item(ctx.params["id"], MESSAGE)
    body = ctx.json()
    if str(body.get("@odata.type", "")).lower() != "#microsoft.graph.fileattachment":
        raise GraphError(400, "ErrorInvalidRequest", "Only file attachments are supported by the emulator.")
    try:
        content = base64.b64decode(body.get("contentBytes") or "", validate=True)
    except (binascii.Error, ValueError):
        raise GraphError(400, "ErrorInvalidRequest", "contentBytes is not valid base64.") from None
    if len(content) >= ctx.state.config.inline_attachment_limit:
        raise GraphError(413, "ErrorRequestEntityTooLarge",
                         "The attachment is too large for an inline POST; use createUploadSession.")
    att = Attachment(new_id("AAMkA"), str(body.get("name") or "attachment"),
                     str(body.get("contentType") or "application/octet-stream"), content,
                     bool(body.get("isInline", False)))
    ctx.state.store.add_attachment(mb, it, att)
    return Resp(201, att.render())


async def _create_upload_session(ctx: Ctx) -> Resp:
    mb = mailbox_of(ctx)
    it = mb.item(ctx.params["id"], MESSAGE)
    spec = ctx.json().get("AttachmentItem") or ctx.json().get("attachmentItem") or {}
    size = spec.get("size")
    if spec.get("attachmentType", "file") != "file" or not isinstance(size, int) or size <= 0 or not spec.get("name"):
        raise GraphError(400, "ErrorInvalidRequest", "AttachmentItem needs attachmentType file, name and size.")
    token = new_token()
    expires = (datetime.now(UTC) + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%S.0000000Z")
    ctx.state.uploads[token] = UploadSession(mb.address, it.id, str(spec["name"]),
                                             size, str(spec.get("contentType") or "application/octet-stream"), expires)
    root = ctx.base_url.rsplit("/v1.0", 1)[0]
    return Resp(201, {"@odata.context": f"{ctx.base_url}/$metadata#microsoft.graph.uploadSession",
                      "uploadUrl": f"{root}/_upload/{token}", "expirationDateTime": expires,
                      "nextExpectedRanges": ["0-"]})


# -- master categories --------------------------------------------------------------
async def _list_categories(ctx: Ctx) -> Resp:
    mb = mailbox_of(ctx)
    keep = dict_filter(ctx.query)
    return paged(ctx, [dict(c) for c in mb.categories.values() if keep(c)], "outlookCategories")


async def _create_category(ctx: Ctx) -> Resp:
    mb = mailbox_of(ctx)
    body = ctx.json()
    name = body.get("displayName")
    if not isinstance(name, str) or not name:
        raise GraphError(400, "ErrorInvalidRequest", "displayName is required.")
    if any(c["displayName"].lower() == name.lower() for c in mb.categories.values()):
        raise GraphError(409, "ErrorDuplicateCategory", f"A category named '{name}' already exists.")
    cat = {"id": new_id("cat"), "displayName": name, "color": body.get("color") or "none"}
    mb.categories[cat["id"]] = cat
    return Resp(201, dict(cat))


async def _get_category(ctx: Ctx) -> Resp:
    cat = mailbox_of(ctx).categories.get(ctx.params["cat"])
    if cat is None:
        raise GraphError(404, "ErrorItemNotFound", "The specified object was not found in the store.")
    return Resp(200, dict(cat))


async def _delete_category(ctx: Ctx) -> Resp:
    if mailbox_of(ctx).categories.pop(ctx.params["cat"], None) is None:
        raise GraphError(404, "ErrorItemNotFound", "The specified object was not found in the store.")
    return Resp(204)
