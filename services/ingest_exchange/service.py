"""services/ingest_exchange: Graph delta streams -> exsf.changes.exchange.

Per owned tenant: prepare every enrolled mailbox (folders, To Do list, category; idempotent),
then run one StreamWorker per mailbox and tracked collection. Change notifications poke the
worker; polling every `tenant.poll_seconds` is the fallback.

Environment: EXSF_WEBHOOK_PORT (default 8080) for the receiver; EXSF_WEBHOOK_PUBLIC_URL, the
https base URL Graph can reach (without it, subscriptions are not created and the service
polls); EXSF_CALENDAR_PAST_DAYS / EXSF_CALENDAR_FUTURE_DAYS, the calendar window;
EXSF_GRAPH_PAGE_SIZE, items per delta page (default 50).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from datetime import UTC, datetime, timedelta

import structlog
from aiohttp import web

from services.connectors.exchange.client import ExchangeClient
from services.connectors.exchange.models import DeltaStream
from services.core.bus.base import Bus
from services.core.secrets import resolve_secret
from services.core.sideserver import Health
from services.core.tenant_shards import ShardedIngestor, ShardPublisher, TenantRunner
from services.core.tenants import Tenant
from services.core.topics import Topics, cursor_key
from services.ingest_exchange.stream import Cursor, StreamWorker
from services.ingest_exchange.subscription_log import NotificationInbox, SubscriptionLog, forward_to_owner
from services.ingest_exchange.subscription_table import SubscriptionRecord, directory_tenant_of
from services.ingest_exchange.webhook import GraphSubscriptions, Subscription, WebhookReceiver

log = structlog.get_logger(__name__)

SERVICE = "ingest-exchange"


def calendar_window(now: datetime, past_days: int, future_days: int) -> tuple[datetime, datetime]:
    """A window aligned to whole days, so its delta token (which encodes the window) stays
    valid all day and the stream key changes only once a day."""
    day = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return day - timedelta(days=past_days), day + timedelta(days=future_days)


class ExchangeTenant(TenantRunner):
    def __init__(
        self,
        tenant: Tenant,
        publisher: ShardPublisher,
        topics: Topics,
        receiver: WebhookReceiver,
        public_url: str | None,
        *,
        client: ExchangeClient | None = None,
        sublog: SubscriptionLog | None = None,
    ) -> None:
        self.sublog = sublog
        self.tenant = tenant
        self.publisher = publisher
        self.topics = topics
        self.receiver = receiver
        self.public_url = public_url
        self.client = client or ExchangeClient(
            tenant.graph,
            resolve_secret(tenant.graph.client_secret_ref),
            page_size=int(os.environ.get("EXSF_GRAPH_PAGE_SIZE", "50")),
        )
        self.workers: list[StreamWorker] = []
        self.subscriptions: list[Subscription] = []
        # Every stream of the tenant adopts at start: one Graph listing serves them all.
        self.graph_subscriptions = GraphSubscriptions(self.client)
        self._tasks: list[asyncio.Task[None]] = []
        self.prepared: dict[str, object] = {}

    async def start(self) -> None:
        cursors = await self.publisher.cursors()
        for user in self.tenant.users:
            self._tasks.append(asyncio.create_task(self._run_user(user.mailbox, cursors)))

    def streams_for(
        self, contact_folder: str, todo_list: str, mail_folder: str, default_todo_list: str | None = None
    ) -> list[DeltaStream]:
        ents = set(self.tenant.entities)
        out: list[DeltaStream] = []
        if "contact" in ents:
            out.append(DeltaStream.contacts(contact_folder))
            out.append(DeltaStream.contacts(None))  # the default folder: contacts tagged "Salesforce"
        if "event" in ents:
            start, end = calendar_window(
                datetime.now(UTC),
                int(os.environ.get("EXSF_CALENDAR_PAST_DAYS", "30")),
                int(os.environ.get("EXSF_CALENDAR_FUTURE_DAYS", "365")),
            )
            out.append(DeltaStream.events(start, end))
        if "task" in ents:
            out.append(DeltaStream.tasks(todo_list))
            if default_todo_list:  # tasks tagged "Salesforce" in the default list
                out.append(DeltaStream.tasks(default_todo_list, category_filter=True))
        if "email" in ents:
            out.append(DeltaStream.messages(mail_folder))
        return out

    async def _run_user(self, mailbox: str, cursors: dict[bytes, bytes]) -> None:
        delay = 1.0
        while True:  # enrolment must succeed before streaming; retry with backoff
            try:
                prepared = await self.client.ensure_mailbox(mailbox)
                default_list = await self.client.default_todo_list(mailbox) if "task" in self.tenant.entities else None
                break
            except Exception as exc:
                log.error(
                    "mailbox.prepare_failed",
                    tenant_id=self.tenant.tenant_id,
                    user=mailbox,
                    error=f"{type(exc).__name__}: {exc}",
                    retry_in_s=delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 300)
        self.prepared[mailbox] = prepared
        log.info("mailbox.prepared", tenant_id=self.tenant.tenant_id, user=mailbox)
        runs = []
        streams = self.streams_for(
            prepared.contact_folder_id, prepared.todo_list_id, prepared.mail_folder_id, default_list
        )
        for stream in streams:
            key = cursor_key(self.tenant.tenant_id, mailbox, stream.key)
            w = StreamWorker(
                tenant_id=self.tenant.tenant_id,
                mailbox=mailbox,
                stream=stream,
                client=self.client,
                publisher=self.publisher,
                topics=self.topics,
                cursor=Cursor.decode(cursors.get(key)),
                poll_seconds=self.tenant.poll_seconds,
            )
            self.workers.append(w)
            if self.public_url:
                sub = Subscription(
                    self.client,
                    self.receiver,
                    self.public_url,
                    mailbox,
                    stream,
                    w.poke.set,
                    sublog=self.sublog,
                    tenant_id=self.tenant.tenant_id,
                    directory_tenant=directory_tenant_of(self.tenant.graph.azure_tenant_id),
                    shard=self.publisher.partition,
                    graph_subscriptions=self.graph_subscriptions,
                )
                self.subscriptions.append(sub)
                await sub.start()
            runs.append(w.run())
        mine = [w for w in self.workers if w.mailbox == mailbox]
        for w in mine:
            w.siblings = [x.stream for x in mine if x is not w]
        await asyncio.gather(*runs)

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        for s in self.subscriptions:
            await s.stop()
        await self.client.close()


class ExchangeIngestService(ShardedIngestor[ExchangeTenant]):
    service = SERVICE

    def __init__(
        self,
        bus: Bus,
        topics: Topics,
        health: Health,
        *,
        webhook_host: str = "0.0.0.0",
        webhook_port: int = 8080,
        public_url: str | None = None,
    ) -> None:
        super().__init__(bus, topics)
        self.health = health
        self.webhook_host = webhook_host
        self.webhook_port = webhook_port
        self.public_url = public_url
        # Webhooks across pods (README "Webhooks"): every pod follows the subscription table
        # and forwards notifications for other pods' subscriptions to their shard.
        self.sublog = SubscriptionLog(bus, topics.subscriptions) if public_url else None
        self._forwarder = bus.producer() if public_url else None
        self.receiver = WebhookReceiver(self.sublog.table if self.sublog else None, self._forward)
        self.inbox: NotificationInbox | None = None

    async def _forward(self, rec: SubscriptionRecord, what: str) -> None:
        assert self._forwarder is not None
        await forward_to_owner(self._forwarder, self.topics.notifications, rec, what)

    def make_runner(self, tenant: Tenant, publisher: ShardPublisher) -> ExchangeTenant:
        return ExchangeTenant(tenant, publisher, self.topics, self.receiver, self.public_url, sublog=self.sublog)

    async def run(self) -> None:
        runner = web.AppRunner(self.receiver.app(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.webhook_host, self.webhook_port)
        await site.start()
        log.info("webhook.listening", port=self.webhook_port, public_url=self.public_url or "(polling only)")
        try:
            if self.sublog is not None and self._forwarder is not None:
                await self.sublog.start()
                await self._forwarder.start()
                # Every pod reads every partition: cheap (one small record per notification)
                # and needs no hook into shard assignment; `deliver` ignores other pods' ids.
                n = await self.bus.partitions_for(self.topics.notifications)
                self.inbox = NotificationInbox(self.bus, self.topics.notifications, range(n), self.receiver.deliver)
                await self.inbox.start()
            await super().run()
        finally:
            await runner.cleanup()
            if self.inbox is not None:
                await self.inbox.stop()
            if self.sublog is not None:
                await self.sublog.stop()
            if self._forwarder is not None:
                await self._forwarder.stop()


async def create(bus: Bus, topics: Topics, health: Health) -> ExchangeIngestService:
    return ExchangeIngestService(
        bus,
        topics,
        health,
        webhook_port=int(os.environ.get("EXSF_WEBHOOK_PORT", "8080")),
        public_url=os.environ.get("EXSF_WEBHOOK_PUBLIC_URL") or None,
    )
