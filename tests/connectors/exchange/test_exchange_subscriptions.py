"""Change-notification subscriptions: handshake, delivery after an Outlook-side edit,
renewal, lifecycle notifications, deletion, and an unreachable receiver."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web

from services.connectors.exchange.client import ExchangeClient
from services.connectors.exchange.models import PreparedMailbox
from services.core.errors import PermanentError
from tests.support.waiting import eventually

MAILBOX = "alice@contoso.test"
Emu = Any


@dataclass
class Receiver:
    url: str
    validations: list[str] = field(default_factory=list)
    notifications: list[dict[str, Any]] = field(default_factory=list)
    lifecycle: list[dict[str, Any]] = field(default_factory=list)
    answer_wrong: bool = False


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver("")

    async def handle(request: web.Request) -> web.Response:
        token = request.query.get("validationToken")
        if token is not None:
            rec.validations.append(token)
            return web.Response(text="nope" if rec.answer_wrong else token, content_type="text/plain")
        body = await request.json()
        (rec.lifecycle if request.path.endswith("lifecycle") else rec.notifications).extend(body["value"])
        return web.Response(status=202)

    app = web.Application()
    app.router.add_post("/notify", handle)
    app.router.add_post("/lifecycle", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server: Any = site._server
    rec.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        yield rec
    finally:
        await runner.cleanup()


async def test_subscription_handshake_notifications_renew_lifecycle_delete(
    emu: Emu, client: ExchangeClient, prepared: PreparedMailbox, receiver: Receiver
) -> None:
    resource = f"/users/{MAILBOX}/contactFolders/{prepared.contact_folder_id}/contacts"
    expires = datetime.now(UTC) + timedelta(hours=1)
    sub = await client.create_subscription(resource, receiver.url + "/notify", expiration=expires,
                                           client_state="cs-123", lifecycle_url=receiver.url + "/lifecycle")
    assert sub["resource"] == resource and sub["clientState"] == "cs-123"
    assert len(receiver.validations) == 2  # notificationUrl and lifecycleNotificationUrl
    assert all(" " in t and ":" in t for t in receiver.validations)  # decoded, as Graph's tokens have both

    # The user adds a contact to the folder in Outlook.
    contact = await emu.admin.create_item(MAILBOX, "contact", {"givenName": "Nia"},
                                          container=prepared.contact_folder_id)

    async def delivered() -> bool:
        return len(receiver.notifications) >= 1

    await eventually(delivered, "the created notification")
    n = receiver.notifications[0]
    assert n["subscriptionId"] == sub["id"] and n["clientState"] == "cs-123"
    assert n["changeType"] == "created" and n["resourceData"]["id"] == contact["id"]
    assert n["tenantId"] == emu.state.config.tenant_id
    assert n["resourceData"]["@odata.etag"] == contact["@odata.etag"]

    # A contact elsewhere does not notify this subscription; an edit here does.
    await emu.admin.create_item(MAILBOX, "contact", {"givenName": "Other folder"})
    await emu.admin.update_item(MAILBOX, contact["id"], {"surname": "Ray"})

    async def updated() -> bool:
        return any(x["changeType"] == "updated" for x in receiver.notifications)

    await eventually(updated, "the updated notification")
    assert {x["resourceData"]["id"] for x in receiver.notifications} == {contact["id"]}

    renewed = await client.renew_subscription(sub["id"], datetime.now(UTC) + timedelta(days=6))
    assert renewed["expirationDateTime"] > sub["expirationDateTime"]
    with pytest.raises(PermanentError):
        await client.renew_subscription(sub["id"], datetime.now(UTC) + timedelta(days=8))  # over 10080 minutes

    await emu.admin.lifecycle(sub["id"], "reauthorizationRequired")

    async def lifecycle_seen() -> bool:
        return len(receiver.lifecycle) == 1

    await eventually(lifecycle_seen, "the lifecycle notification")
    assert receiver.lifecycle[0]["lifecycleEvent"] == "reauthorizationRequired"
    assert receiver.lifecycle[0]["subscriptionId"] == sub["id"]

    await client.delete_subscription(sub["id"])
    assert await emu.admin.subscriptions() == []
    before = len(await emu.admin.deliveries())
    await emu.admin.update_item(MAILBOX, contact["id"], {"surname": "Gone"})
    assert len(await emu.admin.deliveries()) == before


async def test_failed_handshake_rejects_subscription(
    emu: Emu, client: ExchangeClient, receiver: Receiver
) -> None:
    receiver.answer_wrong = True
    with pytest.raises(PermanentError) as exc:
        await client.create_subscription(f"/users/{MAILBOX}/events", receiver.url + "/notify",
                                         expiration=datetime.now(UTC) + timedelta(hours=1))
    assert exc.value.status == 400
    assert await emu.admin.subscriptions() == []


async def test_receiver_down_is_tolerated_and_drops_are_recorded(
    emu: Emu, client: ExchangeClient, prepared: PreparedMailbox, receiver: Receiver
) -> None:
    await client.create_subscription(f"/users/{MAILBOX}/todo/lists/{prepared.todo_list_id}/tasks",
                                     receiver.url + "/notify", expiration=datetime.now(UTC) + timedelta(hours=1),
                                     client_state="x")
    await emu.admin.faults(drop_notifications=1)
    await client.create_task(MAILBOX, prepared.todo_list_id, {"title": "dropped"}, "t-1")
    await client.create_task(MAILBOX, prepared.todo_list_id, {"title": "delivered"}, "t-2")

    async def one() -> bool:
        return len(receiver.notifications) == 1

    await eventually(one, "the second task's notification")
    deliveries = await emu.admin.deliveries()
    assert [d["error"] for d in deliveries] == ["dropped", None]

    # Receiver unreachable: the write still succeeds and the failure is recorded.
    dead = receiver.url.rsplit(":", 1)[0] + ":9"  # discard port, nothing listens
    emu.state.subscriptions.subs[next(iter(emu.state.subscriptions.subs))].notification_url = dead + "/notify"
    await client.create_task(MAILBOX, prepared.todo_list_id, {"title": "nobody home"}, "t-3")

    async def failed() -> bool:
        return any(d["error"] not in (None, "dropped") for d in await emu.admin.deliveries())

    await eventually(failed, "the failed delivery to be recorded")


async def test_subscription_limits_and_removal(
    emu: Emu, client: ExchangeClient, prepared: PreparedMailbox, receiver: Receiver
) -> None:
    resource = f"/users/{MAILBOX}/mailFolders('{prepared.mail_folder_id}')/messages"
    with pytest.raises(PermanentError) as too_long:
        await client.create_subscription(resource, receiver.url + "/notify",
                                         expiration=datetime.now(UTC) + timedelta(minutes=10_081))
    assert too_long.value.status == 400
    with pytest.raises(PermanentError):
        await client.create_subscription(f"/users/{MAILBOX}/drive/root", receiver.url + "/notify",
                                         expiration=datetime.now(UTC) + timedelta(hours=1))
    sub = await client.create_subscription(resource, receiver.url + "/notify",
                                           expiration=datetime.now(UTC) + timedelta(days=6, hours=23),
                                           lifecycle_url=receiver.url + "/lifecycle", change_types=("created",))
    msg = await emu.admin.create_item(MAILBOX, "message", {"subject": "filed"}, container=prepared.mail_folder_id)
    await emu.admin.update_item(MAILBOX, msg["id"], {"isRead": True})  # not subscribed to updates

    async def created() -> bool:
        return len(receiver.notifications) == 1

    await eventually(created, "the created notification")
    assert receiver.notifications[0]["resourceData"]["@odata.type"] == "#Microsoft.Graph.Message"

    await emu.admin.lifecycle(sub["id"], "subscriptionRemoved")

    async def removed() -> bool:
        return [x["lifecycleEvent"] for x in receiver.lifecycle] == ["subscriptionRemoved"]

    await eventually(removed, "the subscriptionRemoved lifecycle notification")
    assert await emu.admin.subscriptions() == []
    await client.delete_subscription(sub["id"])  # already gone: tolerated
    assert [d["kind"] for d in await emu.admin.deliveries()] == ["change", "lifecycle"]
