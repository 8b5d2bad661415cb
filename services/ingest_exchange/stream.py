"""One delta stream of one mailbox: run delta rounds when poked (webhook) or when the poll
interval passes, and publish each page's events with the page's cursor in one transaction.

The cursor stored after a page is that page's nextLink (or the round's deltaLink), so a
crash between pages resumes at the next page: no page is skipped, none is published twice.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson
import structlog

from services.connectors.exchange.client import ExchangeClient
from services.connectors.exchange.mapping import is_series_instance
from services.connectors.exchange.models import DeltaPage, DeltaStream, ItemKind
from services.connectors.mapping_errors import MappingError
from services.core.deadletter import deadletter_record
from services.core.envelopes import ChangeEvent, encode
from services.core.errors import AuthError, CursorExpired, NotFoundError, TransientError
from services.core.metrics import API_CALLS, DEADLETTERS, DROPPED, ERRORS, EVENTS_PUBLISHED, THROTTLED
from services.core.processor import Output
from services.core.tenant_shards import ShardPublisher
from services.core.topics import Topics, cursor_key, tenant_key
from services.ingest_exchange import events as ev

log = structlog.get_logger(__name__)

ITEM_KIND: dict[str, ItemKind] = {"contacts": "contact", "events": "event", "tasks": "task", "messages": "message"}


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class Cursor:
    """What exsf.cursors holds per stream: the link to continue from, and, during a full
    round after a 410, the ids seen so far (so the round's end can tell what vanished)."""

    link: str | None
    resync_round: str | None = None
    seen: list[str] = field(default_factory=list)

    def encode(self) -> bytes:
        return orjson.dumps({"link": self.link, "resync_round": self.resync_round, "seen": self.seen})

    @classmethod
    def decode(cls, raw: bytes | None) -> Cursor:
        if not raw:
            return cls(None)
        d = orjson.loads(raw)
        return cls(d.get("link"), d.get("resync_round"), list(d.get("seen") or []))


class StreamWorker:
    def __init__(
        self,
        *,
        tenant_id: str,
        mailbox: str,
        stream: DeltaStream,
        client: ExchangeClient,
        publisher: ShardPublisher,
        topics: Topics,
        cursor: Cursor,
        poll_seconds: float,
        max_backoff_s: float = 300.0,
    ) -> None:
        self.tenant_id = tenant_id
        self.mailbox = mailbox
        self.stream = stream
        self.client = client
        self.publisher = publisher
        self.topics = topics
        self.cursor = cursor
        self.poll_seconds = poll_seconds
        self.max_backoff_s = max_backoff_s
        self.poke = asyncio.Event()
        # The other streams of the same mailbox, to tell a move between synced places
        # from a move out of the sync.
        self.siblings: list[DeltaStream] = []
        self.rounds = 0
        self._failures = 0

    @property
    def cursor_key(self) -> bytes:
        return cursor_key(self.tenant_id, self.mailbox, self.stream.key)

    async def run(self) -> None:
        self.poke.set()  # a first round at start: catch up on whatever happened while down
        while True:
            try:
                await asyncio.wait_for(self.poke.wait(), self.poll_seconds)
            except TimeoutError:
                pass
            self.poke.clear()
            delay = await self._round_safely()
            if delay:
                await asyncio.sleep(delay)

    async def _round_safely(self) -> float:
        """Run one round; return how long to wait before the next try (0 after success)."""
        log_ctx = {"tenant_id": self.tenant_id, "user": self.mailbox, "stream": self.stream.key}
        try:
            await self.run_round()
            self._failures = 0
            return 0.0
        except TransientError as exc:
            THROTTLED.labels("graph").inc()
            self._failures += 1
            wait = exc.retry_after or self._backoff()
            log.warning("delta.throttled", retry_after_s=round(wait, 2), error=str(exc), **log_ctx)
            self.poke.set()
            return wait
        except AuthError as exc:
            ERRORS.labels("ingest-exchange", "auth").inc()
            self._failures += 1
            log.error("delta.auth_failed", error=str(exc), **log_ctx)
            return self._backoff()
        except Exception as exc:
            ERRORS.labels("ingest-exchange", type(exc).__name__).inc()
            self._failures += 1
            log.error("delta.failed", error=f"{type(exc).__name__}: {exc}", **log_ctx)
            self.poke.set()
            return self._backoff()

    def _backoff(self) -> float:
        base = min(self.max_backoff_s, 2.0 ** min(self._failures, 10))
        return base * (0.5 + random.random() / 2)

    async def run_round(self) -> None:
        """Pages until the deltaLink. A 410 restarts from scratch as a resync round."""
        while True:
            try:
                page = await self.client.delta_page(self.mailbox, self.stream, self.cursor.link)
            except CursorExpired:
                log.warning("delta.token_expired", tenant_id=self.tenant_id, user=self.mailbox, stream=self.stream.key)
                self.cursor = Cursor(None, resync_round=uuid.uuid4().hex)
                continue
            API_CALLS.labels("graph", "delta", "ok").inc()
            await self._publish(page)
            if page.delta_link is not None:
                self.rounds += 1
                return

    async def _publish(self, page: DeltaPage) -> None:
        observed = now_iso()
        out: list[ChangeEvent] = []
        dead: list[Output] = []
        for item in page.items:
            if self.stream.kind == "events" and is_series_instance(item):
                # calendarView delta lists each occurrence next to its seriesMaster: the
                # series syncs as one item through the master (which holds `recurrence`).
                DROPPED.labels("ingest-exchange", "series_instance").inc()
                continue
            try:
                out.append(ev.upsert_event(self.tenant_id, self.mailbox, self.stream, item, observed))
            except (MappingError, KeyError, ValueError) as exc:
                # One unmappable item must not stall the stream: it is kept as a dead letter
                # (in the same transaction as the page) and the round goes on.
                dead.append(self._dead_letter(item, exc))
        for item_id in page.removed:
            e = await self._classify_removed(item_id, observed)
            if e is not None:
                out.append(e)
        nxt = Cursor(
            page.cursor,
            self.cursor.resync_round,
            self.cursor.seen + [str(i["id"]) for i in page.items] if self.cursor.resync_round else [],
        )
        if self.cursor.resync_round and page.delta_link is not None:
            out.append(
                ev.resync_marker(
                    self.tenant_id, self.mailbox, self.stream, nxt.seen, self.cursor.resync_round, observed
                )
            )
            nxt = Cursor(page.delta_link)
        records = [Output(self.topics.changes_exchange, encode(e), tenant_key(self.tenant_id)) for e in out] + dead
        await self.publisher.publish(records, (self.cursor_key, nxt.encode()))
        self.cursor = nxt
        if out:
            EVENTS_PUBLISHED.labels("ingest-exchange", ev.entity_of(self.stream)).inc(len(out))
            log.info(
                "delta.page_published",
                tenant_id=self.tenant_id,
                user=self.mailbox,
                stream=self.stream.key,
                events=len(out),
                final=page.delta_link is not None,
            )

    def _dead_letter(self, item: dict[str, object], exc: Exception) -> Output:
        DEADLETTERS.labels("ingest-exchange", "unmappable").inc()
        log.error(
            "delta.item_deadlettered",
            tenant_id=self.tenant_id,
            user=self.mailbox,
            stream=self.stream.key,
            item_id=str(item.get("id")),
            error=f"{type(exc).__name__}: {exc}",
        )
        rec = deadletter_record(
            "ingest-exchange", exc, payload={"stream": self.stream.key, "item": item}, tenant_id=self.tenant_id
        )
        return Output(self.topics.deadletter, rec, tenant_key(self.tenant_id))

    async def _classify_removed(self, item_id: str, observed: str) -> ChangeEvent | None:
        """Delta says @removed both for deletes and for moves out of the folder; only a
        read tells them apart. Emails never delete anything on the Salesforce side."""
        if self.stream.kind == "messages":
            return None
        kind = ITEM_KIND[self.stream.kind]
        try:
            item = await self.client.get_item(self.mailbox, kind, item_id, container_id=self.stream.container_id)
        except NotFoundError:
            return ev.delete_event(self.tenant_id, self.mailbox, self.stream, item_id, observed)
        if self.stream.kind == "events" and ev.in_scope(self.stream, item):
            return None  # left the calendarView window, still a synced event: nothing to do
        if any(ev.synced_by(s, item) for s in self.siblings):
            return None  # moved to another synced place (e.g. a tagged contact into the folder)
        return ev.unlink_event(self.tenant_id, self.mailbox, self.stream, item_id, ev.version_of_item(item), observed)
