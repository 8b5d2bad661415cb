"""The admin API under /_admin (no auth, JSON): seed data, act "as the user in Outlook"
(through the same Store, so delta and notifications see it exactly like API writes),
inject faults, read counters and the ledger of applied writes (ledger.py), trigger lifecycle
notifications, reset."""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from services.emulators.graph.ids import new_id
from services.emulators.graph.odata import render_item
from services.emulators.graph.routes_calendar import event_defaults, normalise, render_event
from services.emulators.graph.routes_items import defaults_for
from services.emulators.graph.state import STATE_KEY, EmulatorState
from services.emulators.graph.store import CONTAINER_OF, EVENT, Attachment, Container, Item, Mailbox
from services.emulators.graph.wire import GraphError

AdminHandler = Callable[[web.Request, EmulatorState], Awaitable[Any]]


def _json(handler: AdminHandler) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def wrapped(request: web.Request) -> web.Response:
        try:
            result = await handler(request, request.app[STATE_KEY])
        except GraphError as exc:
            return web.json_response({"error": {"code": exc.code, "message": exc.message}}, status=exc.status)
        if isinstance(result, web.Response):
            return result
        return web.json_response(result)

    return wrapped


async def _body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    data = await request.json()
    return data if isinstance(data, dict) else {}


def _find_container(mb: Mailbox, kind: str, ref: str | None) -> Container:
    ckind = CONTAINER_OF[kind]
    if not ref:
        default = {"contact": mb.default_contact_folder, "event": mb.calendar_id, "task": mb.default_todo_list,
                   "message": "inbox"}[kind]
        return mb.container(default, ckind)
    for c in mb.containers.values():
        if c.kind == ckind and (c.id == ref or (c.well_known or "").lower() == ref.lower()
                                or str(c.data.get("displayName", "")).lower() == ref.lower()):
            return c
    raise GraphError(404, "ErrorItemNotFound", f"no {ckind} {ref!r}")


def _render(it: Item) -> dict[str, Any]:
    query = {"$expand": "singleValueExtendedProperties"}
    return render_event(query, {}, it) if it.kind == EVENT else render_item(query, it)


def _mailbox(request: web.Request, state: EmulatorState) -> Mailbox:
    return state.store.mailbox(request.match_info["mailbox"])


async def list_mailboxes(request: web.Request, state: EmulatorState) -> Any:
    return [{"address": mb.address, "id": mb.user_id} for mb in state.store.mailboxes.values()]


async def add_mailbox(request: web.Request, state: EmulatorState) -> Any:
    mb = state.store.add_mailbox(str((await _body(request))["address"]))
    return {"address": mb.address, "id": mb.user_id}


async def list_containers(request: web.Request, state: EmulatorState) -> Any:
    mb = _mailbox(request, state)
    return [{"id": c.id, "kind": c.kind, "wellKnown": c.well_known, **c.data} for c in mb.containers.values()]


async def create_item(request: web.Request, state: EmulatorState) -> Any:
    mb = _mailbox(request, state)
    body = await _body(request)
    kind = str(body.get("kind", ""))
    if kind not in CONTAINER_OF:
        raise GraphError(400, "BadRequest", "kind must be contact, event, task or message")
    container = _find_container(mb, kind, body.get("container"))
    data = dict(body.get("data") or {})
    payload = normalise(event_defaults(mb, data)) if kind == EVENT else defaults_for(kind, data)
    it = state.store.create_item(mb, kind, container.id, payload)
    return web.json_response(_render(it), status=201)


async def get_item(request: web.Request, state: EmulatorState) -> Any:
    return _render(_mailbox(request, state).item(request.match_info["item"]))


async def update_item(request: web.Request, state: EmulatorState) -> Any:
    mb = _mailbox(request, state)
    it = mb.item(request.match_info["item"])
    data = dict((await _body(request)).get("data") or {})
    state.store.update_item(mb, it, normalise(data, it.data) if it.kind == EVENT else data)
    return _render(it)


async def delete_item(request: web.Request, state: EmulatorState) -> Any:
    mb = _mailbox(request, state)
    state.store.delete_item(mb, mb.item(request.match_info["item"]))
    return {"deleted": request.match_info["item"]}


async def move_item(request: web.Request, state: EmulatorState) -> Any:
    mb = _mailbox(request, state)
    it = mb.item(request.match_info["item"])
    body = await _body(request)
    dest = _find_container(mb, it.kind, str(body.get("destination") or ""))
    return _render(state.store.move_item(mb, it, dest.id, keep_id=bool(body.get("keepId", False))))


async def add_attachment(request: web.Request, state: EmulatorState) -> Any:
    mb = _mailbox(request, state)
    it = mb.item(request.match_info["item"])
    body = await _body(request)
    att = Attachment(new_id("AAMkA"), str(body.get("name") or "file.bin"),
                     str(body.get("contentType") or "application/octet-stream"),
                     base64.b64decode(body.get("contentBase64") or ""))
    state.store.add_attachment(mb, it, att)
    return web.json_response(att.render(with_bytes=False), status=201)


async def categories(request: web.Request, state: EmulatorState) -> Any:
    return list(_mailbox(request, state).categories.values())


async def set_faults(request: web.Request, state: EmulatorState) -> Any:
    body = await _body(request)
    f = state.faults
    if "throttle" in body:
        t = body["throttle"] or {}
        f.throttle_remaining = int(t.get("count", 1))
        f.throttle_retry_after = max(1, int(t.get("retry_after", 1)))
        f.throttle_mailbox = t.get("mailbox")
    if "unavailable" in body:
        t = body["unavailable"] or {}
        f.unavailable_remaining = int(t.get("count", 1))
        ra = t.get("retry_after")
        f.unavailable_retry_after = None if ra is None else max(1, int(ra))
        f.unavailable_mailbox = t.get("mailbox")
    if "delay_ms" in body:
        f.delay_ms = max(0, int(body["delay_ms"]))
    if "drop_notifications" in body:
        f.drop_notifications = int(body["drop_notifications"])
    if "delta_gone_code" in body:
        f.delta_gone_code = str(body["delta_gone_code"])
    if "concurrency_limit" in body:
        limit = body["concurrency_limit"]
        state.config.concurrency_limit = None if limit is None else int(limit)
    return {"throttle_remaining": f.throttle_remaining, "unavailable_remaining": f.unavailable_remaining,
            "delay_ms": f.delay_ms, "drop_notifications": f.drop_notifications,
            "concurrency_limit": state.config.concurrency_limit}


async def expire_tokens(request: web.Request, state: EmulatorState) -> Any:
    return {"expired": state.tokens.expire_all()}


async def evict_delta(request: web.Request, state: EmulatorState) -> Any:
    return {"evicted": state.delta_tokens.evict_all()}


async def counters(request: web.Request, state: EmulatorState) -> Any:
    mailbox = request.query.get("mailbox")
    return state.counters.snapshot(mailbox)


async def ledger(request: web.Request, state: EmulatorState) -> Any:
    return state.ledger.snapshot()


async def list_subscriptions(request: web.Request, state: EmulatorState) -> Any:
    return [s.render() for s in state.subscriptions.subs.values()]


async def lifecycle(request: web.Request, state: EmulatorState) -> Any:
    event = str((await _body(request)).get("event", ""))
    state.subscriptions.lifecycle(request.match_info["sub"], event)
    return {"sent": event}


async def deliveries(request: web.Request, state: EmulatorState) -> Any:
    return state.subscriptions.deliveries


async def reset(request: web.Request, state: EmulatorState) -> Any:
    state.reset()
    return {"reset": True}


def add_admin_routes(app: web.Application) -> None:
    r = app.router
    m = "/_admin/mailboxes/{mailbox}"
    r.add_get("/_admin/mailboxes", _json(list_mailboxes))
    r.add_post("/_admin/mailboxes", _json(add_mailbox))
    r.add_get(m + "/containers", _json(list_containers))
    r.add_get(m + "/categories", _json(categories))
    r.add_post(m + "/items", _json(create_item))
    r.add_get(m + "/items/{item}", _json(get_item))
    r.add_patch(m + "/items/{item}", _json(update_item))
    r.add_delete(m + "/items/{item}", _json(delete_item))
    r.add_post(m + "/items/{item}/move", _json(move_item))
    r.add_post(m + "/items/{item}/attachments", _json(add_attachment))
    r.add_post("/_admin/faults", _json(set_faults))
    r.add_post("/_admin/tokens/expire", _json(expire_tokens))
    r.add_post("/_admin/delta/evict", _json(evict_delta))
    r.add_get("/_admin/counters", _json(counters))
    r.add_get("/_admin/ledger", _json(ledger))
    r.add_get("/_admin/subscriptions", _json(list_subscriptions))
    r.add_post("/_admin/subscriptions/{sub}/lifecycle", _json(lifecycle))
    r.add_get("/_admin/deliveries", _json(deliveries))
    r.add_post("/_admin/reset", _json(reset))
