"""Change-notification subscriptions: creation with the validation handshake, renewal,
deletion, delivery of change notifications (fire-and-forget; a receiver that is down is
tolerated) and lifecycle notifications triggered through the admin API."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import aiohttp
import structlog

from services.emulators.graph.store import CONTACT, EVENT, MESSAGE, TASK, ChangeNotice
from services.emulators.graph.wire import Ctx, GraphError, Resp, Router, normalise_segments

if TYPE_CHECKING:
    from services.emulators.graph.state import EmulatorState

log = structlog.get_logger(__name__)

_RESOURCE_TYPE = {CONTACT: "Contacts", EVENT: "Events", MESSAGE: "Messages", TASK: "Tasks"}
_ODATA = {CONTACT: "#Microsoft.Graph.Contact", EVENT: "#Microsoft.Graph.Event", MESSAGE: "#Microsoft.Graph.Message",
          TASK: "#Microsoft.Graph.TodoTask"}


@dataclass
class Subscription:
    id: str
    resource: str
    change_types: set[str]
    notification_url: str
    lifecycle_url: str | None
    client_state: str | None
    expiration: datetime
    app_id: str
    mailbox: str
    kind: str
    container: str | None  # None: any container of that kind
    delivered: list[dict[str, Any]] = field(default_factory=list)

    def render(self) -> dict[str, Any]:
        return {
            "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#subscriptions/$entity",
            "id": self.id,
            "resource": self.resource,
            "applicationId": self.app_id,
            "changeType": ",".join(sorted(self.change_types)),
            "clientState": self.client_state,
            "notificationUrl": self.notification_url,
            "lifecycleNotificationUrl": self.lifecycle_url,
            "expirationDateTime": _iso(self.expiration),
            "creatorId": self.app_id,
            "includeResourceData": False,
            "latestSupportedTlsVersion": "v1_2",
            "notificationUrlAppId": None,
        }


def _iso(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _parse_expiration(value: Any, max_minutes: int) -> datetime:
    if not isinstance(value, str):
        raise GraphError(400, "ValidationError", "expirationDateTime is required.")
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise GraphError(400, "ValidationError", "expirationDateTime is not a valid date.") from None
    dt = dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt
    now = datetime.now(UTC)
    if dt <= now:
        raise GraphError(400, "ValidationError", "Subscription expiration must be in the future.")
    if dt > now + timedelta(minutes=max_minutes):
        raise GraphError(400, "ValidationError",
                         f"Subscription expiration can only be {max_minutes} minutes in the future.")
    return dt


class SubscriptionManager:
    def __init__(self, state: EmulatorState) -> None:
        self.state = state
        self.subs: dict[str, Subscription] = {}
        self.deliveries: list[dict[str, Any]] = []  # every POST attempted: url, kind, status/error

    def clear(self) -> None:
        self.subs.clear()
        self.deliveries.clear()

    def _target(self, resource: str) -> tuple[str, str, str | None]:
        seg = normalise_segments(resource)
        if len(seg) >= 3 and seg[0].lower() == "users":
            mb = self.state.store.mailbox(seg[1])
            rest = [s.lower() for s in seg[2:]]
            if rest in (["contacts"],):
                return mb.address, CONTACT, None
            if len(rest) == 3 and rest[0] == "contactfolders" and rest[2] == "contacts":
                return mb.address, CONTACT, mb.container(seg[3], "contactFolder").id
            if rest in (["events"], ["calendar", "events"]):
                return mb.address, EVENT, None
            if rest == ["messages"]:
                return mb.address, MESSAGE, None
            if len(rest) == 3 and rest[0] == "mailfolders" and rest[2] == "messages":
                return mb.address, MESSAGE, mb.container(seg[3], "mailFolder").id
            if len(rest) == 4 and rest[:2] == ["todo", "lists"] and rest[3] == "tasks":
                return mb.address, TASK, mb.container(seg[4], "todoList").id
        raise GraphError(400, "InvalidRequest", f"The resource '{resource}' is not supported for subscriptions.")

    async def _validate(self, url: str) -> None:
        token = f"Validation: Testing client application reachability for subscription Request-Id: {uuid.uuid4()}"
        sep = "&" if "?" in url else "?"
        session = await self.state.client()
        timeout = aiohttp.ClientTimeout(total=self.state.config.validation_timeout_s)
        failure = "Subscription validation request failed. Response must exactly match validationToken query parameter."
        try:
            async with session.post(f"{url}{sep}validationToken={quote(token)}", data=b"",
                                    headers={"Content-Type": "text/plain; charset=utf-8"}, timeout=timeout) as r:
                text = await r.text()
                if r.status != 200 or text != token:
                    raise GraphError(400, "ValidationError", failure)
        except (aiohttp.ClientError, TimeoutError):
            raise GraphError(400, "ValidationError",
                             "Subscription validation request failed. Notification endpoint must respond with 200 OK "
                             "to validation request.") from None

    async def create(self, ctx: Ctx) -> Resp:
        body = ctx.json()
        for key in ("changeType", "notificationUrl", "resource", "expirationDateTime"):
            if not body.get(key):
                raise GraphError(400, "ValidationError", f"{key} is required.")
        changes = {c.strip() for c in str(body["changeType"]).split(",") if c.strip()}
        if not changes or not changes <= {"created", "updated", "deleted"}:
            raise GraphError(400, "ValidationError", "changeType must be created, updated and/or deleted.")
        client_state = body.get("clientState")
        if client_state is not None and len(str(client_state)) > 128:
            raise GraphError(400, "ValidationError", "clientState is limited to 128 characters.")
        expiration = _parse_expiration(body["expirationDateTime"], self.state.config.max_subscription_minutes)
        mailbox, kind, container = self._target(str(body["resource"]))
        await self._validate(str(body["notificationUrl"]))
        if body.get("lifecycleNotificationUrl"):
            await self._validate(str(body["lifecycleNotificationUrl"]))
        sub = Subscription(str(uuid.uuid4()), str(body["resource"]), changes, str(body["notificationUrl"]),
                           body.get("lifecycleNotificationUrl"), client_state, expiration, ctx.app_id, mailbox, kind,
                           container)
        self.subs[sub.id] = sub
        return Resp(201, sub.render())

    def _sub(self, sub_id: str) -> Subscription:
        sub = self.subs.get(sub_id)
        if sub is None:
            raise GraphError(404, "ResourceNotFound", f"The object was not found: subscription {sub_id}.")
        return sub

    async def get(self, ctx: Ctx) -> Resp:
        return Resp(200, self._sub(ctx.params["sub"]).render())

    async def list(self, ctx: Ctx) -> Resp:
        return Resp(200, {"value": [s.render() for s in self.subs.values() if s.app_id == ctx.app_id]})

    async def renew(self, ctx: Ctx) -> Resp:
        sub = self._sub(ctx.params["sub"])
        body = ctx.json()
        if "expirationDateTime" in body:
            sub.expiration = _parse_expiration(body["expirationDateTime"], self.state.config.max_subscription_minutes)
        if "notificationUrl" in body:
            await self._validate(str(body["notificationUrl"]))
            sub.notification_url = str(body["notificationUrl"])
        return Resp(200, sub.render())

    async def delete(self, ctx: Ctx) -> Resp:
        self._sub(ctx.params["sub"])
        del self.subs[ctx.params["sub"]]
        return Resp(204)

    async def reauthorize(self, ctx: Ctx) -> Resp:
        self._sub(ctx.params["sub"])
        return Resp(200)

    # -- delivery ---------------------------------------------------------------------
    def on_change(self, notice: ChangeNotice) -> None:
        now = datetime.now(UTC)
        mb = self.state.store.mailboxes.get(notice.mailbox.lower())
        user_id = mb.user_id if mb else notice.mailbox
        for sub in list(self.subs.values()):
            if (sub.mailbox.lower() != notice.mailbox.lower() or sub.kind != notice.kind
                    or (sub.container is not None and sub.container != notice.container)
                    or notice.change_type not in sub.change_types or sub.expiration <= now):
                continue
            resource = f"Users/{user_id}/{_RESOURCE_TYPE[notice.kind]}/{notice.item_id}"
            payload = {"value": [{
                "id": uuid.uuid4().hex[:16],
                "subscriptionId": sub.id,
                "subscriptionExpirationDateTime": _iso(sub.expiration),
                "clientState": sub.client_state,
                "changeType": notice.change_type,
                "resource": resource,
                "tenantId": self.state.config.tenant_id,
                "resourceData": {"@odata.type": _ODATA[notice.kind], "@odata.id": resource,
                                 "@odata.etag": notice.etag, "id": notice.item_id},
            }]}
            self._post_later(sub.notification_url, payload, "change")

    def lifecycle(self, sub_id: str, event: str) -> None:
        if event not in ("reauthorizationRequired", "subscriptionRemoved", "missed"):
            raise GraphError(400, "BadRequest", f"unknown lifecycle event {event!r}")
        sub = self._sub(sub_id)
        if not sub.lifecycle_url:
            raise GraphError(400, "BadRequest", "the subscription has no lifecycleNotificationUrl")
        payload = {"value": [{"subscriptionId": sub.id, "subscriptionExpirationDateTime": _iso(sub.expiration),
                              "tenantId": self.state.config.tenant_id, "clientState": sub.client_state,
                              "lifecycleEvent": event}]}
        if event == "subscriptionRemoved":
            self.subs.pop(sub.id, None)
        self._post_later(sub.lifecycle_url, payload, "lifecycle")

    def _post_later(self, url: str, payload: dict[str, Any], kind: str) -> None:
        record: dict[str, Any] = {"url": url, "kind": kind, "payload": payload, "status": None, "error": None}
        self.deliveries.append(record)
        if self.state.faults.take_drop_notification():
            record["error"] = "dropped"
            return
        self.state.spawn(self._post(url, payload, record))

    async def _post(self, url: str, payload: dict[str, Any], record: dict[str, Any]) -> None:
        try:
            session = await self.state.client()
            timeout = aiohttp.ClientTimeout(total=self.state.config.notification_timeout_s)
            async with session.post(url, json=payload, timeout=timeout) as r:
                record["status"] = r.status
        except (aiohttp.ClientError, TimeoutError, asyncio.CancelledError) as exc:
            record["error"] = type(exc).__name__
            log.info("graph_emulator.notification_failed", url=url, error=type(exc).__name__)
            if isinstance(exc, asyncio.CancelledError):
                raise


def register(router: Router) -> None:
    async def create(ctx: Ctx) -> Resp:
        return await ctx.state.subscriptions.create(ctx)

    async def list_(ctx: Ctx) -> Resp:
        return await ctx.state.subscriptions.list(ctx)

    async def get(ctx: Ctx) -> Resp:
        return await ctx.state.subscriptions.get(ctx)

    async def renew(ctx: Ctx) -> Resp:
        return await ctx.state.subscriptions.renew(ctx)

    async def delete(ctx: Ctx) -> Resp:
        return await ctx.state.subscriptions.delete(ctx)

    async def reauthorize(ctx: Ctx) -> Resp:
        return await ctx.state.subscriptions.reauthorize(ctx)

    router.add("POST", "subscriptions", create)
    router.add("GET", "subscriptions", list_)
    router.add("GET", "subscriptions/{sub}", get)
    router.add("PATCH", "subscriptions/{sub}", renew)
    router.add("DELETE", "subscriptions/{sub}", delete)
    router.add("POST", "subscriptions/{sub}/reauthorize", reauthorize)
