"""Stray copies: items we created that turn out to duplicate an existing one. Each gets a
copy record (state.CopyRecord) so its delete is tracked like any write, and edits made
to the copy meanwhile move to the links that replaced it."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from services.core.envelopes import ChangeEvent, Side
from services.reconciler.core import merge
from services.reconciler.core.plan import observe
from services.reconciler.core.state import (
    CopyRecord,
    LinkRecord,
    SideState,
    copy_id,
    other,
)
from services.reconciler.core.work import Work, add_retired, add_seen, event_time


def discard(
    w: Work,
    owner: LinkRecord,
    s: Side,
    item_id: str,
    version: str | None,
    shadow: dict[str, Any] | None,
    current: dict[str, Any] | None = None,
    t: str | None = None,
) -> None:
    """Delete a copy we made that turned out to duplicate an existing item. It gets its own
    record so the delete is tracked like any write (retried, conflict-checked), and edits
    someone made to the copy meanwhile move to the links that replaced it (the links
    holding `item_id` among their retired ids): those already in `current` (the copy as it
    is now, when it differs from `shadow`, what we made) at once, later ones as they come."""
    cid = copy_id(owner.tenant_id, owner.entity, s, item_id)
    if w.copy(cid) is not None or w.get(cid) is not None:
        return
    st = SideState(id=item_id, version=version, modified_at=t, shadow=dict(shadow or {}), created=True)
    copy = CopyRecord(owner.tenant_id, owner.entity, cid, owner.user, s, st)
    w.record("dedupe", owner, reason="removing our duplicate copy", side=s, duplicate_id=item_id, record=shadow)
    copy = w.save_copy(remove(w, copy))
    if current is not None and not merge.same(shadow, current):
        copy_changed(w, copy, current, version, t)


def discard_copy(
    w: Work,
    link: LinkRecord,
    s: Side,
    item_id: str,
    version: str | None,
    sent: dict[str, Any],
    current: dict[str, Any] | None = None,
    t: str | None = None,
) -> LinkRecord:
    """A copy our create made for `link`: retire its id on the pair's side (so its late
    events are stale and its edits find the pair), then discard it. Returns the pair as
    it is after edits already in `current` moved over."""
    side = link.side(s)
    link = w.save(link.with_side(s, replace(side, retired=add_retired(side.retired, item_id))))
    discard(w, link, s, item_id, version, sent, current, t)
    return w.get(link.link_id) or link


def remove(w: Work, copy: CopyRecord) -> CopyRecord:
    """Send the copy's delete, unless one is in flight, it waits (failed, parked) or it is gone."""
    item = copy.item
    if item.pending is not None or item.failed is not None or item.id is None or copy.parked:
        return copy
    if item.gone:
        return replace(copy, done=True)
    return w.delete_copy(copy)


def copy_changed(w: Work, copy: CopyRecord, fresh: dict[str, Any] | None, version: str | None, t: str | None) -> None:
    """The copy changed (someone edited it) or vanished; carry edits over, then delete."""
    s, item = copy.side, copy.item
    if fresh is None:
        w.save_copy(replace(copy.with_item(replace(item, gone=True)), done=True))
        return
    old = item.shadow or {}
    assert item.id is not None
    successors = [c for c in w.find(s, item.id) if item.id in c.side(s).retired and takes_edits(c)]
    if not successors and not merge.same(old, fresh):
        w.record("discarded_edit", copy, side=s, target_id=item.id, record=fresh, before=old)
    for succ in successors:
        o = succ.side(other(s))
        desired, conflicts = merge.absorb(
            succ.entity, succ.desired, old, fresh, s, w.tenant.conflict_policy, t, o.modified_at
        )
        w.conflicts(succ, conflicts)
        w.replan(replace(succ, desired=desired))
    copy = copy.with_item(replace(item, shadow=fresh, version=version, modified_at=t or item.modified_at))
    w.save_copy(remove(w, copy))


def takes_edits(link: LinkRecord) -> bool:
    """Can edits made to a discarded copy move to this link? A pair that left its mailbox
    (unlinked) still holds its Salesforce record, which takes edits made to a copy on
    either side (a mailbox copy of ours sat in the synced folder, so an edit there was
    meant to sync); a parked pair's record belongs to someone exsf does not sync."""
    if link.status in ("pending", "linked"):
        return True
    return link.status == "unlinked" and not link.parked and link.salesforce.id is not None


def repoint(w: Work, s_old: str, ev: ChangeEvent, record: dict[str, Any], key: str) -> None:
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
    t = event_time(ev)
    for link in links:
        fresh = SideState(retired=add_retired(link.salesforce.retired, s_old))
        # The original never agreed with what the pair agreed with our copy: no base, so
        # a delete of the original cannot take an edit it never saw for agreed.
        link = replace(
            link.with_side("salesforce", fresh), base=None, base_hash=None, seen=add_seen(link.seen, ev.event_id)
        )
        if link.status == "unlinked":
            # No mailbox item to sync, but someone may have edited our copy in Salesforce:
            # what the copy holds and the original lacks moves to the original; where both
            # hold a value the original keeps its own (the conflict is audited).
            desired, conflicts = merge.join(link.entity, old_side.shadow or {}, record, "salesforce-wins", None, None)
            w.conflicts(link, conflicts, "salesforce-wins")
            st = replace(fresh, id=ev.source_id, version=ev.version, modified_at=t, shadow=record)
            w.replan(replace(link.with_side("salesforce", st), desired=desired))
            continue
        w.replan(observe(w, link, "salesforce", ev.source_id, record, ev.version, t))
    discard(w, links[0], "salesforce", s_old, old_side.version, old_side.shadow, t=old_side.modified_at)
