"""One Change Data Capture session per tenant, published exactly once.

Each batch of CDC messages becomes ChangeEvents, published together with the replay ids
it reached (and the last commit time) in one transaction. On restart the stream resumes
from those replay ids; the library's own re-handshakes resume from the last delivered id.

When the stream cannot be trusted - GAP_OVERFLOW, or a stored replay id that left the
retention window - the entity is caught up with SOQL by SystemModstamp. The new stream is
subscribed *before* the catch-up query runs, so nothing falls between the two; whatever
both report is the same content, which the reconciler drops as an echo.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import structlog

from services.connectors.mapping_errors import MappingError
from services.connectors.salesforce.auth import SalesforceAuth
from services.connectors.salesforce.catchup import catch_up, reread
from services.connectors.salesforce.rest import SalesforceRest
from services.connectors.salesforce.streaming import CdcMessage, CdcStream, entity_channel
from services.core.deadletter import deadletter_record
from services.core.envelopes import ChangeEvent, Entity, encode
from services.core.errors import CursorExpired
from services.core.metrics import DEADLETTERS, DROPPED, ERRORS, EVENTS_PUBLISHED
from services.core.processor import Output
from services.core.tenant_shards import ShardPublisher, TenantRunner
from services.core.tenants import Tenant
from services.core.topics import Topics, cursor_key, tenant_key
from services.ingest_salesforce import events as ev

log = structlog.get_logger(__name__)

SERVICE = "ingest-salesforce"
SOBJECT_OF: dict[str, str] = {"contact": "Contact", "event": "Event", "task": "Task"}
EPOCH = "1970-01-01T00:00:00.000Z"
# SystemModstamp and the CDC commit time of one change are close but not identical.
CATCH_UP_MARGIN = timedelta(minutes=5)


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class SfCursor:
    replay: dict[str, int] = field(default_factory=dict)
    since: str | None = None  # last commit time seen (UTC instant)
    loaded: bool = False  # the initial SOQL load is done
    catch_up: bool = False  # the replay ids were lost: catch up from `since` next session

    def encode(self) -> bytes:
        return orjson.dumps(self.__dict__)

    @classmethod
    def decode(cls, raw: bytes | None) -> SfCursor:
        if not raw:
            return cls()
        d = orjson.loads(raw)
        return cls(dict(d.get("replay") or {}), d.get("since"), bool(d.get("loaded")), bool(d.get("catch_up")))


def _ms_to_iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _minus_margin(iso: str) -> str:
    dt = datetime.fromisoformat(iso.replace("Z", "+00:00")) - CATCH_UP_MARGIN
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class SalesforceTenant(TenantRunner):
    def __init__(
        self,
        tenant: Tenant,
        publisher: ShardPublisher,
        topics: Topics,
        *,
        auth: SalesforceAuth | None = None,
        long_poll_timeout_s: float = 150.0,
        batch_size: int = 100,
    ) -> None:
        self.tenant = tenant
        self.publisher = publisher
        self.topics = topics
        self.auth = auth or SalesforceAuth.from_endpoint(tenant.salesforce)
        self.rest = SalesforceRest(self.auth)
        self.long_poll_timeout_s = long_poll_timeout_s
        self.batch_size = batch_size
        self.entities: list[Entity] = [e for e in ("contact", "event", "task") if e in tenant.entities]
        self.cursor = SfCursor()
        self.published = 0
        self.catch_ups = 0
        self.sessions = 0
        self._task: asyncio.Task[None] | None = None
        self._stream: CdcStream | None = None
        self._dead: list[Output] = []
        self._dead_ids: set[str] = set()

    @property
    def cursor_key(self) -> bytes:
        return cursor_key(self.tenant.tenant_id, "_org", "cdc")

    async def start(self) -> None:
        stored = await self.publisher.cursors()
        self.cursor = SfCursor.decode(stored.get(self.cursor_key))
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._stream is not None:
            await self._stream.close()
        await self.rest.close()
        await self.auth.close()

    async def _run(self) -> None:
        failures = 0
        while True:
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except CursorExpired as exc:
                log.warning("cdc.replay_expired", tenant_id=self.tenant.tenant_id, error=str(exc))
                self.cursor = SfCursor({}, self.cursor.since, self.cursor.loaded, catch_up=True)
                try:
                    await self.publisher.publish([], (self.cursor_key, self.cursor.encode()))
                except Exception as store_exc:
                    # Not fatal (the next session catches up from memory; a restart meets the
                    # expired id again), but it must not end this loop and with it the stream.
                    log.warning("cdc.cursor_store_failed", tenant_id=self.tenant.tenant_id,
                                error=f"{type(store_exc).__name__}: {store_exc}")
                continue
            except Exception as exc:
                failures += 1
                ERRORS.labels(SERVICE, type(exc).__name__).inc()
                delay = min(300.0, 2.0 ** min(failures, 8)) * (0.5 + random.random() / 2)
                log.error(
                    "cdc.session_failed",
                    tenant_id=self.tenant.tenant_id,
                    error=f"{type(exc).__name__}: {exc}",
                    retry_in_s=round(delay, 1),
                )
                await asyncio.sleep(delay)
            finally:
                if self._stream is not None:
                    await self._stream.close()
                    self._stream = None

    async def _session(self) -> None:
        channels = [entity_channel(SOBJECT_OF[e]) for e in self.entities]
        start = {ch: self.cursor.replay.get(ch, -1) for ch in channels}
        self._stream = CdcStream(
            self.auth, channels, start=start, auto_commit=False, connection_timeout_s=self.long_poll_timeout_s
        )
        await self._stream.open()  # subscribed: changes from here on are in the stream
        self.sessions += 1
        if not self.cursor.loaded or self.cursor.catch_up:
            since = EPOCH if not self.cursor.loaded or not self.cursor.since else _minus_margin(self.cursor.since)
            for entity in self.entities:
                await self._catch_up(entity, since)
            loaded = SfCursor(self.cursor.replay, self.cursor.since or now_iso(), loaded=True, catch_up=False)
            await self.publisher.publish([], (self.cursor_key, loaded.encode()))
            self.cursor = loaded  # as in _handle: the cursor moves only once it is committed
        else:
            # A channel that never delivered a message has no replay id and resumes at the
            # tip (-1: new events only), which skips whatever changed while no session was
            # subscribed (a crash, a failed transaction). Catch those entities up instead.
            since = _minus_margin(self.cursor.since) if self.cursor.since else EPOCH
            for entity in self.entities:
                if entity_channel(SOBJECT_OF[entity]) not in self.cursor.replay:
                    await self._catch_up(entity, since)
        async for batch in self._stream.batches(self.batch_size):
            await self._handle(batch)

    async def _catch_up(self, entity: Entity, since: str) -> None:
        self.catch_ups += 1
        owners = [u.salesforce_user_id for u in self.tenant.users]
        sobject = SOBJECT_OF[entity]
        observed = now_iso()
        chunk: list[ChangeEvent] = []
        async for rec in catch_up(
            self.rest, sobject, since, owners, ev.sobject_fields(entity, self.tenant.salesforce.external_id_field)
        ):
            if self._skip(entity, rec):
                continue
            e = self._convert(str(rec.get("Id")), rec, ev.from_caught_up, self.tenant, entity, rec, observed)
            if e is not None:
                chunk.append(e)
            if len(chunk) >= 500:
                await self._publish(chunk, None)
                chunk = []
        await self._publish(chunk, None)
        log.info("cdc.caught_up", tenant_id=self.tenant.tenant_id, entity=entity, since=since)

    async def _handle(self, batch: list[CdcMessage]) -> None:
        observed = now_iso()
        out: list[ChangeEvent] = []
        to_reread: dict[Entity, list[str]] = {}
        owner_changed: set[str] = set()
        overflow: set[Entity] = set()
        replay = dict(self.cursor.replay)
        since = self.cursor.since
        for msg in batch:
            replay[msg.channel] = max(replay.get(msg.channel, -1), msg.replay_id)
            if msg.commit_timestamp:
                ts = _ms_to_iso(msg.commit_timestamp)
                since = ts if since is None or ts > since else since
            entity = ev.ENTITY_OF_SOBJECT.get(msg.entity)
            if entity is None or entity not in self.entities:
                continue
            ct = msg.change_type
            if ct == "CREATE":
                for rid in msg.record_ids:
                    if self._skip(entity, msg.payload):
                        continue
                    e = self._convert(
                        rid, msg.payload, ev.from_create, self.tenant, entity, rid, msg.payload, msg.header, observed
                    )
                    if e is not None:
                        out.append(e)
                    elif rid not in self._dead_ids:
                        DROPPED.labels(SERVICE, "owner_not_enrolled").inc()
            elif ct in ("DELETE", "GAP_DELETE"):
                for rid in msg.record_ids:
                    out.append(
                        ev.delete(
                            self.tenant,
                            entity,
                            rid,
                            ev.UNKNOWN_USER,
                            f"deleted@{msg.commit_timestamp}",
                            observed,
                            msg.header,
                        )
                    )
            elif ct == "GAP_OVERFLOW":
                overflow.add(entity)
            else:  # UPDATE, UNDELETE, GAP_CREATE/UPDATE/UNDELETE: read the whole record
                to_reread.setdefault(entity, []).extend(msg.record_ids)
                if "OwnerId" in msg.changed_fields:
                    owner_changed.update(msg.record_ids)
        for entity, ids in to_reread.items():
            unique = list(dict.fromkeys(ids))
            for i in range(0, len(unique), 200):
                current = await reread(
                    self.rest,
                    SOBJECT_OF[entity],
                    unique[i : i + 200],
                    ev.sobject_fields(entity, self.tenant.salesforce.external_id_field),
                )
                for rid, rec in current.items():
                    out.extend(self._from_reread(entity, rid, rec, rid in owner_changed, observed))
        for entity in overflow:
            await self._catch_up(entity, _minus_margin(since or now_iso()))
        nxt = SfCursor(replay, since, self.cursor.loaded, self.cursor.catch_up)
        await self._publish(out, nxt)
        # Only once the batch and its replay ids are committed: if the transaction fails
        # (a broker restart, a fenced producer), the next session must resume from the
        # replay ids before this batch, or its changes would never be published.
        self.cursor = nxt

    @staticmethod
    def _skip(entity: Entity, record: dict[str, Any]) -> bool:
        reason = ev.not_synced(entity, record)
        if reason is not None:
            DROPPED.labels(SERVICE, reason).inc()
        return reason is not None

    def _from_reread(
        self, entity: Entity, rid: str, rec: dict[str, Any] | None, owner_changed: bool, observed: str
    ) -> list[ChangeEvent]:
        if rec is None:
            return [ev.delete(self.tenant, entity, rid, ev.UNKNOWN_USER, f"deleted@{observed}", observed)]
        if self._skip(entity, rec):
            return []
        e = self._convert(rid, rec, ev.from_record, self.tenant, entity, rec, observed)
        if e is not None:
            return [e]
        if rid in self._dead_ids:
            return []
        if owner_changed:
            return [ev.unlink(self.tenant, entity, rec, observed)]
        DROPPED.labels(SERVICE, "owner_not_enrolled").inc()
        return []

    def _convert(
        self, record_id: str, raw: dict[str, Any], make: Callable[..., ChangeEvent | None], *args: Any
    ) -> ChangeEvent | None:
        """One unmappable record must not stall the stream: it becomes a dead letter."""
        try:
            return make(*args)
        except (MappingError, KeyError, ValueError) as exc:
            rid = record_id
            self._dead_ids.add(rid)
            DEADLETTERS.labels(SERVICE, "unmappable").inc()
            log.error(
                "cdc.record_deadlettered",
                tenant_id=self.tenant.tenant_id,
                record_id=rid,
                error=f"{type(exc).__name__}: {exc}",
            )
            self._dead.append(
                Output(
                    self.topics.deadletter,
                    deadletter_record(SERVICE, exc, payload={"record": raw}, tenant_id=self.tenant.tenant_id),
                    tenant_key(self.tenant.tenant_id),
                )
            )
            return None

    async def _publish(self, events: list[ChangeEvent], cursor: SfCursor | None) -> None:
        if not events and cursor is None and not self._dead:
            return
        records = [Output(self.topics.changes_salesforce, encode(e), tenant_key(self.tenant.tenant_id)) for e in events]
        # Dead letters of unmappable records ride in the same transaction as the batch.
        records += self._dead
        self._dead = []
        self._dead_ids.clear()
        await self.publisher.publish(records, (self.cursor_key, cursor.encode()) if cursor else None)
        self.published += len(events)
        for e in events:
            EVENTS_PUBLISHED.labels(SERVICE, e.entity).inc()
        if events:
            log.info("cdc.published", tenant_id=self.tenant.tenant_id, events=len(events))
