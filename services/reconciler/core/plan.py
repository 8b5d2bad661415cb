"""Observing a side's content (three-way merge into `desired`) and planning what each
side must be sent: creates (after dedupe against the tenant's other links), updates,
and deletes (edit beats delete; a delete in one mailbox only unlinks while others sync)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, assert_never

from services.core.envelopes import CommandContext, Side
from services.reconciler.core import merge
from services.reconciler.core.email import email_create
from services.reconciler.core.state import (
    Absent,
    Creating,
    Gone,
    LinkRecord,
    Pending,
    Present,
    SideState,
    Stalled,
    Writing,
    other,
    phase,
)
from services.reconciler.core.work import Work, add_retired, later


def observe(
    w: Work,
    link: LinkRecord,
    s: Side,
    item_id: str,
    record: dict[str, Any],
    version: str | None,
    t: str | None,
    written: Pending | None = None,
) -> LinkRecord:
    """Fold a side's current content into the link (merge + conflict audit). `written`: an
    update we sent to this side (default: the one in flight), whose values showing up are
    our write landing, not the side's edit."""
    side = link.side(s)
    o = link.side(other(s))
    policy = w.tenant.conflict_policy
    pend = side.pending
    if written is None and pend is not None and pend.action == "update":
        written = pend
    mine: dict[str, Any] = {}  # fields of `record` that are our write landing
    filled: dict[str, Any] = {}  # what the side filled in by itself on our create
    conflicts: list[merge.Conflict]
    if pend is not None and pend.action == "create":
        filled = merge.filled_in(link.entity, s, pend.fields, record)
    if (
        side.shadow is None
        and pend is not None
        and pend.action == "create"
        and merge.same(record, {**pend.fields, **filled})
    ):
        # Our create showing up (echo) before its result. Anything else, even carrying
        # our tag (a stale copy moved back in), is merged as an item that never agreed.
        desired, conflicts, mine = {**link.desired, **filled}, [], record
        written = pend
    elif side.shadow is not None and written is not None:
        # Fields holding what our update wrote are ours, not an edit of this side: merge
        # against the shadow as our write left it, so a newer edit of the other side made
        # meanwhile is not taken for a conflict (and lost to our own stale value).
        mine = {f: v for f, v in written.fields.items() if record.get(f) == v}
        landed = merge.apply_patch(link.entity, side.shadow, mine)
        desired, conflicts = merge.absorb(link.entity, link.desired, landed, record, s, policy, t, o.modified_at)
    elif side.shadow is None:
        ex, sf = (record, link.desired) if s == "exchange" else (link.desired, record)
        ex_t, sf_t = (t, o.modified_at) if s == "exchange" else (o.modified_at, t)
        desired, conflicts = merge.join(link.entity, ex, sf, policy, ex_t, sf_t)
    else:
        desired, conflicts = merge.absorb(link.entity, link.desired, side.shadow, record, s, policy, t, o.modified_at)
    w.conflicts(link, conflicts)
    st = replace(
        side,
        id=side.id or item_id,
        shadow=record,
        version=version,
        modified_at=later(t, side.modified_at),
        gone=False,
    )
    if mine and written is not None:
        st = st.wrote(written, mine, filled)
    return replace(link.with_side(s, st), desired=desired)


def plan(w: Work, link: LinkRecord) -> LinkRecord:
    if link.status in ("unlinked", "deleted"):
        return link
    ex, sf = link.exchange, link.salesforce
    if link.entity == "email":
        if isinstance(phase(sf), Absent):
            link = w.save(email_create(w, link))
        return link
    match phase(ex), phase(sf):
        case (Gone(), Creating() | Writing()) | (Creating() | Writing(), Gone()):
            return link  # a delete is decided only when nothing is in flight
        case (Writing(gone=True), _) | (_, Writing(gone=True)):
            return link
        case (Gone(), _) | (_, Gone()):
            return plan_delete(w, link)
        case _:
            for s in ("exchange", "salesforce"):
                link = plan_side(w, link, s)
            return w.save(link)


def plan_side(w: Work, link: LinkRecord, s: Side) -> LinkRecord:
    """Bring one side to `desired`: one command in flight at a time."""
    side = link.side(s)
    match phase(side):
        case Absent():
            return plan_create(w, link, s)
        case Present(id=item_id) if not merge.same(side.shadow, link.desired):
            if s == "salesforce" and sibling_writing(w, link, item_id):
                return link  # its result re-plans this link (results.release_siblings)
            fields = merge.patch(link.entity, side.shadow, link.desired)
            return w.command(link, s, "update", item_id, fields, side.version)
        case Present() | Creating() | Writing() | Stalled():
            return link  # in sync, in flight, or a failed write waiting for the next change or the sweep
        case Gone():
            raise AssertionError("a gone side is planned by plan_delete")
        case _:
            assert_never(phase(side))


def sibling_writing(w: Work, link: LinkRecord, sf_id: str) -> bool:
    """One write in flight per Salesforce record, not per link: several mailbox items may
    sync one record, and two updates sent at once (unconditional when the service knows no
    time for If-Unmodified-Since) would let the later overwrite the earlier unseen."""
    return any(
        c.link_id != link.link_id and c.salesforce.id == sf_id and c.salesforce.pending is not None
        for c in w.find("salesforce", sf_id)
    )


def plan_create(w: Work, link: LinkRecord, s: Side) -> LinkRecord:
    if s == "salesforce":
        # Dedupe before any create: join an existing Salesforce record, or wait for a
        # create another link already has in flight for the same key.
        for key in link.match_keys():
            for cand in w.find("key", key):
                if cand.link_id == link.link_id or cand.status == "deleted" or cand.salesforce.gone:
                    continue
                if cand.owner == "":
                    continue  # its owner is not enrolled: we would not see its changes
                if cand.salesforce.id in link.salesforce.retired:
                    continue  # we know that record is gone; its other links will learn it
                if cand.salesforce.alive and cand.salesforce.shadow is not None:
                    return join(w, link, cand, key)
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
        ctx = CommandContext(owner_id=user.salesforce_user_id if user else None)
    else:
        ctx = CommandContext(mailbox=link.user)
    return w.command(link, s, "create", None, dict(link.desired), None, ctx)


def join(w: Work, link: LinkRecord, cand: LinkRecord, key: str) -> LinkRecord:
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
        content_time(cand, "salesforce"),
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
        # What exsf wrote to the record (for the link that holds it) is no person's edit of
        # it for this link either.
        ours=sf.ours,
        ours_at=sf.ours_at,
    )
    link = replace(link.with_side("salesforce", joined), desired=desired, owner=link.owner or cand.owner)
    return plan(w, w.save(link))


def other_record(w: Work, link: LinkRecord, sf_id: str) -> LinkRecord | None:
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


def carried_values(link: LinkRecord) -> dict[str, Any]:
    """The values of `desired` that neither side's last content nor the base held (edits
    carried from a copy of ours removed since)."""
    ex, sf, base = link.exchange.shadow or {}, link.salesforce.shadow or {}, link.base or {}
    return {
        f: v
        for f, v in link.desired.items()
        if v is not None and v != base.get(f) and v != ex.get(f) and v != sf.get(f)
    }


def unseen_values(link: LinkRecord) -> bool:
    """Does `desired` hold a value that neither side's last content nor the base held?"""
    return bool(carried_values(link))


def restored(link: LinkRecord, alive: SideState) -> dict[str, Any]:
    if alive.shadow is None:
        return link.desired
    return merge.norm(link.entity, {**alive.shadow, **carried_values(link)})


def active_siblings(w: Work, link: LinkRecord, sf_id: str) -> list[LinkRecord]:
    """Other mailbox items that sync this Salesforce record, or will: a link still waiting
    to join a record with its key (its create waits for ours) is one too."""
    linked = [
        c
        for c in w.find("salesforce", sf_id)
        if c.link_id != link.link_id
        and c.status in ("pending", "linked")
        and c.salesforce.id == sf_id
        and not c.salesforce.gone
        and c.exchange.alive
    ]
    waiting = [
        c
        for key in link.match_keys()
        for c in w.find("key", key)
        if c.link_id != link.link_id
        and c.status == "pending"
        and c.salesforce.id is None
        and c.salesforce.pending is None
        and c.exchange.alive
    ]
    return linked + waiting


def content_time(link: LinkRecord, s: Side) -> str | None:
    """When a side's content was last changed by a person: content exsf wrote there carries
    the time of the edit it came from, not the time of our write (else a stale copy of
    ours would beat a newer edit under latest-wins)."""
    side = link.side(s)
    return side.ours_at if side.holds_ours() else side.modified_at


def person_edit(alive: SideState, base: dict[str, Any] | None, deleted: dict[str, Any] | None) -> bool:
    """Edit beats delete only for a person's edit: a value the surviving side holds because
    exsf wrote it (say a create from a backlog, older than the delete behind it) is not one."""
    held, ours, gone = alive.shadow or {}, alive.ours or {}, deleted or {}
    persons = {f: gone.get(f) if f in ours and ours[f] == v else v for f, v in held.items()}
    persons.update({f: gone.get(f) for f, v in ours.items() if v is None and f not in held})  # we cleared it
    return merge.has_new_content(persons, base, deleted)


def plan_delete(w: Work, link: LinkRecord) -> LinkRecord:
    ex, sf = link.exchange, link.salesforce
    if (ex.gone or ex.id is None) and (sf.gone or sf.id is None):
        if unseen_values(link):
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
                exchange=SideState(retired=add_retired(ex.retired, ex.id), modified_at=ex.modified_at),
                salesforce=SideState(retired=add_retired(sf.retired, sf.id), modified_at=sf.modified_at),
            )
            return plan(w, w.save(link))
        w.record("delete", link, reason="gone on both sides", record=link.desired)
        return w.save(replace(link, status="deleted"))
    s: Side = "exchange" if ex.gone else "salesforce"
    o: Side = other(s)
    gone, alive = link.side(s), link.side(o)
    if s == "exchange" and alive.id and active_siblings(w, link, alive.id):
        # Other mailboxes still sync this Salesforce record: this mailbox dropped its
        # copy, the record stays for them.
        w.record(
            "unlink",
            link,
            reason="deleted in one mailbox, salesforce record still linked elsewhere",
            salesforce_id=alive.id,
            record=link.desired,
        )
        return w.save(link.unlinked("deleted_here"))
    if person_edit(alive, link.base, gone.shadow) or unseen_values(link):
        # Edit beats delete: recreate on the side that deleted, with what the surviving side
        # holds (the deleting side's own edits ended with its delete, even those that won
        # a conflict) plus any edit no side holds yet (one carried from a copy removed since).
        retired = add_retired(gone.retired, gone.id)
        link = replace(link, desired=restored(link, alive))
        w.record(
            "restore", link, side=s, deleted_id=gone.id, record=link.desired, base=link.base, surviving=alive.shadow
        )
        link = link.with_side(s, SideState(retired=retired, modified_at=gone.modified_at))
        return plan(w, w.save(link))
    w.record("delete", link, side=o, target_id=alive.id, record=alive.shadow)
    link = w.command(link, o, "delete", alive.id, {}, alive.version)
    return w.save(link)
