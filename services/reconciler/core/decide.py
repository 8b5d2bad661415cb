"""The reconcile function: one input (a ChangeEvent or a CommandResult) in, a Decision out.

Pure: no I/O, no clock (the caller passes `now`), no mutation of the given state. The
Decision lists the link records that changed (to persist and apply), the commands to send
and the audit records. Replaying the same inputs on the same state yields the same
Decision, command ids included.

How one link moves (see state.py for the words):
- an input from a side is *observed*: older or duplicate inputs are dropped by the per-side
  watermark and the recent event ids; the side's change (new content minus shadow) is
  absorbed into `desired` by the three-way merge;
- then the link is *planned*: every side whose shadow differs from `desired` gets an update
  (or a create when it has no item yet), one command in flight per side; deletes are
  decided only when nothing is in flight, so a delete never races our own write.

Decisions worth knowing (the convergence test in tests/unit/reconciler shows why):
- echoes are recognised by content (equal to the shadow/desired record), never by origin
  alone; origin tags (`exsf_link_id`) are used only to find the link of an item whose id
  we do not know yet (our create seen before its result);
- a Salesforce record may be linked to several mailbox items (one link per pair); a write
  to it is shown to the sibling links at once (fan-out). Deleting one mailbox's copy only
  unlinks that copy while other mailboxes still sync the record;
- dedupe waits: a new item whose key matches a create still in flight waits for it and
  then joins it. An original whose event arrives after we created a copy wins: links move
  to it and our copy is deleted through a `discard` record (edits made to the copy move
  over first);
- a `failed` write is not retried by itself (no hot loop): the next change of the link or
  `sweep` retries it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from services.core.envelopes import ChangeEvent, Command, CommandResult, Side, content_hash, stable_id
from services.core.tenants import Tenant
from services.reconciler.core import merge
from services.reconciler.core.dedupe import contact_key, match_keys
from services.reconciler.core.state import (
    SEEN_LIMIT,
    LinkRecord,
    LinkStatus,
    Pending,
    SideState,
    TenantState,
    index_entries,
    other,
)

Input = ChangeEvent | CommandResult
UNKNOWN_OWNER = "*"  # user of Salesforce events whose owner the ingestor cannot know


@dataclass(frozen=True, slots=True)
class Decision:
    changes: tuple[LinkRecord, ...]  # persist each (key = record.key) and state.apply() them
    commands: list[Command] = field(default_factory=list)
    audit: list[dict[str, Any]] = field(default_factory=list)

    def changelog(self) -> list[tuple[str, dict[str, Any]]]:
        """(key, value) pairs for exsf.state, orjson-ready."""
        return [(r.key, r.to_dict()) for r in self.changes]


class _Work:
    """A copy-on-write overlay over the tenant state for the duration of one input."""

    def __init__(self, state: TenantState, tenant: Tenant, now: str) -> None:
        self.state = state
        self.tenant = tenant
        self.now = now
        self.changed: dict[str, LinkRecord] = {}
        self.commands: list[Command] = []
        self.audit: list[dict[str, Any]] = []

    # --- reads --------------------------------------------------------------------
    def get(self, link_id: str) -> LinkRecord | None:
        return self.changed.get(link_id) or self.state.get(link_id)

    def find(self, index: str, value: str) -> list[LinkRecord]:
        ids = set(self.state.lookup(index, value))
        ids.update(lid for lid, rec in self.changed.items() if value in index_entries(rec)[index])
        found = (self.get(lid) for lid in sorted(ids))
        return [r for r in found if r is not None and value in index_entries(r)[index]]

    # --- writes -------------------------------------------------------------------
    def save(self, link: LinkRecord) -> LinkRecord:
        link = _settle(link)
        self.changed[link.link_id] = replace(link, updated_at=self.now)
        return self.changed[link.link_id]

    def record(self, kind: str, link: LinkRecord | None = None, **data: Any) -> None:
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
        context: dict[str, Any] | None = None,
    ) -> LinkRecord:
        seq = link.seq + 1
        cmd = Command(
            tenant_id=link.tenant_id,
            user=link.user,
            target=target,
            entity=link.entity,
            action=action,
            link_id=link.link_id,
            target_id=target_id,
            fields=fields,
            expected_version=expected_version,
            context=context or {},
            # Our own id: envelopes' default hashes fields without None values, so two
            # patches clearing different fields would collide; seq makes a retry after a
            # failure a new command rather than one the writer already answered.
            command_id=stable_id(
                "cmd", link.tenant_id, link.link_id, target, action, target_id, expected_version, seq, fields
            ),
        )
        self.commands.append(cmd)
        side = link.side(target)
        pending = Pending(cmd.command_id, action, fields, expected_version)
        return replace(link.with_side(target, replace(side, pending=pending, failed=None)), seq=seq)

    def conflicts(self, link: LinkRecord, conflicts: list[merge.Conflict]) -> None:
        for c in conflicts:
            self.record(
                "conflict",
                link,
                field=c.field,
                exchange_value=c.exchange_value,
                salesforce_value=c.salesforce_value,
                winner=c.winner,
                losing_value=c.losing_value,
                policy=self.tenant.conflict_policy,
            )

    def decision(self) -> Decision:
        return Decision(tuple(self.changed[k] for k in sorted(self.changed)), self.commands, self.audit)


def _settle(link: LinkRecord) -> LinkRecord:
    """Derive status and base: base moves only when both sides hold `desired` and nothing
    is in flight, so it always is a record both sides really agreed on."""
    ex, sf = link.exchange, link.salesforce
    if link.status not in ("unlinked", "deleted", "discard"):
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


def _retired(ids: tuple[str, ...], new: str | None) -> tuple[str, ...]:
    return ids if new is None or new in ids else (*ids, new)


def _ts(ev: ChangeEvent) -> str:
    return ev.modified_at or ev.observed_at


def _older(t: str | None, watermark: str | None) -> bool:
    return bool(t and watermark and merge.newer(watermark, t))


# --- entry points ---------------------------------------------------------------------


def reconcile(state: TenantState, tenant: Tenant, item: Input, now: str) -> Decision:
    w = _Work(state, tenant, now)
    if item.tenant_id != tenant.tenant_id or state.tenant_id != tenant.tenant_id:
        w.record("drop", reason="tenant mismatch", input_tenant=item.tenant_id, entity=item.entity)
        return w.decision()
    if isinstance(item, ChangeEvent):
        if item.entity not in tenant.entities:
            w.record("drop", reason="entity not synced for tenant", entity=item.entity, source_id=item.source_id)
        else:
            _on_event(w, item)
    else:
        _on_result(w, item)
    return w.decision()


def sweep(state: TenantState, tenant: Tenant, now: str) -> Decision:
    """Re-plan every active link: retries writes that failed and creates that never landed.
    The service runs it on the tenant's safety-sweep timer; it emits nothing for links that
    are in sync or have a command in flight."""
    w = _Work(state, tenant, now)
    for lid in sorted(state.links):
        link = w.get(lid)
        if link is None or link.status in ("unlinked", "deleted"):
            continue
        if link.status == "discard":
            side = link.exchange if link.exchange.id else link.salesforce
            s_: Side = "exchange" if link.exchange.id else "salesforce"
            w.save(_discard_plan(w, link.with_side(s_, replace(side, failed=None))))
            continue
        if link.exchange.failed or link.salesforce.failed:
            link = replace(
                link, exchange=replace(link.exchange, failed=None), salesforce=replace(link.salesforce, failed=None)
            )
        _plan(w, link)
    return w.decision()


# --- change events ----------------------------------------------------------------------


def _on_event(w: _Work, ev: ChangeEvent) -> None:
    if ev.source == "salesforce" and ev.user == UNKNOWN_OWNER:
        _on_ownerless(w, ev)
        return
    user = w.tenant.user_by_mailbox(ev.user)
    if user is None:
        w.record(
            "drop", reason="user not enrolled", source=ev.source, entity=ev.entity, source_id=ev.source_id, user=ev.user
        )
        return
    if ev.entity == "email":
        if ev.source == "exchange":
            _on_email(w, ev, user.mailbox)
        return  # Salesforce email tasks never sync back
    record = merge.norm(ev.entity, ev.record) if ev.op == "upsert" else None
    links = w.find(ev.source, ev.source_id)
    if not links:
        tagged = ev.origin.get("exsf_link_id")
        cand = w.get(tagged) if isinstance(tagged, str) else None
        if cand is not None and cand.entity == ev.entity and cand.side(ev.source).id is None:
            if ev.source == "salesforce" or cand.user.lower() == user.mailbox.lower():
                links = [cand]
        elif cand is not None and record is not None and _is_stray_create(cand, ev, user.mailbox):
            _stray_copy(w, cand, ev, record)
            return
    if not links:
        if ev.source == "salesforce" and "client=exsf" in str(ev.origin.get("change_origin") or ""):
            # Written by us, yet no link knows the id: our create, its result still on the
            # way (the result links it). Copying it into a mailbox would duplicate it.
            return
        _on_new_item(w, ev, user.mailbox, record)
        return
    if ev.source == "salesforce" and record is not None:
        _follow_owner(w, links, ev, user.mailbox, record)
    for link in links:
        _on_known(w, w.get(link.link_id) or link, ev, record)


def _on_ownerless(w: _Work, ev: ChangeEvent) -> None:
    """A Salesforce delete (CDC deletes carry no owner), or the record passing to an owner
    who is not enrolled (reason "unlinked"): it concerns whichever links hold the record."""
    links = w.find("salesforce", ev.source_id)
    if not links:
        # Not seen yet: it may have overtaken the record's own upsert. A tombstone makes
        # that late upsert stale instead of a new copy.
        unlinked = ev.origin.get("reason") == "unlinked"
        st = SideState(id=ev.source_id, version=ev.version, modified_at=_ts(ev), gone=not unlinked)
        tomb = LinkRecord(
            tenant_id=ev.tenant_id,
            entity=ev.entity,
            link_id=stable_id("link", ev.tenant_id, ev.entity, "salesforce", ev.source_id),
            user=UNKNOWN_OWNER,
            status="unlinked" if unlinked else "deleted",
            salesforce=st,
            owner="" if unlinked else None,
            seen=(ev.event_id,),
        )
        w.save(tomb)
        return
    if ev.op == "delete" and ev.origin.get("reason") == "unlinked":
        _follow_owner(w, links, ev, "", None)
        return
    for link in links:
        _on_known(w, w.get(link.link_id) or link, ev, None)


# --- ownership --------------------------------------------------------------------------------


def _follow_owner(
    w: _Work, links: list[LinkRecord], ev: ChangeEvent, owner: str, record: dict[str, Any] | None
) -> None:
    """Records sync with their owner's mailbox. When the owner changes, the copy we made in
    the previous owner's mailbox is removed (its edits move to the new owner's link) and
    the new owner gets one. Items that were a mailbox's own (not created by us) stay
    linked; if the new owner is not enrolled they stop syncing (unlinked, kept)."""
    sf_id, t = ev.source_id, _ts(ev)
    live = [r for r in (w.get(x.link_id) or x for x in links) if r.status != "deleted" and r.salesforce.id == sf_id]
    if not live or any(ev.event_id in r.seen or _older(t, r.salesforce.modified_at) for r in live):
        return
    known = {r.owner.lower() for r in live if r.owner is not None}
    if not known or owner.lower() in known:
        for r in live:
            if r.owner != owner:
                w.save(replace(r, owner=owner))
        return
    lower = owner.lower()
    w.record("owner_changed", live[0], salesforce_id=sf_id, previous=sorted(known), owner=owner or None)
    if owner:
        for i, r in enumerate(live):
            if r.status == "unlinked" and r.owner == "" and r.exchange.alive:
                # Unlinked only because the record had left enrolled hands: sync again (the
                # event, processed next, merges the record into it).
                w.record("relink", r, reason="salesforce owner enrolled again", salesforce_id=sf_id)
                live[i] = w.save(replace(r, status="pending", owner=owner))
    successor = next((r for r in live if owner and r.user.lower() == lower and r.status in ("pending", "linked")), None)
    moving = [
        r
        for r in live
        if r.status in ("pending", "linked") and _our_copy(r.exchange) and (not owner or r.user.lower() != lower)
    ]
    if owner and successor is None and record is not None:
        successor = _owner_link(w, ev, owner, record, moving[0] if moving else None)
    for r in moving:
        successor = _move_out(w, r, successor, owner)
    done = {r.link_id for r in moving} | ({successor.link_id} if successor is not None else set())
    for r in live:
        if r.link_id in done:
            continue
        r = w.get(r.link_id) or r
        if not owner and r.status in ("pending", "linked"):
            w.record("unlink", r, reason="salesforce owner not enrolled", salesforce_id=sf_id, record=r.desired)
            w.save(replace(r, status="unlinked", owner=owner))
        else:
            w.save(replace(r, owner=owner))
    if successor is not None:
        _plan(w, w.save(successor))


def _our_copy(ex: SideState) -> bool:
    """The mailbox item is (or is about to be) one we created, not the mailbox's own."""
    creating = ex.id is None and ex.pending is not None and ex.pending.action == "create"
    return ex.created or creating


def _owner_link(w: _Work, ev: ChangeEvent, owner: str, record: dict[str, Any], src: LinkRecord | None) -> LinkRecord:
    """The new owner's pair for the record; it starts from the moving link's merged record
    (so edits the previous owner's copy held move along) or from the record itself."""
    t = _ts(ev)
    desired, sf = record, SideState(id=ev.source_id, version=ev.version, modified_at=t, shadow=record)
    if src is not None:
        merged = _observe(w, src, "salesforce", ev.source_id, record, ev.version, t)
        desired, sf = merged.desired, replace(merged.salesforce, pending=None, failed=None, retired=())
    ical = src.ical_uid if src is not None else ev.origin.get("ical_uid")
    link = LinkRecord(
        tenant_id=ev.tenant_id,
        entity=ev.entity,
        link_id=stable_id("link", ev.tenant_id, ev.entity, "salesforce", ev.source_id, owner.lower(), ev.version),
        user=owner,
        status="pending",
        salesforce=sf,
        desired=dict(desired),
        ical_uid=ical if isinstance(ical, str) else None,
        owner=owner,
        seen=(ev.event_id,),
    )
    w.record("owner_moved", link, salesforce_id=ev.source_id, from_user=src.user if src is not None else None)
    return w.save(link)


def _move_out(w: _Work, link: LinkRecord, successor: LinkRecord | None, owner: str) -> LinkRecord | None:
    """Remove our copy from a previous owner's mailbox."""
    ex = link.exchange
    if successor is not None and ex.id:
        st = successor.exchange
        successor = w.save(replace(successor, exchange=replace(st, retired=_retired(st.retired, ex.id))))
    if ex.alive and ex.id:
        _discard(w, link, "exchange", ex.id, ex.version, ex.shadow)
    unsent = not merge.same(link.desired, link.salesforce.shadow)
    if unsent and (successor is None or not merge.same(link.desired, successor.desired)):
        w.record(
            "discarded_edit",
            link,
            side="exchange",
            target_id=ex.id,
            record=link.desired,
            reason="owner changed before the edit reached salesforce",
        )
    w.save(replace(link, status="deleted", owner=owner, exchange=replace(ex, retired=_retired(ex.retired, ex.id))))
    return successor


def _on_known(w: _Work, link: LinkRecord, ev: ChangeEvent, record: dict[str, Any] | None) -> None:
    s = ev.source
    side = link.side(s)
    t = _ts(ev)
    if ev.event_id in link.seen:
        return
    if link.status == "deleted":
        if s == "exchange" and ev.origin.get("reason") == "unlinked" and side.id == ev.source_id:
            # Our delete found it gone because it had left the folder: it still exists,
            # unsynced, and may be put back in scope (then it syncs as a new pair).
            ex = replace(side, gone=False, pending=None, modified_at=t)
            w.save(replace(link.with_side(s, ex), status="unlinked", seen=(*link.seen, ev.event_id)[-SEEN_LIMIT:]))
            return
        if ev.op == "upsert" and side.id is None and ev.source_id not in side.retired:
            # Found by its tag: a create of ours landed after all (reported failed, then
            # applied by a redelivery) for a pair that is gone. Nothing must keep it.
            _discard(w, link, s, ev.source_id, ev.version, record)
            w.save(link.with_side(s, replace(side, retired=_retired(side.retired, ev.source_id))))
        return
    if ev.source_id in side.retired:
        if s == "exchange" and ev.origin.get("reason") == "unlinked" and link.status in ("pending", "linked"):
            _unlinked_after_restore(w, link, ev)
        return
    if link.status == "discard":
        if not _older(t, side.modified_at) and side.version != ev.version:
            _discard_input(w, replace(link, seen=(*link.seen, ev.event_id)[-SEEN_LIMIT:]), s, record, ev.version, t)
        return
    if _older(t, side.modified_at) or (ev.op == "upsert" and side.id == ev.source_id and side.version == ev.version):
        return
    # A new input from either side is a fresh reason to retry writes that failed.
    link = replace(
        link,
        seen=(*link.seen, ev.event_id)[-SEEN_LIMIT:],
        exchange=replace(link.exchange, failed=None),
        salesforce=replace(link.salesforce, failed=None),
    )
    side = link.side(s)

    if s == "exchange" and ev.origin.get("reason") == "unlinked":
        if link.status != "unlinked":
            w.record("unlink", link, exchange_id=ev.source_id, salesforce_id=link.salesforce.id, record=link.desired)
        w.save(replace(link, status="unlinked", exchange=replace(side, modified_at=t, pending=None)))
        return

    if ev.op == "delete" and side.id is None:
        # The item our create made (found by its tag) is already deleted again: remember
        # its id, so its late echoes are stale and a result naming it means "gone".
        w.save(link.with_side(s, replace(side, retired=_retired(side.retired, ev.source_id))))
        return
    if ev.op == "delete":
        link = link.with_side(s, replace(side, gone=True, modified_at=t, version=ev.version))
        if link.status == "unlinked":
            w.save(link)
            return
        _plan(w, w.save(link))
        return

    assert record is not None
    if link.status == "unlinked":
        if s == "salesforce":
            # Keep following the Salesforce record so a re-linked item merges against
            # its current content and the dedupe key stays true.
            st = replace(side, id=side.id or ev.source_id, shadow=record, version=ev.version, modified_at=t, gone=False)
            w.save(replace(link.with_side(s, st), desired=record))
        else:
            _relink(w, link, ev, record)
        return

    link = _observe(w, link, s, ev.source_id, record, ev.version, t)
    _plan(w, w.save(link))


def _is_stray_create(link: LinkRecord, ev: ChangeEvent, mailbox: str) -> bool:
    """Our create for `link` made this mailbox item, but the link was attached to a matching
    item of the mailbox while the create was in flight: this one is a second copy. Taking
    it as a new item would give one mailbox two links to the same record, and the copy's
    discard (when the create's result comes) would then delete an item another link syncs."""
    p = link.exchange.pending
    return (
        ev.source == "exchange"
        and link.entity == ev.entity
        and link.user.lower() == mailbox.lower()
        and link.status in ("pending", "linked")
        and p is not None
        and p.action == "create"
        and link.exchange.id not in (None, ev.source_id)
    )


def _stray_copy(w: _Work, link: LinkRecord, ev: ChangeEvent, record: dict[str, Any]) -> None:
    """Remove our second copy; edits someone already made to it move to the link."""
    assert link.exchange.pending is not None
    ex = link.exchange
    w.save(link.with_side("exchange", replace(ex, retired=_retired(ex.retired, ev.source_id))))
    sent = merge.norm(link.entity, link.exchange.pending.fields)
    _discard(w, link, "exchange", ev.source_id, ev.version, sent)
    rec = w.get(stable_id("discard", link.tenant_id, link.entity, "exchange", ev.source_id))
    if rec is not None and not merge.same(sent, record):
        _discard_input(w, rec, "exchange", record, ev.version, _ts(ev))


def _unlinked_after_restore(w: _Work, link: LinkRecord, ev: ChangeEvent) -> None:
    """A write found the item gone and we restored it, but the item had only left the
    folder: the person wanted it unsynced. Unlink (by the original id, so putting it back
    re-links it) and remove our restored copy; its content lives on in Salesforce."""
    ex = link.exchange
    w.record(
        "unlink",
        link,
        exchange_id=ev.source_id,
        salesforce_id=link.salesforce.id,
        record=link.desired,
        reason="moved out of the folder; our restored copy is removed",
    )
    if ex.alive and ex.id:
        _discard(w, link, "exchange", ex.id, ex.version, ex.shadow)
    retired = tuple(i for i in _retired(ex.retired, ex.id) if i != ev.source_id)
    unlinked = SideState(id=ev.source_id, modified_at=_ts(ev), retired=retired)
    w.save(
        replace(link.with_side("exchange", unlinked), status="unlinked", seen=(*link.seen, ev.event_id)[-SEEN_LIMIT:])
    )


def _observe(
    w: _Work,
    link: LinkRecord,
    s: Side,
    item_id: str,
    record: dict[str, Any],
    version: str | None,
    t: str | None,
) -> LinkRecord:
    """Fold a side's current content into the link (merge + conflict audit)."""
    side = link.side(s)
    o = link.side(other(s))
    policy = w.tenant.conflict_policy
    pend = side.pending
    conflicts: list[merge.Conflict]
    if side.shadow is None and pend is not None and pend.action == "create" and merge.same(record, pend.fields):
        # Our create showing up (echo) before its result. Anything else, even carrying
        # our tag (a stale copy moved back in), is merged as an item that never agreed.
        desired, conflicts = dict(link.desired), []
    elif side.shadow is None:
        ex, sf = (record, link.desired) if s == "exchange" else (link.desired, record)
        ex_t, sf_t = (t, o.modified_at) if s == "exchange" else (o.modified_at, t)
        desired, conflicts = merge.join(link.entity, ex, sf, policy, ex_t, sf_t)
    else:
        desired, conflicts = merge.absorb(link.entity, link.desired, side.shadow, record, s, policy, t, o.modified_at)
    w.conflicts(link, conflicts)
    st = replace(
        side, id=side.id or item_id, shadow=record, version=version, modified_at=t or side.modified_at, gone=False
    )
    return replace(link.with_side(s, st), desired=desired)


def _relink(w: _Work, link: LinkRecord, ev: ChangeEvent, record: dict[str, Any]) -> None:
    """An unlinked mailbox item came back in scope (category re-added): sync it again,
    merging with the Salesforce record as two items that never agreed."""
    if link.owner == "" and link.salesforce.alive:
        # Its record belongs to someone who is not enrolled: the item stays the mailbox's
        # own, its edits kept for when the record comes back into enrolled hands.
        link = _observe(w, link, "exchange", ev.source_id, record, ev.version, _ts(ev))
        w.save(replace(link, seen=(*link.seen, ev.event_id)[-SEEN_LIMIT:]))
        return
    ex = SideState(
        id=ev.source_id, version=ev.version, modified_at=_ts(ev), shadow=record, retired=link.exchange.retired
    )
    sf = link.salesforce
    link = replace(link, status="pending", exchange=ex, base=None, base_hash=None, desired=record)
    if sf.alive and sf.shadow is not None:
        desired, conflicts = merge.join(
            link.entity, record, sf.shadow, w.tenant.conflict_policy, _ts(ev), sf.modified_at
        )
        w.conflicts(link, conflicts)
        link = replace(link, desired=desired)
    elif sf.pending is None:
        retired = _retired(sf.retired, sf.id)
        link = replace(link, salesforce=SideState(retired=retired))
    w.record("relink", link, exchange_id=ev.source_id, salesforce_id=link.salesforce.id)
    _plan(w, w.save(replace(link, seen=(ev.event_id,))))


def _on_new_item(w: _Work, ev: ChangeEvent, mailbox: str, record: dict[str, Any] | None) -> None:
    s: Side = ev.source
    link_id = stable_id("link", ev.tenant_id, ev.entity, s, ev.source_id)
    st = SideState(id=ev.source_id, version=ev.version, modified_at=_ts(ev), shadow=record, gone=record is None)
    ical = ev.origin.get("ical_uid") if isinstance(ev.origin.get("ical_uid"), str) else None
    base_link = LinkRecord(
        tenant_id=ev.tenant_id,
        entity=ev.entity,
        link_id=link_id,
        user=mailbox,
        status="pending",
        desired=record or {},
        ical_uid=ical,
        owner=mailbox if s == "salesforce" else None,
        seen=(ev.event_id,),
    )
    if record is None:
        # A delete (or a move out of scope) for an item we never saw; it may have overtaken
        # its own upsert. A tombstone makes that late upsert stale instead of a new copy;
        # an unlinked one still lets the item come back in scope later.
        if s == "exchange" and ev.origin.get("reason") == "unlinked":
            w.save(replace(base_link.with_side(s, replace(st, gone=False)), status="unlinked"))
        else:
            w.save(replace(base_link.with_side(s, st), status="deleted"))
        return
    keys = match_keys(ev.entity, mailbox, record, ical)
    if s == "exchange":
        # Our own create into this mailbox seen before its result.
        for key in keys:
            for cand in w.find("key", key):
                if (
                    cand.user.lower() == mailbox.lower()
                    and cand.exchange.id is None
                    and cand.exchange.pending is not None
                    and cand.status != "deleted"
                ):
                    _on_known(w, cand, ev, record)
                    return
        _plan(w, w.save(base_link.with_side(s, st)))
        return
    # salesforce
    for key in keys:
        cands = [
            c for c in w.find("key", key) if not c.salesforce.gone and c.status in ("pending", "linked", "unlinked")
        ]
        for cand in cands:
            # A link still waiting for its Salesforce item (our create in flight, or a wait
            # on another link's create): this is it, or an original our create would copy.
            if cand.salesforce.id is None and (cand.status != "unlinked" or cand.salesforce.pending is not None):
                w.record(
                    "dedupe", cand, reason="salesforce item matches a pending link", salesforce_id=ev.source_id, key=key
                )
                _on_known(w, cand, ev, record)
                return
        ours = [c for c in cands if c.salesforce.alive and c.salesforce.created]
        if ours:
            _repoint(w, ours[0].salesforce.id or "", ev, record, key)
            return
        synced = [c for c in cands if c.salesforce.alive and c.status != "unlinked"]
        if synced:
            # Salesforce itself already holds a synced record with this key: copying this
            # one into the mailbox would make a duplicate there. Track it, do not sync.
            w.record(
                "dedupe",
                base_link,
                reason="salesforce duplicate not synced",
                salesforce_id=ev.source_id,
                key=key,
                matches=[c.salesforce.id for c in synced],
                record=record,
            )
            w.save(replace(base_link.with_side(s, st), status="unlinked"))
            return
    _plan(w, w.save(base_link.with_side(s, st)))


# --- planning -----------------------------------------------------------------------------


def _plan(w: _Work, link: LinkRecord) -> LinkRecord:
    if link.status in ("unlinked", "deleted", "discard"):
        return link
    ex, sf = link.exchange, link.salesforce
    if link.entity == "email":
        if sf.id is None and sf.pending is None and sf.failed is None:
            link = w.save(_email_create(w, link))
        return link
    busy = ex.pending is not None or sf.pending is not None
    if ex.gone or sf.gone:
        if not busy:
            link = _plan_delete(w, link)
        return link
    for s in ("exchange", "salesforce"):
        side = link.side(s)
        if side.pending is not None or side.failed is not None:
            continue  # a failed write waits for the next change or the sweep
        if side.id is None:
            link = _plan_create(w, link, s)
        elif not merge.same(side.shadow, link.desired):
            fields = merge.patch(link.entity, side.shadow, link.desired)
            link = w.command(link, s, "update", side.id, fields, side.version)
    return w.save(link)


def _plan_create(w: _Work, link: LinkRecord, s: Side) -> LinkRecord:
    if s == "salesforce":
        # Dedupe before any create: join an existing Salesforce record, or wait for a
        # create another link already has in flight for the same key.
        for key in link.match_keys():
            for cand in w.find("key", key):
                if cand.link_id == link.link_id or cand.status in ("deleted", "discard") or cand.salesforce.gone:
                    continue
                if cand.owner == "":
                    continue  # its owner is not enrolled: we would not see its changes
                if cand.salesforce.id in link.salesforce.retired:
                    continue  # we know that record is gone; its other links will learn it
                if cand.salesforce.alive and cand.salesforce.shadow is not None:
                    return _join(w, link, cand, key)
                if cand.salesforce.id is None and cand.salesforce.pending is not None:
                    w.record(
                        "dedupe",
                        link,
                        reason="waiting for a pending create of the same item",
                        key=key,
                        waiting_for=cand.link_id,
                    )
                    return link
        user = w.tenant.user_by_mailbox(link.user)
        ctx = {"owner_id": user.salesforce_user_id if user else None}
    else:
        ctx = {"mailbox": link.user}
    return w.command(link, s, "create", None, dict(link.desired), None, ctx)


def _join(w: _Work, link: LinkRecord, cand: LinkRecord, key: str) -> LinkRecord:
    sf = cand.salesforce
    assert sf.shadow is not None
    ex = link.exchange
    # Join with `desired`, not the mailbox shadow: after a restore it also holds edits
    # carried over from a discarded copy, which exist nowhere else.
    desired, conflicts = merge.join(
        link.entity,
        link.desired or ex.shadow or {},
        sf.shadow,
        w.tenant.conflict_policy,
        ex.modified_at,
        sf.modified_at,
    )
    w.record(
        "dedupe",
        link,
        reason="linked to existing salesforce record",
        key=key,
        salesforce_id=sf.id,
        exchange_record=ex.shadow,
        salesforce_record=sf.shadow,
        merged=desired,
    )
    w.conflicts(link, conflicts)
    joined = SideState(
        id=sf.id,
        version=sf.version,
        modified_at=sf.modified_at,
        shadow=sf.shadow,
        retired=link.salesforce.retired,
        created=sf.created,
    )
    link = replace(link.with_side("salesforce", joined), desired=desired, owner=link.owner or cand.owner)
    return _plan(w, w.save(link))


def _other_record(w: _Work, link: LinkRecord, sf_id: str) -> LinkRecord | None:
    """A link holding a different live Salesforce record with this link's dedupe key."""
    for key in link.match_keys():
        for cand in w.find("key", key):
            sf = cand.salesforce
            if (
                cand.link_id != link.link_id
                and cand.status in ("pending", "linked", "unlinked")
                and sf.alive
                and sf.id != sf_id
                and sf.id not in link.salesforce.retired
                and sf.shadow is not None
                and cand.owner != ""
            ):
                return cand
    return None


def _unseen_values(link: LinkRecord) -> bool:
    """Does `desired` hold a value that neither side's last content nor the base held?"""
    ex, sf, base = link.exchange.shadow or {}, link.salesforce.shadow or {}, link.base or {}
    return any(
        v is not None and v != base.get(f) and v != ex.get(f) and v != sf.get(f) for f, v in link.desired.items()
    )


def _active_siblings(w: _Work, link: LinkRecord, sf_id: str) -> list[LinkRecord]:
    return [
        c
        for c in w.find("salesforce", sf_id)
        if c.link_id != link.link_id
        and c.status in ("pending", "linked")
        and c.salesforce.id == sf_id
        and not c.salesforce.gone
        and c.exchange.alive
    ]


def _plan_delete(w: _Work, link: LinkRecord) -> LinkRecord:
    ex, sf = link.exchange, link.salesforce
    if (ex.gone or ex.id is None) and (sf.gone or sf.id is None):
        if _unseen_values(link):
            # Both items were deleted, but the merged record holds a value neither of them
            # ever held: an edit made to a copy of ours after it (the copy was removed as
            # a duplicate). No delete saw that edit, so it beats them: restore both sides.
            w.record(
                "restore",
                link,
                side="both",
                record=link.desired,
                base=link.base,
                exchange_record=ex.shadow,
                salesforce_record=sf.shadow,
            )
            link = replace(
                link,
                exchange=SideState(retired=_retired(ex.retired, ex.id), modified_at=ex.modified_at),
                salesforce=SideState(retired=_retired(sf.retired, sf.id), modified_at=sf.modified_at),
            )
            return _plan(w, w.save(link))
        w.record("delete", link, reason="gone on both sides", record=link.desired)
        return w.save(replace(link, status="deleted"))
    s: Side = "exchange" if ex.gone else "salesforce"
    o: Side = other(s)
    gone, alive = link.side(s), link.side(o)
    if s == "exchange" and alive.id and _active_siblings(w, link, alive.id):
        # Other mailboxes still sync this Salesforce record: this mailbox dropped its
        # copy, the record stays for them.
        w.record(
            "unlink",
            link,
            reason="deleted in one mailbox, salesforce record still linked elsewhere",
            salesforce_id=alive.id,
            record=link.desired,
        )
        return w.save(replace(link, status="unlinked"))
    if merge.has_new_content(alive.shadow, link.base, gone.shadow):
        # Edit beats delete: recreate on the side that deleted, with the merged record.
        retired = _retired(gone.retired, gone.id)
        w.record(
            "restore", link, side=s, deleted_id=gone.id, record=link.desired, base=link.base, surviving=alive.shadow
        )
        link = link.with_side(s, SideState(retired=retired, modified_at=gone.modified_at))
        return _plan(w, w.save(link))
    w.record("delete", link, side=o, target_id=alive.id, record=alive.shadow)
    link = w.command(link, o, "delete", alive.id, {}, alive.version)
    return w.save(link)


# --- command results -----------------------------------------------------------------------


def _on_result(w: _Work, r: CommandResult) -> None:
    link = w.get(r.link_id)
    if link is None or link.entity != r.entity:
        w.record("drop", reason="result for unknown link", link_id=r.link_id, command_id=r.command_id)
        return
    side = link.side(r.target)
    p = side.pending
    if p is None or p.command_id != r.command_id:
        if r.status == "applied" and r.target_id and r.target_id != side.id and r.target_id not in side.retired:
            _late_create(w, link, r)
        return  # otherwise a duplicate or superseded result: already handled
    s: Side = r.target
    side = replace(side, pending=None)
    link = link.with_side(s, side)
    if link.status == "deleted":
        # The pair ended while its create was in flight (the record moved to another
        # owner): nothing keeps what the create made.
        if r.status == "applied" and p.action == "create" and r.target_id and r.target_id not in side.retired:
            made = merge.norm(link.entity, r.record) if r.record is not None else merge.norm(link.entity, p.fields)
            _discard(w, link, s, r.target_id, r.new_version, made)
            link = link.with_side(s, replace(side, retired=_retired(side.retired, r.target_id)))
        w.save(link)
        return
    if link.status == "discard":
        if r.status in ("applied", "gone"):
            w.save(replace(link.with_side(s, replace(side, gone=True)), status="deleted"))
        elif r.status == "failed":
            w.save(link.with_side(s, replace(side, failed=r.error or "failed")))
        elif r.record is not None:
            _discard_input(w, link, s, merge.norm(link.entity, r.record), r.new_version, r.modified_at)
        else:
            w.save(link)  # wait for the change event with the fresh content
        return

    if r.status == "failed" or (r.status == "gone" and p.action == "create"):
        w.record(
            "failed", link, side=s, action=p.action, command_id=r.command_id, error=r.error or r.status, fields=p.fields
        )
        link = w.save(link.with_side(s, replace(side, failed=r.error or r.status)))
        _plan(w, link)  # a delete decision may have waited for this command
        return

    if link.entity == "email":
        if r.status == "applied" and r.target_id:
            w.save(link.with_side(s, replace(side, id=r.target_id, version=r.new_version)))
        else:  # an email task cannot conflict; gone means it was deleted, so create again
            w.record("failed", link, side=s, action=p.action, command_id=r.command_id, error=r.status)
            w.save(link.with_side(s, replace(side, failed=r.status)))
        return

    if r.status == "applied":
        link = _applied(w, link, s, p, r)
    elif r.status == "conflict":
        if r.record is not None and r.new_version != side.version and not _older(r.modified_at, side.modified_at):
            link = _observe(
                w,
                link,
                s,
                side.id or r.target_id or "",
                merge.norm(link.entity, r.record),
                r.new_version,
                r.modified_at,
            )
        elif side.version == p.expected_version:
            # Fresh content unknown: its change event will come and re-plan; planning now
            # would only repeat the same stale write.
            w.save(link)
            return
    else:  # gone: deleted meanwhile; for an update that carried an edit, planning restores it
        link = link.with_side(s, replace(side, gone=True, modified_at=r.modified_at or side.modified_at))
    if link.status in ("unlinked", "deleted"):
        w.save(link)
        return
    _plan(w, w.save(link))


def _late_create(w: _Work, link: LinkRecord, r: CommandResult) -> None:
    """A create we had written off (reported failed, then applied by a redelivered command)
    made an item after all. Adopt it if the side has none, else remove the extra copy;
    never leave an item nobody tracks."""
    s: Side = r.target
    side = link.side(s)
    record = merge.norm(link.entity, r.record) if r.record is not None else dict(link.desired)
    assert r.target_id is not None
    if side.id is None and link.status != "unlinked":
        w.record("adopt", link, side=s, target_id=r.target_id, reason="create applied after it was reported failed")
        if link.status == "deleted":
            link = replace(link, status="pending")
        link = _take_created(w, link, s, r, record)
        if link.entity != "email" and link.status not in ("unlinked", "deleted"):
            link = _plan(w, w.save(link))
        w.save(link)
        return
    if link.entity == "email":
        return  # an email task is never deleted by us
    _discard(w, link, s, r.target_id, r.new_version, record)
    w.save(link.with_side(s, replace(side, retired=_retired(side.retired, r.target_id))))


def _take_created(w: _Work, link: LinkRecord, s: Side, r: CommandResult, sent: dict[str, Any]) -> LinkRecord:
    """Our create made item r.target_id on side s (the side had none)."""
    assert r.target_id is not None
    side = link.side(s)
    record = merge.norm(link.entity, r.record) if r.record is not None else sent
    if s == "salesforce" and link.entity != "email":
        existing = _other_record(w, link, r.target_id)
        if existing is not None:
            # Another link got the original meanwhile (its event overtook our create):
            # ours is the copy. Follow the original, discard ours.
            _discard(w, link, s, r.target_id, r.new_version, record)
            side = replace(side, retired=_retired(side.retired, r.target_id))
            link = link.with_side(s, side)
            if link.status == "unlinked":
                sf = existing.salesforce
                st = replace(side, id=sf.id, version=sf.version, modified_at=sf.modified_at, shadow=sf.shadow)
                return replace(link.with_side(s, st), desired=dict(sf.shadow or {}))
            return _join(w, link, existing, "")
    # What we sent is the shadow; anything else in the returned record is someone's edit
    # of the new item (a retried create returns the item as it is now).
    link = link.with_side(s, replace(side, created=True, id=r.target_id, shadow=sent, gone=False))
    if link.status == "unlinked":
        st = replace(link.side(s), shadow=record, version=r.new_version)
        return replace(link.with_side(s, st), desired=record)
    link = _observe(w, link, s, r.target_id, record, r.new_version, r.modified_at)
    _refresh_waiters(w, link)
    return link


def _applied(w: _Work, link: LinkRecord, s: Side, p: Pending, r: CommandResult) -> LinkRecord:
    side = link.side(s)
    record = merge.norm(link.entity, r.record) if r.record is not None else None
    if p.action == "delete":
        return link.with_side(s, replace(side, gone=True, modified_at=r.modified_at or side.modified_at))
    if p.action == "create":
        if r.target_id and r.target_id in side.retired and side.id is None:
            return link.with_side(s, replace(side, id=r.target_id, gone=True))  # created, then deleted already
        if side.id is not None and r.target_id and side.id != r.target_id:
            # The link was attached to a matching item meanwhile; ours is a second copy.
            w.record(
                "dedupe",
                link,
                reason="removing our duplicate create",
                side=s,
                duplicate_id=r.target_id,
                kept_id=side.id,
                record=record or p.fields,
            )
            _discard(w, link, s, r.target_id, r.new_version, record or merge.norm(link.entity, p.fields))
            return link.with_side(s, replace(side, retired=_retired(side.retired, r.target_id)))
        if side.id is None and r.target_id:
            return _take_created(w, link, s, r, merge.norm(link.entity, p.fields))
        link = link.with_side(s, side)
        _refresh_waiters(w, link)
        return link
    # update
    if side.version == p.expected_version:
        # Nothing newer was observed since we wrote, so the write's result is current.
        shadow = record if record is not None else merge.apply_patch(link.entity, side.shadow, p.fields)
        side = replace(side, shadow=shadow, version=r.new_version, modified_at=r.modified_at or side.modified_at)
        link = link.with_side(s, side)
        if s == "salesforce" and side.id:
            _fan_out(w, link, side.id, shadow, r.new_version, r.modified_at)
    return link


def _fan_out(
    w: _Work, link: LinkRecord, sf_id: str, record: dict[str, Any], version: str | None, t: str | None
) -> None:
    """A write to a Salesforce record shared by several mailbox items: the other links see
    it as a Salesforce change now, rather than waiting for its CDC echo."""
    for sib in w.find("salesforce", sf_id):
        if sib.link_id == link.link_id or sib.salesforce.id != sf_id or sib.salesforce.version == version:
            continue
        if sib.status == "deleted" or sib.salesforce.gone:
            continue
        if sib.status == "unlinked":
            w.save(replace(sib, salesforce=replace(sib.salesforce, shadow=record, version=version), desired=record))
            continue
        _plan(w, w.save(_observe(w, sib, "salesforce", sf_id, record, version, t)))


def _refresh_waiters(w: _Work, link: LinkRecord) -> None:
    """Links that waited for this link's Salesforce create can now join it."""
    if not link.salesforce.alive:
        return
    w.save(link)
    for key in link.match_keys():
        for cand in w.find("key", key):
            if (
                cand.link_id != link.link_id
                and cand.status == "pending"
                and cand.salesforce.id is None
                and cand.salesforce.pending is None
                and not cand.salesforce.gone
                and cand.exchange.alive
            ):
                _plan(w, cand)


# --- stray copies ---------------------------------------------------------------------------


def _discard(
    w: _Work, owner: LinkRecord, s: Side, item_id: str, version: str | None, shadow: dict[str, Any] | None
) -> None:
    """Delete a copy we made that turned out to duplicate an existing item. It gets its own
    record so the delete is tracked like any write (retried, conflict-checked), and edits
    someone made to the copy meanwhile move to the links that replaced it."""
    lid = stable_id("discard", owner.tenant_id, owner.entity, s, item_id)
    if w.get(lid) is not None:
        return
    rec = LinkRecord(
        tenant_id=owner.tenant_id,
        entity=owner.entity,
        link_id=lid,
        user=owner.user,
        status="discard",
        desired=dict(shadow or {}),
    )
    rec = rec.with_side(s, SideState(id=item_id, version=version, shadow=dict(shadow or {}), created=True))
    w.record("dedupe", owner, reason="removing our duplicate copy", side=s, duplicate_id=item_id, record=shadow)
    w.save(_discard_plan(w, rec))


def _discard_plan(w: _Work, rec: LinkRecord) -> LinkRecord:
    s: Side = "exchange" if rec.exchange.id else "salesforce"
    side = rec.side(s)
    if side.pending is not None or side.failed is not None or side.id is None:
        return rec
    if side.gone:
        return replace(rec, status="deleted")
    return w.command(rec, s, "delete", side.id, {}, side.version)


def _discard_input(
    w: _Work, rec: LinkRecord, s: Side, fresh: dict[str, Any] | None, version: str | None, t: str | None
) -> None:
    """The copy changed (someone edited it) or vanished; carry edits over, then delete."""
    side = rec.side(s)
    if fresh is None:
        w.save(replace(rec.with_side(s, replace(side, gone=True)), status="deleted"))
        return
    old = side.shadow or {}
    assert side.id is not None
    successors = [c for c in w.find(s, side.id) if c.status in ("pending", "linked") and side.id in c.side(s).retired]
    if not successors and not merge.same(old, fresh):
        w.record("discarded_edit", rec, side=s, target_id=side.id, record=fresh, before=old)
    for succ in successors:
        o = succ.side(other(s))
        desired, conflicts = merge.absorb(
            succ.entity, succ.desired, old, fresh, s, w.tenant.conflict_policy, t, o.modified_at
        )
        w.conflicts(succ, conflicts)
        _plan(w, w.save(replace(succ, desired=desired)))
    rec = rec.with_side(s, replace(side, shadow=fresh, version=version, modified_at=t or side.modified_at))
    w.save(_discard_plan(w, rec))


def _repoint(w: _Work, s_old: str, ev: ChangeEvent, record: dict[str, Any], key: str) -> None:
    """A Salesforce record we created turns out to copy one that already existed (its event
    was still on its way when we created ours): move every link to the original, merge,
    and discard our copy."""
    links = [
        c
        for c in w.find("salesforce", s_old)
        if c.salesforce.id == s_old and c.status in ("pending", "linked", "unlinked")
    ]
    old_side = links[0].salesforce
    w.record(
        "dedupe",
        links[0],
        reason="salesforce original found for our copy",
        key=key,
        kept_id=ev.source_id,
        duplicate_id=s_old,
        original=record,
        copy=old_side.shadow,
    )
    t = _ts(ev)
    for link in links:
        fresh = SideState(retired=_retired(link.salesforce.retired, s_old))
        link = replace(link.with_side("salesforce", fresh), seen=(*link.seen, ev.event_id)[-SEEN_LIMIT:])
        if link.status == "unlinked":
            st = replace(fresh, id=ev.source_id, version=ev.version, modified_at=t, shadow=record)
            w.save(replace(link.with_side("salesforce", st), desired=record))
            continue
        link = _observe(w, link, "salesforce", ev.source_id, record, ev.version, t)
        _plan(w, w.save(link))
    _discard(w, links[0], "salesforce", s_old, old_side.version, old_side.shadow)


# --- email ----------------------------------------------------------------------------------


def _on_email(w: _Work, ev: ChangeEvent, mailbox: str) -> None:
    if ev.op != "upsert" or ev.record is None:
        return  # deleting or moving the message never deletes the Salesforce task
    record = merge.norm("email", ev.record)
    imid = record.get("internet_message_id") or ev.source_id
    link_id = stable_id("email", ev.tenant_id, mailbox.lower(), imid)
    if w.get(link_id) is not None:
        return  # seen before (redelivery, or moved out and back): created once
    link = LinkRecord(
        tenant_id=ev.tenant_id,
        entity="email",
        link_id=link_id,
        user=mailbox,
        status="pending",
        exchange=SideState(id=ev.source_id, version=ev.version, modified_at=_ts(ev), shadow=record),
        desired=record,
        seen=(ev.event_id,),
    )
    w.save(_email_create(w, link))


def _email_create(w: _Work, link: LinkRecord) -> LinkRecord:
    record = link.desired
    own = link.user.lower()
    candidates: list[str] = []
    for a in [record.get("from_address"), *(record.get("to_addresses") or []), *(record.get("cc_addresses") or [])]:
        if isinstance(a, str) and a.strip().lower() != own and a.strip().lower() not in candidates:
            candidates.append(a.strip().lower())
    who_id = None
    for a in candidates:
        key = contact_key(a)
        matches = [c for c in w.find("key", key) if c.salesforce.alive] if key else []
        if matches:
            who_id = matches[0].salesforce.id
            break
    user = w.tenant.user_by_mailbox(link.user)
    ctx = {
        "mailbox": link.user,
        "message_id": link.exchange.id,
        "attachments": record.get("attachments") or [],
        "owner_id": user.salesforce_user_id if user else None,
        "who_emails": candidates,
        "who_id": who_id,
    }
    return w.command(link, "salesforce", "create", None, dict(record), None, ctx)
