"""Salesforce owner changes. Records sync with their owner's mailbox: the new owner gets
the record, the copy we made in the previous owner's mailbox is removed (its edits move
along), and a mailbox's own item stays linked, or waits unlinked (`parked`) while the
record belongs to someone who is not enrolled."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from services.core.envelopes import ChangeEvent, stable_id
from services.reconciler.core import merge
from services.reconciler.core.dedupe import match_keys
from services.reconciler.core.discard import discard, repoint
from services.reconciler.core.plan import join, observe
from services.reconciler.core.state import (
    LinkRecord,
    SideState,
)
from services.reconciler.core.work import Work, add_retired, event_time, is_older


def follow_owner(w: Work, links: list[LinkRecord], ev: ChangeEvent, owner: str, record: dict[str, Any] | None) -> None:
    """Records sync with their owner's mailbox. When the owner changes, the copy we made in
    the previous owner's mailbox is removed (its edits move to the new owner's link) and
    the new owner gets one. Items that were a mailbox's own (not created by us) stay
    linked; if the new owner is not enrolled they stop syncing (unlinked, kept)."""
    sf_id, t = ev.source_id, event_time(ev)
    held = [r for r in (w.get(x.link_id) or x for x in links) if r.salesforce.id == sf_id]
    live = [r for r in held if r.status != "deleted"]
    if not live:
        owner_after_end(w, held, ev, owner, record)
        return
    if any(ev.event_id in r.seen or is_older(t, r.salesforce.modified_at) for r in live):
        return
    # Not seen yet: a record our create made has the owner we gave it (the pair's user).
    known = {r.owner.lower() for r in live if r.owner is not None} or {
        r.user.lower() for r in live if r.salesforce.created
    }
    if (not known and owner) or owner.lower() in known:
        # Unchanged, or first sight of an enrolled owner: remember it. (First sight of an
        # owner who is not enrolled is a change: the record left enrolled hands.)
        for r in live:
            if r.owner != owner:
                w.save(replace(r, owner=owner))
        return
    owner_moves(w, live, ev, owner, record, known)


def owner_after_end(
    w: Work, held: list[LinkRecord], ev: ChangeEvent, owner: str, record: dict[str, Any] | None
) -> None:
    """Every pair of the record ended because it left their user's hands (the owner it went
    to is recorded): that does not keep it from its new owner."""
    sf_id, t = ev.source_id, event_time(ev)
    ended = [r for r in held if r.owner is not None and r.owner.lower() != r.user.lower()]
    fresh = not any(ev.event_id in r.seen or is_older(t, r.salesforce.modified_at) for r in held)
    if owner and record is not None and fresh and ended and len(ended) == len(held):
        previous = sorted({r.owner or "" for r in ended})
        w.record("owner_changed", ended[0], salesforce_id=sf_id, previous=previous, owner=owner)
        for r in ended:
            w.save(replace(r, owner=owner))
        replace_our_copy(w, ev, owner, record)
        w.replan(owner_link(w, ev, owner, record, None))


def owner_moves(
    w: Work, live: list[LinkRecord], ev: ChangeEvent, owner: str, record: dict[str, Any] | None, known: set[str]
) -> None:
    """The record has a new owner (or one exsf does not sync)."""
    sf_id, t = ev.source_id, event_time(ev)
    lower = owner.lower()
    w.record("owner_changed", live[0], salesforce_id=sf_id, previous=sorted(known), owner=owner or None)
    if owner:
        relinked = False
        for i, r in enumerate(live):
            if r.status == "unlinked" and r.parked and r.exchange.alive:
                # Unlinked only because the record had left enrolled hands: sync again (the
                # event, processed next, merges the record into it).
                w.record("relink", r, reason="salesforce owner enrolled again", salesforce_id=sf_id)
                live[i] = w.save(replace(r, status="pending", owner=owner, parked=False))
                relinked = True
        if relinked and record is not None:
            replace_our_copy(w, ev, owner, record)
    successor = next((r for r in live if owner and r.user.lower() == lower and r.status in ("pending", "linked")), None)
    moving = [
        r
        for r in live
        if r.status in ("pending", "linked") and our_copy(r.exchange) and (not owner or r.user.lower() != lower)
    ]
    if owner and successor is None and record is not None:
        successor = adopting_link(w, ev, owner, record)
        if successor is None:
            successor = owner_link(w, ev, owner, record, moving[0] if moving else None)
    for r in moving:
        successor = move_out(w, r, successor, owner, t)
    done = {r.link_id for r in moving} | ({successor.link_id} if successor is not None else set())
    for r in live:
        if r.link_id in done:
            continue
        r = w.get(r.link_id) or r
        if not owner and r.status in ("pending", "linked"):
            w.record("unlink", r, reason="salesforce owner not enrolled", salesforce_id=sf_id, record=r.desired)
            w.save(replace(watermark(r, t), owner=owner, parked=r.exchange.alive).unlinked("owner_not_enrolled"))
        elif not owner:
            w.save(replace(watermark(r, t), owner=owner))
        else:
            w.save(replace(r, owner=owner))
    if successor is not None:
        successor = w.get(successor.link_id) or successor
        w.replan(replace(successor, owner=owner))


def replace_our_copy(w: Work, ev: ChangeEvent, owner: str, record: dict[str, Any]) -> None:
    """While the record was out of enrolled hands a mailbox may have made the same item, and
    we a Salesforce copy of it: the record back in enrolled hands is the original."""
    for key in match_keys(ev.entity, owner, record, ev.origin.ical_uid):
        for cand in w.find("key", key):
            sf = cand.salesforce
            mine = cand.status in ("pending", "linked", "unlinked") and cand.owner != ""
            if mine and sf.alive and sf.created and sf.id and sf.id != ev.source_id:
                repoint(w, sf.id, ev, record, key)
                return


def adopting_link(w: Work, ev: ChangeEvent, owner: str, record: dict[str, Any]) -> LinkRecord | None:
    """The new owner already syncs a matching item, made in their mailbox while the record
    was on its way to them, with a Salesforce record of our own (or one still being
    created): that pair takes this record, ours is removed, and no second copy is made."""
    for key in match_keys(ev.entity, owner, record, ev.origin.ical_uid):
        for cand in w.find("key", key):
            sf = cand.salesforce
            if (
                cand.entity != ev.entity
                or cand.user.lower() != owner.lower()
                or cand.status not in ("pending", "linked")
                or cand.owner == ""
                or sf.id == ev.source_id
            ):
                continue
            if sf.alive and sf.created and sf.id:
                repoint(w, sf.id, ev, record, key)
                return w.get(cand.link_id)
            if sf.id is None and sf.pending is not None and sf.pending.action == "create":
                # Join now; the create's result then finds the link holding this record
                # and removes what it made.
                st = SideState(id=ev.source_id, version=ev.version, modified_at=event_time(ev), shadow=record)
                return join(w, cand, replace(cand, salesforce=st), key)
    return None


def our_copy(ex: SideState) -> bool:
    """The mailbox item is (or is about to be) one we created, not the mailbox's own."""
    creating = ex.id is None and ex.pending is not None and ex.pending.action == "create"
    return ex.created or creating


def owner_link(w: Work, ev: ChangeEvent, owner: str, record: dict[str, Any], src: LinkRecord | None) -> LinkRecord:
    """The new owner's pair for the record; it starts from the moving link's merged record
    (so edits the previous owner's copy held move along) or from the record itself."""
    t = event_time(ev)
    desired, sf = record, SideState(id=ev.source_id, version=ev.version, modified_at=t, shadow=record)
    if src is not None:
        merged = observe(w, src, "salesforce", ev.source_id, record, ev.version, t)
        desired, sf = merged.desired, replace(merged.salesforce, pending=None, failed=None, retired=())
    ical = src.ical_uid if src is not None else ev.origin.ical_uid
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


def watermark(link: LinkRecord, t: str | None) -> LinkRecord:
    """The owner change at `t` is the record's latest known state: an event from before it
    (delivered late) must not count as the record coming back to an earlier owner."""
    return replace(link, salesforce=replace(link.salesforce, modified_at=t or link.salesforce.modified_at))


def move_out(w: Work, link: LinkRecord, successor: LinkRecord | None, owner: str, t: str | None) -> LinkRecord | None:
    """Remove our copy from a previous owner's mailbox."""
    ex = link.exchange
    if successor is not None and ex.id:
        st = successor.exchange
        successor = w.save(replace(successor, exchange=replace(st, retired=add_retired(st.retired, ex.id))))
    if ex.alive and ex.id:
        discard(w, link, "exchange", ex.id, ex.version, ex.shadow, t=ex.modified_at)
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
    ended = replace(link, status="deleted", owner=owner, exchange=replace(ex, retired=add_retired(ex.retired, ex.id)))
    w.save(watermark(ended, t))
    return successor
