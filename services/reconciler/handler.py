"""The reconciler's partition handler: decode, adapt, decide (pure core), persist.

Per owned partition it keeps the TenantStates of the partition's tenants in memory, backed
by the local StateStore whose every change goes to exsf.state in the batch's transaction.
Decisions use the input's Kafka timestamp as "now", so replaying the same inputs yields the
same decisions and the same command ids - which is what makes recovery by replay safe.

Inputs adapted before the core sees them:
- an Exchange resync marker (the end of a full round after an invalid delta token) becomes
  a delete for every linked item of that mailbox and stream the round did not see.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import replace
from datetime import UTC, datetime

import orjson
import structlog

from services.core.bus.base import Bus, Message
from services.core.envelopes import (
    ChangeEvent,
    Command,
    CommandResult,
    EnvelopeError,
    Origin,
    decode_change_event,
    decode_command_result,
    encode,
)
from services.core.metrics import COMMANDS
from services.core.processor import Output, PoisonMessage
from services.core.records import not_stored_by_salesforce
from services.core.state_store import StateStore
from services.core.tenant_registry import TenantRegistry
from services.core.tenants import Tenant
from services.core.topics import Topics, tenant_key
from services.reconciler.core import Decision, LinkRecord, Record, TenantState, reconcile, record_from_dict, sweep

log = structlog.get_logger(__name__)

SERVICE = "reconciler"


def iso_ms(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class TenantCache:
    """Tenant configs from exsf.tenants, reloaded when an unknown tenant shows up (at most
    every `reload_s`, so a poison stream of bogus tenant ids cannot hammer the bus)."""

    def __init__(self, bus: Bus, topic: str, reload_s: float = 5.0) -> None:
        self.registry = TenantRegistry(bus, topic)
        self.tenants: dict[str, Tenant] = {}
        self.reload_s = reload_s
        self._loaded_at = 0.0

    async def get(self, tenant_id: str) -> Tenant | None:
        t = self.tenants.get(tenant_id)
        if t is None and time.monotonic() - self._loaded_at >= self.reload_s:
            self.tenants = await self.registry.load()
            self._loaded_at = time.monotonic()
            t = self.tenants.get(tenant_id)
        return t


class ReconcilerHandler:
    def __init__(self, bus: Bus, topics: Topics, store: StateStore, tenants: TenantCache) -> None:
        self.bus = bus
        self.topics = topics
        self.store = store
        self.tenants = tenants
        self.states: dict[int, dict[str, TenantState]] = {}
        self.decisions = 0
        self._swept: dict[str, float] = {}

    # --- partition lifecycle ---------------------------------------------------------
    async def assigned(self, partition: int) -> None:
        n = await self.store.restore(self.bus, self.topics.state, partition)
        self.states[partition] = self._load(partition)
        log.info("reconciler.partition_ready", partition=partition, links=n)

    async def revoked(self, partition: int) -> None:
        self.states.pop(partition, None)
        self.store.drop(partition)

    async def committed(self, partition: int) -> None:
        self.store.commit(partition)

    async def aborted(self, partition: int) -> None:
        # In-memory states ran ahead of the failed transaction: rebuild from the store.
        self.store.abort(partition)
        self.states[partition] = self._load(partition)

    def _load(self, partition: int) -> dict[str, TenantState]:
        by_tenant: dict[str, list[Record]] = defaultdict(list)
        for _key, value in self.store.items(partition):
            rec = record_from_dict(orjson.loads(value))
            by_tenant[rec.tenant_id].append(rec)
        return {t: TenantState(t, recs) for t, recs in by_tenant.items()}

    def state(self, partition: int, tenant_id: str) -> TenantState:
        per = self.states.setdefault(partition, {})
        st = per.get(tenant_id)
        if st is None:
            st = per[tenant_id] = TenantState(tenant_id)
        return st

    # --- one input ---------------------------------------------------------------------
    async def handle(self, partition: int, message: Message) -> list[Output]:
        item = self._decode(message)
        tenant = await self.tenants.get(item.tenant_id)
        if tenant is None:
            raise PoisonMessage(f"unknown tenant {item.tenant_id!r}")
        state = self.state(partition, tenant.tenant_id)
        now = iso_ms(message.timestamp_ms)
        decisions: list[Decision] = []
        before: dict[str, Record | None] = {}
        try:
            for inp in self._adapt(state, item):
                decision = reconcile(state, tenant, inp, now)
                for rec in decision.changes:
                    before.setdefault(rec.link_id, state.links.get(rec.link_id) or state.copies.get(rec.link_id))
                decision.apply_to(state)
                decisions.append(decision)
        except Exception:
            # This input becomes a dead letter: its half-applied changes must not stay in
            # memory, or later inputs would be decided against state that was never persisted.
            self._revert(partition, tenant.tenant_id, before)
            raise
        self.decisions += len(decisions)
        return [o for d in decisions for o in self._outputs(partition, d)]

    def _revert(self, partition: int, tenant_id: str, before: dict[str, Record | None]) -> None:
        if not before:
            return
        state = self.state(partition, tenant_id)
        records = [r for r in state.records() if r.link_id not in before]
        records += [r for r in before.values() if r is not None]
        self.states[partition][tenant_id] = TenantState(tenant_id, records)

    async def tick(self, partition: int) -> list[Output]:
        """Safety sweep per tenant on its `safety_sweep_seconds`: re-plans links whose writes
        failed or whose creates never landed (e.g. a dead-lettered command)."""
        out: list[Output] = []
        now_s = time.time()
        for tenant_id, state in list(self.states.get(partition, {}).items()):
            tenant = await self.tenants.get(tenant_id)
            if tenant is None:
                continue
            last = self._swept.get(tenant_id)
            if last is None:
                self._swept[tenant_id] = now_s  # first sweep one full interval after start
                continue
            if now_s - last < tenant.safety_sweep_seconds:
                continue
            self._swept[tenant_id] = now_s
            decision = sweep(state, tenant, iso_ms(int(now_s * 1000)))
            decision.apply_to(state)
            out.extend(self._outputs(partition, decision))
            if decision.commands or decision.removed:
                log.info(
                    "reconciler.sweep",
                    tenant_id=tenant_id,
                    commands=len(decision.commands),
                    tombstones_trimmed=len(decision.removed),
                )
        return out

    def _decode(self, message: Message) -> ChangeEvent | CommandResult:
        try:
            if message.topic == self.topics.results:
                return decode_command_result(message.value or b"")
            return decode_change_event(message.value or b"")
        except EnvelopeError as exc:
            raise PoisonMessage(str(exc)) from None

    def _adapt(self, state: TenantState, item: ChangeEvent | CommandResult) -> list[ChangeEvent | CommandResult]:
        if isinstance(item, CommandResult):
            return [item]
        if item.source == "exchange" and item.origin.resync_complete:
            seen = set(item.origin.seen_ids)
            gone = []
            for link in state.links.values():
                ex = link.exchange
                if (
                    link.entity == item.entity
                    and link.user.lower() == item.user.lower()
                    and ex.alive
                    and ex.id is not None
                    and ex.id not in seen
                ):
                    gone.append(
                        ChangeEvent(
                            tenant_id=item.tenant_id,
                            user=link.user,
                            source="exchange",
                            entity=item.entity,
                            source_id=ex.id,
                            op="delete",
                            version=f"resync-gone@{item.version}",
                            observed_at=item.observed_at,
                            modified_at=item.observed_at,
                            origin=Origin(resync=True),
                        )
                    )
            return list(gone)
        if item.source == "salesforce" and item.op == "upsert" and item.record is not None:
            return [self._fill_unstored(state, item)]
        return [item]

    @staticmethod
    def _fill_unstored(state: TenantState, ev: ChangeEvent) -> ChangeEvent:
        """Salesforce cannot hold some canonical fields (an Event's time zone): their absence
        in a Salesforce record means "unknown", not "cleared", so they keep the value the
        link already agreed on instead of being merged away."""
        missing = [f for f in not_stored_by_salesforce(ev.entity) if f not in (ev.record or {})]
        if not missing:
            return ev
        for lid in state.lookup("salesforce", ev.source_id):
            link = state.links.get(lid)
            if link is None:
                continue
            known = {f: link.desired[f] for f in missing if link.desired.get(f) is not None}
            if known:
                return replace(ev, record={**(ev.record or {}), **known})
        return ev

    def _outputs(self, partition: int, decision: Decision) -> list[Output]:
        out: list[Output] = []
        links = {r.link_id: r for r in decision.changes if isinstance(r, LinkRecord)}
        for key, record in decision.changelog():
            value = orjson.dumps(record) if record is not None else None
            self.store.stage(partition, key.encode(), value)
            out.append(Output(self.topics.state, value, key.encode(), partition))
        for cmd in decision.commands:
            cmd = self._enrich(cmd, links.get(cmd.link_id))
            out.append(Output(self.topics.commands_for(cmd.target), encode(cmd), tenant_key(cmd.tenant_id)))
            COMMANDS.labels(SERVICE, cmd.target, cmd.action, "emitted").inc()
        for a in decision.audit:
            out.append(Output(self.topics.audit, orjson.dumps(a, default=str), tenant_key(str(a.get("tenant_id")))))
        return out

    @staticmethod
    def _enrich(cmd: Command, link: LinkRecord | None) -> Command:
        """What the writer needs beyond the core's patch: the full merged record (Graph
        writes whole address objects) and the time the target was last seen modified
        (Salesforce's If-Unmodified-Since)."""
        if link is None or cmd.action != "update":
            return cmd
        ctx = cmd.context
        if ctx.record is None:
            ctx = replace(ctx, record=dict(link.desired))
        side = link.side(cmd.target)
        if cmd.target == "salesforce" and side.modified_at and ctx.expected_modified_at is None:
            ctx = replace(ctx, expected_modified_at=side.modified_at)
        return replace(cmd, context=ctx)
