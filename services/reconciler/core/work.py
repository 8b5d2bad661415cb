"""The working set of one decision: a copy-on-write overlay over the tenant state that
collects changed link records, commands and audit records, plus the few helpers every
step uses (settling status and base, watermarks, retired ids)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any

from services.core.envelopes import (
    ChangeEvent,
    Command,
    CommandContext,
    CommandResult,
    Side,
    content_hash,
    stable_id,
)
from services.core.tenants import Tenant
from services.reconciler.core import merge
from services.reconciler.core.state import (
    SEEN_LIMIT,
    CopyRecord,
    LinkRecord,
    LinkStatus,
    Pending,
    Record,
    TenantState,
    copy_id,
    index_entries,
    migrate_v1,
)

Input = ChangeEvent | CommandResult


@dataclass(frozen=True, slots=True)
class Replan:
    """Follow-up input: plan a link another link's step changed."""

    link_id: str


Step = Input | Replan


@dataclass(frozen=True, slots=True)
class Decision:
    changes: tuple[Record, ...]  # persist each (key = record.key) and state.apply() them
    commands: list[Command] = field(default_factory=list)
    audit: list[dict[str, Any]] = field(default_factory=list)
    # Records to drop entirely (trimmed tombstones): a None value on exsf.state, then
    # state.forget() their link ids.
    removed: tuple[Record, ...] = ()

    def changelog(self) -> list[tuple[str, dict[str, Any] | None]]:
        """(key, value) pairs for exsf.state, orjson-ready; None deletes the key."""
        out: list[tuple[str, dict[str, Any] | None]] = [(r.key, r.to_dict()) for r in self.changes]
        return out + [(r.key, None) for r in self.removed]

    def apply_to(self, state: TenantState) -> None:
        state.apply(self.changes)
        state.forget(r.link_id for r in self.removed)


class Work:
    """A copy-on-write overlay over the tenant state for the duration of one input."""

    def __init__(self, state: TenantState, tenant: Tenant, now: str) -> None:
        self.state = state
        self.tenant = tenant
        self.now = now
        self.changed: dict[str, LinkRecord] = {}
        self.changed_copies: dict[str, CopyRecord] = {}
        self.commands: list[Command] = []
        self.audit: list[dict[str, Any]] = []
        self.removed: list[Record] = []
        # Links another link's step changed (fan-out, waiters, successors, re-pointing):
        # each is planned after the step, as a follow-up input, never from inside it.
        self.followups: deque[str] = deque()

    # --- reads --------------------------------------------------------------------
    def get(self, link_id: str) -> LinkRecord | None:
        if link_id in self.changed_copies:
            return None
        return self.changed.get(link_id) or self.state.get(link_id)

    def copy(self, cid: str) -> CopyRecord | None:
        if cid in self.changed:
            return None  # the person took it: a pair now
        return self.changed_copies.get(cid) or self.state.get_copy(cid)

    def copy_of(self, entity: str, s: Side, item_id: str) -> CopyRecord | None:
        return self.copy(copy_id(self.tenant.tenant_id, entity, s, item_id))

    def find(self, index: str, value: str) -> list[LinkRecord]:
        ids = set(self.state.lookup(index, value))
        ids.update(lid for lid, rec in self.changed.items() if value in index_entries(rec)[index])
        found = (self.get(lid) for lid in sorted(ids))
        return [r for r in found if r is not None and value in index_entries(r)[index]]

    # --- writes -------------------------------------------------------------------
    def save(self, link: LinkRecord) -> LinkRecord:
        link = settle(link)
        self.changed_copies.pop(link.link_id, None)
        self.changed[link.link_id] = replace(link, updated_at=self.now)
        return self.changed[link.link_id]

    def save_copy(self, copy: CopyRecord) -> CopyRecord:
        self.changed_copies[copy.link_id] = replace(copy, updated_at=self.now)
        return self.changed_copies[copy.link_id]

    def delete_copy(self, copy: CopyRecord) -> CopyRecord:
        """Send the delete of a copy (one command in flight, like any write)."""
        seq = copy.seq + 1
        item = copy.item
        assert item.id is not None
        cmd = self._emit(copy, copy.side, "delete", item.id, {}, item.version, seq, CommandContext())
        pending = Pending(cmd.command_id, "delete", {}, item.version)
        return replace(copy, item=replace(item, pending=pending, failed=None), seq=seq)

    def _emit(
        self,
        rec: Record,
        target: Side,
        action: Any,
        target_id: str | None,
        fields: dict[str, Any],
        expected_version: str | None,
        seq: int,
        context: CommandContext,
    ) -> Command:
        cmd = Command(
            tenant_id=rec.tenant_id,
            user=rec.user,
            target=target,
            entity=rec.entity,
            action=action,
            link_id=rec.link_id,
            target_id=target_id,
            fields=fields,
            expected_version=expected_version,
            context=context,
            # Our own id: envelopes' default hashes fields without None values, so two
            # patches clearing different fields would collide; seq makes a retry after a
            # failure a new command rather than one the writer already answered.
            command_id=stable_id(
                "cmd", rec.tenant_id, rec.link_id, target, action, target_id, expected_version, seq, fields
            ),
        )
        self.commands.append(cmd)
        return cmd

    def replan(self, link: LinkRecord) -> LinkRecord:
        """Save another link's new state and queue it to be planned once this step is done."""
        link = self.save(link)
        if link.link_id not in self.followups:
            self.followups.append(link.link_id)
        return link

    def record(self, kind: str, link: Record | None = None, **data: Any) -> None:
        rec: dict[str, Any] = {"kind": kind, "tenant_id": self.tenant.tenant_id, "at": self.now}
        if link is not None:
            rec.update(entity=link.entity, link_id=link.link_id, user=link.user)
        rec.update(data)
        self.audit.append(rec)

    def command(
        self,
        link: LinkRecord,
        target: Side,
        action: Any,
        target_id: str | None,
        fields: dict[str, Any],
        expected_version: str | None,
        context: CommandContext | None = None,
    ) -> LinkRecord:
        seq = link.seq + 1
        cmd = self._emit(link, target, action, target_id, fields, expected_version, seq, context or CommandContext())
        side = link.side(target)
        source = link.side("exchange" if target == "salesforce" else "salesforce")
        as_of = source.ours_at if source.holds_ours() else source.modified_at
        held = source.shadow or {}
        sourced = tuple(f for f, v in fields.items() if held.get(f) == v)
        pending = Pending(cmd.command_id, action, fields, expected_version, as_of, sourced)
        return replace(link.with_side(target, replace(side, pending=pending, failed=None)), seq=seq)

    def conflicts(self, link: LinkRecord, conflicts: list[merge.Conflict], policy: str | None = None) -> None:
        for c in conflicts:
            self.record(
                "conflict",
                link,
                field=c.field,
                exchange_value=c.exchange_value,
                salesforce_value=c.salesforce_value,
                winner=c.winner,
                losing_value=c.losing_value,
                policy=policy or self.tenant.conflict_policy,
            )

    def forget(self, link: Record) -> None:
        self.removed.append(link)

    def decision(self) -> Decision:
        records: dict[str, Record] = {**self.changed_copies, **self.changed}
        changes = tuple(records[k] for k in sorted(records))
        return Decision(changes, self.commands, self.audit, tuple(self.removed))


def settle(link: LinkRecord) -> LinkRecord:
    """Derive status and base: base moves only when both sides hold `desired` and nothing
    is in flight, so it always is a record both sides really agreed on."""
    ex, sf = link.exchange, link.salesforce
    if link.status != "unlinked" and link.reason is not None:
        link = replace(link, reason=None)
    if link.status == "unlinked" and link.reason is None:
        link = migrate_v1(link)  # every unlink names its reason; this only guards a record that does not
    if link.status not in ("unlinked", "deleted"):
        status: LinkStatus = "linked" if ex.alive and sf.alive else "pending"
        link = replace(link, status=status)
        if (
            status == "linked"
            and ex.pending is None
            and sf.pending is None
            and merge.same(ex.shadow, link.desired)
            and merge.same(sf.shadow, link.desired)
        ):
            link = replace(link, base=dict(link.desired), base_hash=content_hash(link.desired))
    return link


def add_retired(ids: tuple[str, ...], new: str | None) -> tuple[str, ...]:
    return ids if new is None or new in ids else (*ids, new)


def add_seen(seen: tuple[str, ...], event_id: str) -> tuple[str, ...]:
    """Remember an event id among the link's most recent ones."""
    return (*seen, event_id)[-SEEN_LIMIT:]


def event_time(ev: ChangeEvent) -> str:
    return ev.modified_at or ev.observed_at


def is_older(t: str | None, watermark: str | None) -> bool:
    return bool(t and watermark and merge.newer(watermark, t))


def later(t: str | None, watermark: str | None) -> str | None:
    """The watermark after seeing content of time `t`: it never moves back."""
    return t if t and not is_older(t, watermark) else watermark
