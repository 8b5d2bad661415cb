"""Change events from either side: find the link(s) of the item (by id, then by our
tag), drop stale and repeated inputs, then observe the new content and plan; items we do
not know yet become new links (after dedupe) or tombstones."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Literal, assert_never

from services.core.envelopes import ChangeEvent, Side, stable_id
from services.reconciler.core import merge
from services.reconciler.core.dedupe import match_keys
from services.reconciler.core.discard import copy_changed, discard, discard_copy, repoint
from services.reconciler.core.email import on_email
from services.reconciler.core.ownership import follow_owner
from services.reconciler.core.plan import join, observe, other_record, plan
from services.reconciler.core.state import (
    CopyRecord,
    LinkRecord,
    Pending,
    SideState,
)
from services.reconciler.core.unlinked import follow_unlinked, push_unlinked
from services.reconciler.core.work import Work, add_retired, add_seen, event_time, is_older

UNKNOWN_OWNER = "*"  # user of Salesforce events whose owner the ingestor cannot know


def on_event(w: Work, ev: ChangeEvent) -> None:
    if ev.source == "salesforce" and ev.user == UNKNOWN_OWNER:
        on_ownerless(w, ev)
        return
    user = w.tenant.user_by_mailbox(ev.user)
    if user is None:
        w.record(
            "drop", reason="user not enrolled", source=ev.source, entity=ev.entity, source_id=ev.source_id, user=ev.user
        )
        return
    if ev.entity == "email":
        if ev.source == "exchange":
            on_email(w, ev, user.mailbox)
        return  # Salesforce email tasks never sync back
    record = merge.norm(ev.entity, ev.record) if ev.op == "upsert" else None
    links = w.find(ev.source, ev.source_id)
    copy = w.copy_of(ev.entity, ev.source, ev.source_id)
    if copy is not None and not links:
        on_copy(w, copy, ev, record)
        return
    ours: LinkRecord | None = None  # the link whose create made this item (found by our tag)
    if not links:
        cand = w.get(ev.origin.link_tag) if ev.origin.link_tag is not None else None
        found = by_tag(w, cand, ev, user.mailbox, record) if cand is not None and cand.entity == ev.entity else "new"
        if found == "copy":
            return
        if found == "pair" and cand is not None:
            links, ours = [cand], cand
    if not links:
        if ev.source == "salesforce" and ev.origin.by_exsf:
            # Written by us, yet no link knows the id: our create, its result still on the
            # way (the result links it). Copying it into a mailbox would duplicate it.
            return
        on_new_item(w, ev, user.mailbox, record)
        return
    if ev.source == "salesforce" and record is not None:
        follow_owner(w, links, ev, user.mailbox, record)
    for link in links:
        on_known(w, w.get(link.link_id) or link, ev, record)
    if copy is not None:
        on_copy(w, w.copy(copy.link_id) or copy, ev, record)
    if ours is not None:
        mark_created(w, ours.link_id, ev.source, ev.source_id)


def by_tag(
    w: Work, cand: LinkRecord, ev: ChangeEvent, mailbox: str, record: dict[str, Any] | None
) -> Literal["pair", "copy", "new"]:
    """An item no link knows by id, carrying `cand`'s tag (made by its create): the pair's
    item (its create seen before the result), a copy of ours (handled here), or to be taken
    as a new item."""
    if cand.side(ev.source).id is None:
        if ev.source == "salesforce" and record is not None and cand.status in ("pending", "linked"):
            existing = other_record(w, cand, ev.source_id)
            if existing is not None:
                our_late_copy(w, cand, existing, ev, record)
                return "copy"
        return "pair" if ev.source == "salesforce" or cand.user.lower() == mailbox.lower() else "new"
    if record is None:
        return "new"
    if is_stray_create(cand, ev, mailbox):
        stray_copy(w, cand, ev, record)
    elif is_first_copy(cand, ev, mailbox):
        first_copy(w, cand, ev, record)
    elif is_stray_record(cand, ev):
        # Our create made it, but the pair holds another Salesforce record by now (it
        # matched an original while the create was in flight, or the create was
        # reported failed and applied after all): this one is a copy.
        stray_record(w, cand, ev, record)
    else:
        return "new"
    return "copy"


def mark_created(w: Work, link_id: str, s: Side, item_id: str) -> None:
    """The item our create made is linked (its echo came before the result): remember it is
    our copy, so an original found later replaces it."""
    link = w.get(link_id)
    if link is not None and link.side(s).id == item_id and not link.side(s).created:
        w.save(link.with_side(s, replace(link.side(s), created=True)))


def on_ownerless(w: Work, ev: ChangeEvent) -> None:
    """A Salesforce delete (CDC deletes carry no owner), or the record passing to an owner
    who is not enrolled (op left_scope): it concerns whichever links hold the record."""
    links = w.find("salesforce", ev.source_id)
    copy = w.copy_of(ev.entity, "salesforce", ev.source_id)
    if not links and copy is None:
        # Not seen yet: it may have overtaken the record's own upsert. A tombstone makes
        # that late upsert stale instead of a new copy.
        unlinked = ev.op == "left_scope"
        st = SideState(id=ev.source_id, version=ev.version, modified_at=event_time(ev), gone=not unlinked)
        tomb = LinkRecord(
            tenant_id=ev.tenant_id,
            entity=ev.entity,
            link_id=stable_id("link", ev.tenant_id, ev.entity, "salesforce", ev.source_id),
            user=UNKNOWN_OWNER,
            status="unlinked" if unlinked else "deleted",
            reason="owner_not_enrolled" if unlinked else None,
            salesforce=st,
            owner="" if unlinked else None,
            seen=(ev.event_id,),
        )
        w.save(tomb)
        return
    if ev.op == "left_scope":
        t = event_time(ev)
        if copy is not None and not copy.done and not copy.parked and not is_older(t, copy.item.modified_at):
            # Our copy was being removed, but someone handed it to an owner exsf does
            # not sync: its changes will not reach us, so a delete could only conflict.
            # It waits, kept, until the record is back in enrolled hands.
            w.record("dedupe", copy, reason="copy passed to an owner not enrolled; kept", duplicate_id=ev.source_id)
            w.save_copy(replace(copy.with_item(replace(copy.item, modified_at=t)), parked=True))
        follow_owner(w, links, ev, "", None)
        return
    for link in links:
        on_known(w, w.get(link.link_id) or link, ev, None)
    if copy is not None:
        on_copy(w, w.copy(copy.link_id) or copy, ev, None)


def on_known(w: Work, link: LinkRecord, ev: ChangeEvent, record: dict[str, Any] | None) -> None:
    """A change event of an item this link knows: one handler per link status."""
    if ev.event_id in link.seen:
        return
    match link.status:
        case "deleted":
            on_ended(w, link, ev, record)
        case "pending" | "linked" | "unlinked":
            on_pair(w, link, ev, record)
        case _:
            assert_never(link.status)


def on_ended(w: Work, link: LinkRecord, ev: ChangeEvent, record: dict[str, Any] | None) -> None:
    """A tombstone: the pair is gone; only our own late creates and a move out change it."""
    s, t = ev.source, event_time(ev)
    side = link.side(s)
    fresh = not is_older(t, side.modified_at)
    match ev.op:
        case "delete":
            if side.id == ev.source_id and fresh:
                # The item is gone for good: a late event from before (an owner coming back)
                # must not revive the pair.
                w.save(link.with_side(s, replace(side, gone=True, modified_at=t)))
        case "left_scope":
            if s == "exchange" and side.id == ev.source_id and fresh:
                # Our delete found it gone because it had left the folder: it still exists,
                # unsynced, and may be put back in scope (then it syncs as a new pair).
                ex = replace(side, gone=False, pending=None, modified_at=t)
                w.save(replace(link.with_side(s, ex), seen=add_seen(link.seen, ev.event_id)).unlinked("moved_out"))
        case "upsert":
            if side.id is None and ev.source_id not in side.retired:
                # Found by its tag: a create of ours landed after all (reported failed, then
                # applied by a redelivery) for a pair that is gone. Nothing must keep it.
                discard(w, link, s, ev.source_id, ev.version, record, t=t)
                w.save(link.with_side(s, replace(side, retired=add_retired(side.retired, ev.source_id))))
        case _:
            assert_never(ev.op)


def on_copy(w: Work, copy: CopyRecord, ev: ChangeEvent, record: dict[str, Any] | None) -> None:
    """A change event of a stray copy of ours: being removed, or removed (`done`)."""
    item, t = copy.item, event_time(ev)
    if ev.event_id in copy.seen or is_older(t, item.modified_at):
        return
    seen = add_seen(copy.seen, ev.event_id)
    if ev.source == "exchange" and ev.op == "left_scope":
        # The person moved our copy out of the folder before we removed it (or our delete
        # found it gone because it had): it is theirs now, unsynced; put back in scope it
        # syncs as their own item.
        w.save(replace(copy.as_pair(replace(item, gone=False, pending=None, modified_at=t)), seen=seen))
    elif copy.done:
        if ev.op == "delete":
            # Gone for good: a late event from before must not revive it.
            w.save_copy(copy.with_item(replace(item, gone=True, modified_at=t)))
    elif item.version != ev.version:
        # An event of the copy means it is in enrolled hands (again): remove it.
        copy_changed(w, replace(copy, parked=False, seen=seen), record, ev.version, t)


def on_pair(w: Work, link: LinkRecord, ev: ChangeEvent, record: dict[str, Any] | None) -> None:
    """A pair that syncs (pending, linked) or follows its Salesforce record (unlinked)."""
    s, t = ev.source, event_time(ev)
    side = link.side(s)
    if ev.source_id in side.retired:
        if s == "exchange" and ev.op == "left_scope" and link.status != "unlinked":
            unlinked_after_restore(w, link, ev)
        return
    if is_older(t, side.modified_at) or (ev.op == "upsert" and side.id == ev.source_id and side.version == ev.version):
        return
    # A new input from either side is a fresh reason to retry writes that failed.
    link = replace(
        link,
        seen=add_seen(link.seen, ev.event_id),
        exchange=replace(link.exchange, failed=None),
        salesforce=replace(link.salesforce, failed=None),
    )
    match ev.op:
        case "left_scope" if s == "exchange":
            left_folder(w, link, ev)
        case "delete" | "left_scope":
            deleted(w, link, ev)
        case "upsert":
            assert record is not None
            upserted(w, link, ev, record)
        case _:
            assert_never(ev.op)


def deleted(w: Work, link: LinkRecord, ev: ChangeEvent) -> None:
    s = ev.source
    side = link.side(s)
    if side.id is None:
        # The item our create made (found by its tag) is already deleted again: remember
        # its id, so its late echoes are stale and a result naming it means "gone".
        w.save(link.with_side(s, replace(side, retired=add_retired(side.retired, ev.source_id))))
        return
    link = link.with_side(s, replace(side, gone=True, modified_at=event_time(ev), version=ev.version))
    if link.status == "unlinked":
        push_unlinked(w, link)
    else:
        plan(w, w.save(link))


def upserted(w: Work, link: LinkRecord, ev: ChangeEvent, record: dict[str, Any]) -> None:
    s, t = ev.source, event_time(ev)
    if link.status != "unlinked":
        plan(w, w.save(observe(w, link, s, ev.source_id, record, ev.version, t)))
    elif s == "salesforce":
        link = link.with_side(s, replace(link.salesforce, id=link.salesforce.id or ev.source_id))
        push_unlinked(w, follow_unlinked(w, link, record, ev.version, t))
    else:
        relink(w, link, ev, record)


def left_folder(w: Work, link: LinkRecord, ev: ChangeEvent) -> None:
    """The person moved the mailbox item out of the synced folder: the pair stops syncing
    the mailbox (unlinked) and keeps following its Salesforce record."""
    side = link.exchange
    if link.status != "unlinked":
        w.record("unlink", link, exchange_id=ev.source_id, salesforce_id=link.salesforce.id, record=link.desired)
    # The item is kept by its id even when only its tag found it (our create, its result
    # still to come), so its late echoes are stale and putting it back re-links it. A
    # create in flight stays remembered: its result may name a second copy (a
    # redelivered create) that only what it sent tells apart from a person's edit.
    ex = replace(side, id=side.id or ev.source_id, modified_at=event_time(ev), pending=creating(side))
    w.save(replace(link, parked=False, exchange=ex).unlinked("moved_out"))


def our_late_copy(w: Work, link: LinkRecord, existing: LinkRecord, ev: ChangeEvent, record: dict[str, Any]) -> None:
    """The record our create made (found by its link id) shows up after another pair got a
    record with the same key meanwhile (a create reported failed, then applied): ours is
    the copy. Remove it (edits made to it move over) and join the other record."""
    sf = link.salesforce
    sent = merge.norm(link.entity, sf.pending.fields) if sf.pending and sf.pending.action == "create" else record
    link = link.with_side("salesforce", replace(sf, uncertain=False))
    join(w, discard_copy(w, link, "salesforce", ev.source_id, ev.version, sent, record, event_time(ev)), existing, "")


def is_stray_record(link: LinkRecord, ev: ChangeEvent) -> bool:
    sf = link.salesforce
    return (
        ev.source == "salesforce"
        and link.entity == ev.entity
        and link.status in ("pending", "linked", "deleted")
        and sf.id not in (None, ev.source_id)
        and ev.source_id not in sf.retired
    )


def stray_record(w: Work, link: LinkRecord, ev: ChangeEvent, record: dict[str, Any]) -> None:
    p = link.salesforce.pending
    if p is not None and p.action == "create":
        # What differs from what we sent is someone's edit of the copy: it moves over.
        sent = merge.norm(link.entity, p.fields)
        discard_copy(w, link, "salesforce", ev.source_id, ev.version, sent, record, event_time(ev))
        return
    # What our create sent is no longer known, so an edit of the copy cannot be told
    # apart from it: the copy's content stays in the audit.
    w.record("discarded_edit", link, side="salesforce", target_id=ev.source_id, record=record, before=None)
    discard_copy(w, link, "salesforce", ev.source_id, ev.version, record, t=event_time(ev))


def is_stray_create(link: LinkRecord, ev: ChangeEvent, mailbox: str) -> bool:
    """Our create for `link` made this mailbox item, but the link was attached to a matching
    item of the mailbox while the create was in flight: this one is a second copy. Taking
    it as a new item would give one mailbox two links to the same record, and the copy's
    discard (when the create's result comes) would then delete an item another link syncs."""
    p = link.exchange.pending
    return (
        ev.source == "exchange"
        and link.entity == ev.entity
        and link.user.lower() == mailbox.lower()
        and link.status in ("pending", "linked", "unlinked")
        and p is not None
        and p.action == "create"
        and link.exchange.id not in (None, ev.source_id)
    )


def creating(side: SideState) -> Pending | None:
    """The side's create still in flight, if any (what outlives an unlink or a relink)."""
    p = side.pending
    return p if p is not None and p.action == "create" else None


def is_first_copy(link: LinkRecord, ev: ChangeEvent, mailbox: str) -> bool:
    """An item of our create for `link`, older than the item the pair holds, which our
    create made too: the writer applied the create, died before answering, and applied it
    again (a retry cannot find an item the person deleted or moved meanwhile). The first
    item is the one the person has seen: the pair takes it, and the later one is our copy."""
    ex = link.exchange
    return (
        ev.source == "exchange"
        and link.entity == ev.entity
        and link.user.lower() == mailbox.lower()
        and link.status in ("pending", "linked")
        and ex.created
        and ex.pending is None
        and ex.id not in (None, ev.source_id)
        and is_older(event_time(ev), ex.modified_at)
    )


def first_copy(w: Work, link: LinkRecord, ev: ChangeEvent, record: dict[str, Any]) -> None:
    ex = link.exchange
    assert ex.id is not None
    w.record(
        "dedupe",
        link,
        reason="an earlier item of our create found",
        side="exchange",
        kept_id=ev.source_id,
        duplicate_id=ex.id,
    )
    first = SideState(
        id=ev.source_id,
        version=ev.version,
        modified_at=event_time(ev),
        shadow=record,
        retired=add_retired(ex.retired, ex.id),
        created=True,
    )
    link = w.save(replace(link.with_side("exchange", first), seen=add_seen(link.seen, ev.event_id)))
    discard(w, link, "exchange", ex.id, ex.version, ex.shadow, t=ex.modified_at)
    plan(w, w.get(link.link_id) or link)


def stray_copy(w: Work, link: LinkRecord, ev: ChangeEvent, record: dict[str, Any]) -> None:
    """Remove our second copy; edits someone already made to it move to the link."""
    assert link.exchange.pending is not None
    sent = merge.norm(link.entity, link.exchange.pending.fields)
    discard_copy(w, link, "exchange", ev.source_id, ev.version, sent, record, event_time(ev))


def unlinked_after_restore(w: Work, link: LinkRecord, ev: ChangeEvent) -> None:
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
        discard(w, link, "exchange", ex.id, ex.version, ex.shadow, t=ex.modified_at)
    retired = tuple(i for i in add_retired(ex.retired, ex.id) if i != ev.source_id)
    unlinked = SideState(id=ev.source_id, modified_at=event_time(ev), retired=retired)
    w.save(replace(link.with_side("exchange", unlinked), seen=add_seen(link.seen, ev.event_id)).unlinked("moved_out"))


def relink(w: Work, link: LinkRecord, ev: ChangeEvent, record: dict[str, Any]) -> None:
    """An unlinked mailbox item came back in scope (category re-added): sync it again,
    merging with the Salesforce record as two items that never agreed."""
    if link.owner == "" and link.salesforce.alive:
        # Its record belongs to someone who is not enrolled: the item stays the mailbox's
        # own, its edits kept for when the record comes back into enrolled hands.
        link = observe(w, link, "exchange", ev.source_id, record, ev.version, event_time(ev))
        w.save(replace(link, parked=True, seen=add_seen(link.seen, ev.event_id)))
        return
    ex = SideState(
        id=ev.source_id,
        version=ev.version,
        modified_at=event_time(ev),
        shadow=record,
        retired=link.exchange.retired,
        pending=creating(link.exchange),
    )
    sf = link.salesforce
    # While unlinked, `desired` followed the Salesforce record and also holds edits carried
    # from a discarded copy that are still on their way to it: join with that.
    followed = link.desired or sf.shadow
    link = replace(link, status="pending", exchange=ex, base=None, base_hash=None, desired=record)
    if sf.alive and sf.shadow is not None:
        desired, conflicts = merge.join(
            link.entity, record, followed or {}, w.tenant.conflict_policy, event_time(ev), sf.modified_at
        )
        w.conflicts(link, conflicts)
        link = replace(link, desired=desired)
    elif sf.pending is None:
        # Its record is gone: the item gets a new one, owned by its user (not whoever
        # owned the old one, which would keep other mailboxes from joining it).
        retired = add_retired(sf.retired, sf.id)
        link = replace(link, salesforce=SideState(retired=retired), owner=None)
    w.record("relink", link, exchange_id=ev.source_id, salesforce_id=link.salesforce.id)
    plan(w, w.save(replace(link, seen=(ev.event_id,))))


def on_new_item(w: Work, ev: ChangeEvent, mailbox: str, record: dict[str, Any] | None) -> None:
    s: Side = ev.source
    st = SideState(id=ev.source_id, version=ev.version, modified_at=event_time(ev), shadow=record, gone=record is None)
    link = LinkRecord(
        tenant_id=ev.tenant_id,
        entity=ev.entity,
        link_id=stable_id("link", ev.tenant_id, ev.entity, s, ev.source_id),
        user=mailbox,
        status="pending",
        desired=record or {},
        ical_uid=ev.origin.ical_uid,
        owner=mailbox if s == "salesforce" else None,
        seen=(ev.event_id,),
    ).with_side(s, st)
    if record is None:
        # A delete (or a move out of scope) for an item we never saw; it may have overtaken
        # its own upsert. A tombstone makes that late upsert stale instead of a new copy;
        # an unlinked one still lets the item come back in scope later.
        if s == "exchange" and ev.op == "left_scope":
            w.save(link.with_side(s, replace(st, gone=False)).unlinked("moved_out"))
        else:
            w.save(replace(link, status="deleted"))
    elif s == "exchange":
        new_mailbox_item(w, link, ev, record)
    else:
        new_salesforce_item(w, link, ev, record)


def new_mailbox_item(w: Work, link: LinkRecord, ev: ChangeEvent, record: dict[str, Any]) -> None:
    mailbox = link.user.lower()
    for key in match_keys(ev.entity, link.user, record, link.ical_uid):
        for cand in w.find("key", key):
            ex = cand.exchange
            if cand.user.lower() == mailbox and ex.id is None and ex.pending is not None and cand.status != "deleted":
                on_known(w, cand, ev, record)  # our own create into this mailbox, seen before its result
                return
    plan(w, w.save(link))


def new_salesforce_item(w: Work, link: LinkRecord, ev: ChangeEvent, record: dict[str, Any]) -> None:
    for key in match_keys(ev.entity, link.user, record, link.ical_uid):
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
                on_known(w, replace(cand, owner=cand.owner or link.user), ev, record)
                return
        ours = [c for c in cands if c.salesforce.alive and c.salesforce.created]
        if ours:
            repoint(w, ours[0].salesforce.id or "", ev, record, key)
            return
        synced = [c for c in cands if c.salesforce.alive and c.status != "unlinked"]
        if synced:
            # Salesforce itself already holds a synced record with this key: copying this
            # one into the mailbox would make a duplicate there. Track it, do not sync.
            w.record(
                "dedupe",
                link,
                reason="salesforce duplicate not synced",
                salesforce_id=ev.source_id,
                key=key,
                matches=[c.salesforce.id for c in synced],
                record=record,
            )
            w.save(link.unlinked("salesforce_duplicate"))
            return
    plan(w, w.save(link))
