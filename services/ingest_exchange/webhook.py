"""Graph change-notification receiver and the subscriptions that feed it.

A notification only says "something changed in this collection"; the stream's delta round
fetches what. So the receiver answers 202 at once (Graph wants an answer within 3 s) and
pokes the stream. A notification whose subscription is unknown or whose clientState does
not match is rejected and logged: it was not sent by Graph for us.

Across pods: a notification for a subscription this pod did not create is checked against
the SubscriptionTable (followed from exsf.subscriptions) and handed to `forward`, which
sends it through exsf.notifications to the shard that owns the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog
from aiohttp import web

from services.connectors.exchange.client import ExchangeClient
from services.connectors.exchange.models import DeltaStream
from services.core.metrics import ERRORS
from services.ingest_exchange.subscription_table import SubscriptionRecord, SubscriptionTable

log = structlog.get_logger(__name__)

# Outlook resources allow 10,080 minutes; renewing a 2-day subscription daily leaves room
# for an instance to be down a day without losing it.
LIFETIME = timedelta(days=2)
RENEW_AFTER = timedelta(days=1)


def resource_for(mailbox: str, stream: DeltaStream) -> str:
    if stream.kind == "contacts":
        if stream.container_id is None:
            return f"/users/{mailbox}/contacts"
        return f"/users/{mailbox}/contactFolders/{stream.container_id}/contacts"
    if stream.kind == "tasks":
        return f"/users/{mailbox}/todo/lists/{stream.container_id}/tasks"
    if stream.kind == "messages":
        return f"/users/{mailbox}/mailFolders/{stream.container_id}/messages"
    return f"/users/{mailbox}/events"


@dataclass
class _Registration:
    client_state: str
    poke: Callable[[], None]
    lifecycle: Callable[[str], Coroutine[object, object, None]]


# (record, what happened: "change" or the lifecycleEvent) -> sent to the owning shard.
Forward = Callable[[SubscriptionRecord, str], Awaitable[None]]


class WebhookReceiver:
    def __init__(self, table: SubscriptionTable | None = None, forward: Forward | None = None) -> None:
        self._subs: dict[str, _Registration] = {}
        self.table = table
        self.forward = forward
        self.forwarded = 0
        self._pending: set[asyncio.Task[None]] = set()
        self.accepted = 0
        self.rejected = 0

    def register(
        self,
        subscription_id: str,
        client_state: str,
        poke: Callable[[], None],
        lifecycle: Callable[[str], Coroutine[object, object, None]],
    ) -> None:
        self._subs[subscription_id] = _Registration(client_state, poke, lifecycle)

    def unregister(self, subscription_id: str) -> None:
        self._subs.pop(subscription_id, None)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/notifications", self._notifications)
        app.router.add_post("/lifecycle", self._lifecycle)
        return app

    @staticmethod
    def _validation(request: web.Request) -> web.Response | None:
        token = request.query.get("validationToken")
        if token is None:
            return None
        # Graph checks that the body is exactly the (decoded) token, as text/plain.
        return web.Response(text=token, content_type="text/plain")

    def _check(self, n: dict[str, object]) -> _Registration | None:
        sid = str(n.get("subscriptionId"))
        sub = self._subs.get(sid)
        if sub is not None and secrets.compare_digest(
            str(n.get("clientState") or "").encode(), sub.client_state.encode()
        ):
            self.accepted += 1
            return sub
        reason = "unknown subscription" if sub is None else "clientState mismatch"
        if self._forwarded(n):
            return None
        self.rejected += 1
        ERRORS.labels("ingest-exchange", "webhook_rejected").inc()
        log.warning("webhook.rejected", subscription_id=sid, reason=reason)
        return None

    def _forwarded(self, n: dict[str, object]) -> bool:
        """Another pod's subscription, genuine per the table: forward it to its owner."""
        if self.table is None or self.forward is None:
            return False
        sid = str(n.get("subscriptionId"))
        if self.table.check(sid, str(n.get("clientState") or ""), None) != "ok":
            return False
        rec = self.table.get(sid)
        assert rec is not None
        self.accepted += 1
        self.forwarded += 1
        what = str(n.get("lifecycleEvent") or "change")
        task = asyncio.get_running_loop().create_task(self._forward(rec, what))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        return True

    async def _forward(self, rec: SubscriptionRecord, what: str) -> None:
        assert self.forward is not None
        try:
            await self.forward(rec, what)
        except Exception as exc:
            # The owner's poll round still finds the change; only latency suffers.
            ERRORS.labels("ingest-exchange", "webhook_forward_failed").inc()
            log.warning("webhook.forward_failed", subscription_id=rec.id, error=type(exc).__name__)

    async def _body(self, request: web.Request) -> list[dict[str, object]]:
        try:
            body = await request.json()
            values = body.get("value") if isinstance(body, dict) else None
            return [v for v in values if isinstance(v, dict)] if isinstance(values, list) else []
        except ValueError:
            return []

    async def _notifications(self, request: web.Request) -> web.Response:
        v = self._validation(request)
        if v is not None:
            return v
        items = await self._body(request)
        before = self.accepted
        ok = [s for s in (self._check(n) for n in items) if s is not None]
        for s in ok:
            s.poke()
        return web.Response(status=202 if self.accepted > before or not items else 403)

    async def _lifecycle(self, request: web.Request) -> web.Response:
        v = self._validation(request)
        if v is not None:
            return v
        items = await self._body(request)
        before = self.accepted
        for n in items:
            s = self._check(n)
            if s is None:
                continue
            # Handle after answering: recreating a subscription calls Graph, which would
            # validate against this very server.
            asyncio.get_running_loop().create_task(s.lifecycle(str(n.get("lifecycleEvent"))))
        return web.Response(status=202 if self.accepted > before or not items else 403)


class Subscription:
    """Keeps one Graph subscription alive for one stream, feeding `poke`."""

    def __init__(
        self,
        client: ExchangeClient,
        receiver: WebhookReceiver,
        public_url: str,
        mailbox: str,
        stream: DeltaStream,
        poke: Callable[[], None],
    ) -> None:
        self.client = client
        self.receiver = receiver
        self.public_url = public_url.rstrip("/")
        self.mailbox = mailbox
        self.stream = stream
        self.poke = poke
        self.id: str | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._keep_alive())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.id:
            self.receiver.unregister(self.id)
            with contextlib.suppress(Exception):
                await self.client.delete_subscription(self.id)
            self.id = None

    async def _create(self) -> None:
        state = secrets.token_urlsafe(32)
        sub = await self.client.create_subscription(
            resource_for(self.mailbox, self.stream),
            f"{self.public_url}/notifications",
            expiration=datetime.now(UTC) + LIFETIME,
            client_state=state,
            lifecycle_url=f"{self.public_url}/lifecycle",
        )
        self.id = str(sub["id"])
        self.receiver.register(self.id, state, self.poke, self._on_lifecycle)
        log.info("subscription.created", user=self.mailbox, stream=self.stream.key, subscription_id=self.id)

    async def _on_lifecycle(self, event: str) -> None:
        log.info("subscription.lifecycle", event=event, user=self.mailbox, stream=self.stream.key)
        if event == "subscriptionRemoved":
            if self.id:
                self.receiver.unregister(self.id)
            self.id = None
            await self._create_safely()
        elif event == "reauthorizationRequired" and self.id:
            with contextlib.suppress(Exception):
                await self.client.renew_subscription(self.id, datetime.now(UTC) + LIFETIME)
        # missed / removed / anything else: changes may have been lost, a delta round finds them.
        self.poke()

    async def _create_safely(self) -> bool:
        try:
            await self._create()
            return True
        except Exception as exc:
            # Polling keeps the stream correct meanwhile; only latency suffers.
            log.warning(
                "subscription.create_failed",
                user=self.mailbox,
                stream=self.stream.key,
                error=f"{type(exc).__name__}: {exc}",
            )
            return False

    async def _keep_alive(self) -> None:
        while True:
            if self.id is None:
                if not await self._create_safely():
                    await asyncio.sleep(60)
                    continue
            await asyncio.sleep(RENEW_AFTER.total_seconds())
            try:
                assert self.id is not None
                await self.client.renew_subscription(self.id, datetime.now(UTC) + LIFETIME)
            except Exception as exc:
                log.warning("subscription.renew_failed", subscription_id=self.id, error=f"{type(exc).__name__}")
                if self.id:
                    self.receiver.unregister(self.id)
                self.id = None
                self.poke()
