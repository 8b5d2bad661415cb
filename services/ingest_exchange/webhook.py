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
import os
import secrets
import signal
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog
from aiohttp import web

from services.connectors.exchange.client import ExchangeClient
from services.connectors.exchange.models import DeltaStream
from services.core.errors import TransientError
from services.core.metrics import ERRORS
from services.ingest_exchange.subscription_log import SubscriptionLog
from services.ingest_exchange.subscription_table import (
    SubscriptionRecord,
    SubscriptionTable,
    Verdict,
    check_notification,
)

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


# Test hook for the crash window between Graph's create and exsf's record (issue 11): when
# set to "1" the process SIGKILLs itself right after Graph answers the create. Inert unless
# set; nothing in deploy/ sets it.
CRASH_AFTER_CREATE_ENV = "EXSF_TEST_CRASH_AFTER_SUBSCRIPTION_CREATE"


def _crash_hook() -> None:
    if os.environ.get(CRASH_AFTER_CREATE_ENV) == "1":
        os.kill(os.getpid(), signal.SIGKILL)


def _same_resource(a: str, b: str) -> bool:
    # Graph echoes the resource as it was sent, but its paths are case-insensitive.
    return a.strip("/").lower() == b.strip("/").lower()


class GraphSubscriptions:
    """One GET /subscriptions shared by every stream of a tenant that adopts at about the same
    time: the list holds all of the app's subscriptions (paged), so one call per stream would
    make a pod's start quadratic in the number of streams. A listing younger than `ttl_s`
    is reused; concurrent callers wait for the same call."""

    def __init__(self, client: ExchangeClient, ttl_s: float = 30.0) -> None:
        self.client = client
        self.ttl_s = ttl_s
        self.calls = 0
        self._lock = asyncio.Lock()
        self._at = float("-inf")
        self._listed: list[dict[str, object]] = []

    async def listed(self) -> list[dict[str, object]]:
        async with self._lock:
            now = asyncio.get_running_loop().time()
            if now - self._at > self.ttl_s:
                self.calls += 1
                self._listed = list(await self.client.list_subscriptions())
                self._at = now
            return self._listed


@dataclass
class _Registration:
    client_state: str
    poke: Callable[[], None]
    lifecycle: Callable[[str], Coroutine[object, object, None]]
    directory_tenant: str = ""


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
        self.rejected_tenant = 0  # of `rejected`: right clientState, another directory tenant

    def register(
        self,
        subscription_id: str,
        client_state: str,
        poke: Callable[[], None],
        lifecycle: Callable[[str], Coroutine[object, object, None]],
        directory_tenant: str = "",
    ) -> None:
        self._subs[subscription_id] = _Registration(client_state, poke, lifecycle, directory_tenant)

    async def deliver(self, subscription_id: str, what: str) -> None:
        """A notification forwarded by another pod (already validated there)."""
        reg = self._subs.get(subscription_id)
        if reg is None:
            return  # not ours (every pod reads the inbox), or already replaced
        if what == "change":
            reg.poke()
        else:
            await reg.lifecycle(what)

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
        """This pod's subscription: its registration. Another pod's, genuine per the table:
        forwarded to its owner (None). Anything else: refused, logged once, counted."""
        sid = str(n.get("subscriptionId"))
        state = str(n.get("clientState") or "")
        tenant = n.get("tenantId")
        tenant_id = str(tenant) if tenant else None
        sub = self._subs.get(sid)
        verdict: Verdict
        if sub is not None:
            verdict = check_notification(sub.client_state, sub.directory_tenant, state, tenant_id)
            if verdict == "ok":
                self.accepted += 1
                return sub
        elif self.table is not None and self.forward is not None:
            verdict = self.table.check(sid, state, tenant_id)
            if verdict == "ok":
                self._forward_later(sid, str(n.get("lifecycleEvent") or "change"))
                return None
        else:
            verdict = "unknown subscription"
        self.rejected += 1
        if verdict == "tenant mismatch":
            self.rejected_tenant += 1
            ERRORS.labels("ingest-exchange", "webhook_tenant_mismatch").inc()
        else:
            ERRORS.labels("ingest-exchange", "webhook_rejected").inc()
        # The tenant Graph named is not a secret, and it is what an operator needs to see.
        log.warning("webhook.rejected", subscription_id=sid, reason=verdict, notified_tenant=tenant_id)
        return None

    def _forward_later(self, sid: str, what: str) -> None:
        assert self.table is not None
        rec = self.table.get(sid)
        assert rec is not None
        self.accepted += 1
        self.forwarded += 1
        task = asyncio.get_running_loop().create_task(self._forward(rec, what))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

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
        *,
        sublog: SubscriptionLog | None = None,
        tenant_id: str = "",
        directory_tenant: str = "",
        shard: int = 0,
        graph_subscriptions: GraphSubscriptions | None = None,
    ) -> None:
        self.graph_subscriptions = graph_subscriptions or GraphSubscriptions(client)
        self.sublog = sublog
        self.tenant_id = tenant_id
        self.directory_tenant = directory_tenant
        self.shard = shard
        self._record: SubscriptionRecord | None = None
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
            await self._forget()
            self.id = None

    async def _forget(self) -> None:
        if self.sublog is not None and self._record is not None:
            with contextlib.suppress(Exception):
                await self.sublog.remove(self._record)
        self._record = None

    def _make_record(self, sid: str, state: str, expiry: datetime, *, pending: bool = False) -> SubscriptionRecord:
        return SubscriptionRecord(
            sid,
            state,
            self.tenant_id,
            self.mailbox,
            self.stream.key,
            resource_for(self.mailbox, self.stream),
            expiry.strftime("%Y-%m-%dT%H:%M:%SZ"),
            self.shard,
            directory_tenant=self.directory_tenant,
            pending=pending,
        )

    async def _remember(self, sid: str, state: str, expiry: datetime) -> None:
        if self.sublog is None:
            return
        self._record = self._make_record(sid, state, expiry)
        await self.sublog.record(self._record)

    def _register(self, sid: str, state: str) -> None:
        self.receiver.register(sid, state, self.poke, self._on_lifecycle, self.directory_tenant)

    async def _adopt(self) -> None:
        """After a restart or a takeover: reuse the newest recorded subscription of this
        resource if Graph still renews it, delete every other one (on Graph and in the
        table), so a crash neither orphans nor doubles subscriptions."""
        if self.sublog is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.sublog.caught_up.wait(), 30)
        found = self.sublog.table.of_resource(self.tenant_id, self.mailbox, resource_for(self.mailbox, self.stream))
        keep = found[-1] if found else None
        if keep is not None:
            expiry = datetime.now(UTC) + LIFETIME
            try:
                await self.client.renew_subscription(keep.id, expiry)
                self.id = keep.id
                self._register(keep.id, keep.client_state)
                await self._remember(keep.id, keep.client_state, expiry)
                log.info("subscription.reused", user=self.mailbox, stream=self.stream.key, subscription_id=keep.id)
            except Exception as exc:
                log.info("subscription.not_reusable", subscription_id=keep.id, error=type(exc).__name__)
                keep = None
        for old in found:
            if keep is not None and old.id == keep.id:
                continue
            with contextlib.suppress(Exception):
                await self.client.delete_subscription(old.id)
            with contextlib.suppress(Exception):
                await self.sublog.remove(old)
            log.info("subscription.replaced", user=self.mailbox, stream=self.stream.key, subscription_id=old.id)
        await self._delete_unrecorded()

    async def _delete_unrecorded(self) -> None:
        """Graph subscriptions of this resource and notification URL that no record owns:
        a previous owner was killed between Graph's create and its record (its pending trace
        says so, but an unrecorded one is an orphan either way, so Graph's list decides).
        Only this deployment's URL is matched: another deployment sharing the app
        registration keeps its own. The stream has one owner (its shard's), so no other
        live pod is creating for it right now."""
        assert self.sublog is not None
        resource = resource_for(self.mailbox, self.stream)
        url = f"{self.public_url}/notifications"
        try:
            listed = await self.graph_subscriptions.listed()
        except Exception as exc:
            # Renewals stop on an orphan, so it expires within LIFETIME at worst.
            log.warning("subscription.list_failed", user=self.mailbox, stream=self.stream.key,
                        error=type(exc).__name__)
            return
        for s in listed:
            sid = str(s.get("id"))
            if sid == self.id or not _same_resource(str(s.get("resource") or ""), resource):
                continue
            if str(s.get("notificationUrl") or "") != url:
                continue
            owned = self.sublog.table.get(sid)
            if owned is not None and not owned.pending:
                continue
            with contextlib.suppress(Exception):
                await self.client.delete_subscription(sid)
                log.info("subscription.orphan_deleted", user=self.mailbox, stream=self.stream.key, subscription_id=sid)
        for trace in self.sublog.table.pending_of_resource(self.tenant_id, self.mailbox, resource):
            with contextlib.suppress(Exception):
                await self.sublog.remove(trace)

    async def _create(self) -> None:
        state = secrets.token_urlsafe(32)
        expiry = datetime.now(UTC) + LIFETIME
        trace: SubscriptionRecord | None = None
        if self.sublog is not None:
            # Before Graph: a crash after the create but before the record below must leave
            # a trace on the topic (see SubscriptionRecord.pending).
            trace = self._make_record(f"pending:{uuid.uuid4().hex}", state, expiry, pending=True)
            await self.sublog.record(trace)
        try:
            sub = await self.client.create_subscription(
                resource_for(self.mailbox, self.stream),
                f"{self.public_url}/notifications",
                expiration=expiry,
                client_state=state,
                lifecycle_url=f"{self.public_url}/lifecycle",
            )
        except TransientError:
            raise  # may have reached Graph (a timeout): the trace stays for the next adoption
        except Exception:
            # Refused by Graph (e.g. the validation handshake failed): nothing was created,
            # so the trace goes, or retries every minute would pile traces up.
            if self.sublog is not None and trace is not None:
                with contextlib.suppress(Exception):
                    await self.sublog.remove(trace)
            raise
        _crash_hook()
        self.id = str(sub["id"])
        self._register(self.id, state)
        await self._remember(self.id, state, expiry)
        if self.sublog is not None and trace is not None:
            await self.sublog.remove(trace)
        log.info("subscription.created", user=self.mailbox, stream=self.stream.key, subscription_id=self.id)

    async def _on_lifecycle(self, event: str) -> None:
        log.info("subscription.lifecycle", lifecycle_event=event, user=self.mailbox, stream=self.stream.key)
        if event == "subscriptionRemoved":
            if self.id:
                self.receiver.unregister(self.id)
            await self._forget()
            self.id = None
            await self._create_safely()
        elif event == "reauthorizationRequired" and self.id:
            with contextlib.suppress(Exception):
                expiry = datetime.now(UTC) + LIFETIME
                await self.client.renew_subscription(self.id, expiry)
                if self._record is not None:
                    await self._remember(self.id, self._record.client_state, expiry)
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
        await self._adopt()
        while True:
            if self.id is None:
                if not await self._create_safely():
                    await asyncio.sleep(60)
                    continue
            await asyncio.sleep(RENEW_AFTER.total_seconds())
            try:
                assert self.id is not None
                expiry = datetime.now(UTC) + LIFETIME
                await self.client.renew_subscription(self.id, expiry)
                if self._record is not None:
                    await self._remember(self.id, self._record.client_state, expiry)
            except Exception as exc:
                log.warning("subscription.renew_failed", subscription_id=self.id, error=f"{type(exc).__name__}")
                if self.id:
                    self.receiver.unregister(self.id)
                    with contextlib.suppress(Exception):
                        await self.client.delete_subscription(self.id)
                await self._forget()
                self.id = None
                self.poke()
