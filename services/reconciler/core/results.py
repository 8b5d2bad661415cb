"""Command results from the writers: link new items, advance versions and shadows, re-merge
on `conflict`, follow the delete rules on `gone`, and remove items made by creates we
had already written off or that turned out to duplicate an original."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, assert_never

from services.core.envelopes import CommandResult, Side
from services.reconciler.core import merge
from services.reconciler.core.discard import copy_changed, discard, discard_copy, remove
from services.reconciler.core.plan import join, observe, other_record, plan, unseen_values
from services.reconciler.core.state import CopyRecord, LinkRecord, Pending, SideState, other
from services.reconciler.core.unlinked import follow_unlinked, push_unlinked
from services.reconciler.core.work import Work, add_retired, is_older


def on_result(w: Work, r: CommandResult) -> None:
    """A writer's answer to a command: one handler per link status."""
    copy = w.copy(r.link_id)
    if copy is not None and copy.entity == r.entity:
        p = copy.item.pending
        if p is not None and p.command_id == r.command_id:
            copy_result(w, copy.with_item(replace(copy.item, pending=None)), p, r)
        return  # otherwise a duplicate or superseded result: already handled
    link = w.get(r.link_id)
    if link is None or link.entity != r.entity:
        w.record("drop", reason="result for unknown link", link_id=r.link_id, command_id=r.command_id)
        return
    side = link.side(r.target)
    p = side.pending
    if p is None or p.command_id != r.command_id:
        if r.status == "applied" and r.target_id and r.target_id != side.id and r.target_id not in side.retired:
            late_create(w, link, r)
        return  # otherwise a duplicate or superseded result: already handled
    link = link.with_side(r.target, replace(side, pending=None))
    match link.status:
        case "deleted":
            # The pair ended while its create was in flight (the record moved to another
            # owner): nothing keeps what the create made.
            made = r.status == "applied" and p.action == "create" and r.target_id
            if made and r.target_id not in side.retired:
                link = discard_made(w, link, r.target, r, merge.norm(link.entity, p.fields))
            w.save(link)
        case "pending" | "linked" | "unlinked":
            pair_result(w, link, p, r)
        case _:
            assert_never(link.status)


def copy_result(w: Work, copy: CopyRecord, p: Pending, r: CommandResult) -> None:
    """The delete of a stray copy of ours."""
    item = copy.item
    match r.status:
        case "applied" | "gone":
            w.save_copy(replace(copy.with_item(replace(item, gone=True)), done=True))
            retry_successors(w, copy.side, item.id)
        case "failed":
            w.save_copy(copy.with_item(replace(item, failed=r.error or "failed")))
        case "conflict" if r.record is not None:
            copy_changed(w, copy, merge.norm(copy.entity, r.record), r.new_version, r.modified_at)
        case "conflict" if item.version != p.expected_version:
            # A newer version was seen (and its edits carried) while the delete was in
            # flight: delete that one.
            w.save_copy(remove(w, copy))
        case "conflict":
            w.save_copy(copy)  # wait for the change event with the fresh content
        case _:
            assert_never(r.status)


def pair_result(w: Work, link: LinkRecord, p: Pending, r: CommandResult) -> None:
    s: Side = r.target
    side = link.side(s)
    match r.status:
        case "failed":
            write_failed(w, link, p, r)
            return
        case "gone" if p.action == "create":
            write_failed(w, link, p, r)
            return
        case _ if link.entity == "email":
            email_result(w, link, p, r)
            return
        case "applied":
            link = applied(w, link, s, p, r)
        case "conflict":
            conflicted = conflict(w, link, p, r)
            if conflicted is None:
                return
            link = conflicted
        case "gone":  # deleted meanwhile; for an update that carried an edit, planning restores it
            link = link.with_side(s, replace(side, gone=True, modified_at=r.modified_at or side.modified_at))
        case _:
            assert_never(r.status)
    if link.status == "unlinked":
        push_unlinked(w, link)
    elif link.status == "deleted":
        w.save(link)
    else:
        plan(w, w.save(link))
    if s == "salesforce":
        release_siblings(w, link.link_id, link.salesforce.id or r.target_id)


def release_siblings(w: Work, link_id: str, sf_id: str | None) -> None:
    """The record's write in flight is answered: links of the same record that waited for
    it (plan.sibling_writing) plan again."""
    for sib in w.find("salesforce", sf_id) if sf_id else []:
        if sib.link_id != link_id and sib.status in ("pending", "linked") and sib.salesforce.pending is None:
            w.replan(sib)


def write_failed(w: Work, link: LinkRecord, p: Pending, r: CommandResult) -> None:
    s: Side = r.target
    side = link.side(s)
    error = r.error or r.status
    w.record("failed", link, side=s, action=p.action, command_id=r.command_id, error=error, fields=p.fields)
    # A create reported failed may still have happened (a writer that died after the
    # call, then failed the redelivery): remember that until the side has an item.
    uncertain = side.uncertain or (p.action == "create" and side.id is None)
    link = w.save(link.with_side(s, replace(side, failed=error, uncertain=uncertain)))
    plan(w, link)  # a delete decision may have waited for this command
    if s == "salesforce":
        release_siblings(w, link.link_id, side.id or r.target_id)


def email_result(w: Work, link: LinkRecord, p: Pending, r: CommandResult) -> None:
    s: Side = r.target
    side = link.side(s)
    if r.status == "applied" and r.target_id:
        w.save(link.with_side(s, replace(side, id=r.target_id, version=r.new_version)))
    else:  # an email task cannot conflict; gone means it was deleted, so create again
        w.record("failed", link, side=s, action=p.action, command_id=r.command_id, error=r.status)
        w.save(link.with_side(s, replace(side, failed=r.status)))


def conflict(w: Work, link: LinkRecord, p: Pending, r: CommandResult) -> LinkRecord | None:
    """The side changed under our write (412): fold its fresh content in, or wait for its
    change event (None) when the writer could not read it."""
    s: Side = r.target
    side = link.side(s)
    if r.record is not None and r.new_version != side.version and not is_older(r.modified_at, side.modified_at):
        fresh = merge.norm(link.entity, r.record)
        if link.status == "unlinked" and s == "salesforce":
            return follow_unlinked(w, link, fresh, r.new_version, r.modified_at)
        # A redelivered update finds the item changed by its own first attempt:
        # what it wrote is no edit of that side.
        written = p if p.action == "update" else None
        return observe(w, link, s, side.id or r.target_id or "", fresh, r.new_version, r.modified_at, written)
    if side.version == p.expected_version:
        # Fresh content unknown: its change event will come and re-plan; planning now
        # would only repeat the same stale write.
        w.save(link)
        return None
    return link


def removing(w: Work, link: LinkRecord, s: Side, item_id: str) -> CopyRecord | None:
    """The copy record of `item_id`, if it is a copy of ours still being removed."""
    copy = w.copy_of(link.entity, s, item_id)
    return copy if copy is not None and not copy.done else None


def retry_successors(w: Work, s: Side, item_id: str | None) -> None:
    """A copy is gone: links whose create found it while it was being removed create now."""
    for succ in w.find(s, item_id) if item_id else []:
        side = succ.side(s)
        waiting = item_id in side.retired and side.id is None and side.failed and side.pending is None
        if waiting and succ.status in ("pending", "linked", "unlinked"):
            w.replan(succ.with_side(s, replace(side, failed=None)))


def late_create(w: Work, link: LinkRecord, r: CommandResult) -> None:
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
        link = take_created(w, link, s, r, record)
        if link.entity != "email" and link.status not in ("unlinked", "deleted"):
            link = plan(w, w.save(link))
        w.save(link)
        return
    if link.entity == "email":
        return  # an email task is never deleted by us
    discard(w, link, s, r.target_id, r.new_version, record, t=r.modified_at)
    w.save(link.with_side(s, replace(side, retired=add_retired(side.retired, r.target_id))))


def discard_made(w: Work, link: LinkRecord, s: Side, r: CommandResult, sent: dict[str, Any]) -> LinkRecord:
    """Remove the item our create made (a second copy). A retried create returns the item as
    it is now: what differs from what we sent is someone's edit, and moves to this link."""
    assert r.target_id is not None
    current = merge.norm(link.entity, r.record) if r.record is not None else sent
    return discard_copy(w, link, s, r.target_id, r.new_version, sent, current, r.modified_at)


def take_created(
    w: Work, link: LinkRecord, s: Side, r: CommandResult, sent: dict[str, Any], p: Pending | None = None
) -> LinkRecord:
    """Our create made item r.target_id on side s (the side had none)."""
    assert r.target_id is not None
    side = link.side(s)
    record = merge.norm(link.entity, r.record) if r.record is not None else sent
    if s == "salesforce" and link.entity != "email":
        existing = other_record(w, link, r.target_id)
        if existing is not None:
            # Another link got the original meanwhile (its event overtook our create):
            # ours is the copy. Follow the original, discard ours.
            if link.status == "unlinked":
                # Point at the original first, so edits already made to our copy move to it.
                sf = existing.salesforce
                st = replace(side, id=sf.id, version=sf.version, modified_at=sf.modified_at, shadow=sf.shadow)
                link = w.save(replace(link.with_side(s, st), desired=dict(sf.shadow or {})))
                return discard_made(w, link, s, r, sent)
            link = discard_made(w, link, s, r, sent)
            return join(w, link, existing, "")
    if side.uncertain and not merge.same(record, sent):
        # An earlier attempt, reported failed, made the item with older content: what it
        # holds is not an edit of what we sent now. Merge the two as records that never
        # agreed (conflicts audited), then bring the item up to date.
        o = link.side(other(s))
        ex_rec, sf_rec = (record, link.desired) if s == "exchange" else (link.desired, record)
        ex_t, sf_t = (r.modified_at, o.modified_at) if s == "exchange" else (o.modified_at, r.modified_at)
        desired, conflicts = merge.join(link.entity, ex_rec, sf_rec, w.tenant.conflict_policy, ex_t, sf_t)
        w.conflicts(link, conflicts)
        st = replace(side, created=True, id=r.target_id, shadow=record, version=r.new_version, gone=False)
        link = replace(link.with_side(s, replace(st, uncertain=False)), desired=desired)
        refresh_waiters(w, link)
        return link
    # What we sent is the shadow, with what the side filled in by itself; anything else in
    # the returned record is someone's edit of the new item (a retried create returns the
    # item as it is now).
    filled = merge.filled_in(link.entity, s, sent, record)
    sent = {**sent, **filled}
    link = replace(link, desired={**link.desired, **filled})
    st = replace(side, created=True, id=r.target_id, shadow=sent, gone=False, uncertain=False)
    link = link.with_side(s, st.wrote(p, sent, filled) if p is not None else st)
    if link.status == "unlinked":
        st = replace(link.side(s), shadow=record, version=r.new_version)
        return replace(link.with_side(s, st), desired=record)
    link = observe(w, link, s, r.target_id, record, r.new_version, r.modified_at)
    refresh_waiters(w, link)
    return link


def applied(w: Work, link: LinkRecord, s: Side, p: Pending, r: CommandResult) -> LinkRecord:
    side = link.side(s)
    match p.action:
        case "delete":
            return link.with_side(s, replace(side, gone=True, modified_at=r.modified_at or side.modified_at))
        case "create" if r.target_id and r.target_id in side.retired and side.id is None:
            return made_retired(w, link, s, r)
        case "create":
            return created(w, link, s, p, r)
        case "update":
            return updated(w, link, s, p, r)
        case _:
            assert_never(p.action)


def made_retired(w: Work, link: LinkRecord, s: Side, r: CommandResult) -> LinkRecord:
    """Our create names an item the side already retired."""
    assert r.target_id is not None
    side = link.side(s)
    record = merge.norm(link.entity, r.record) if r.record is not None else None
    copy = removing(w, link, s, r.target_id)
    if copy is not None and copy.parked:
        # Idempotent creates find an item by our link id: this one is a copy of
        # ours that someone handed to an owner exsf does not sync. No other item
        # can carry the link id, so it is the pair's, parked like any record that
        # left enrolled hands (it syncs again when it comes back).
        w.save_copy(replace(copy, done=True))
        w.record("unlink", link, reason="salesforce owner not enrolled", salesforce_id=r.target_id)
        retired = tuple(x for x in side.retired if x != r.target_id)
        st = replace(side, id=r.target_id, version=r.new_version, shadow=record, retired=retired)
        return replace(link.with_side(s, st), owner="", parked=link.exchange.alive).unlinked("owner_not_enrolled")
    if copy is not None:
        # A copy of ours still being removed: create again once it is gone (or at
        # the sweep), rather than take it for deleted and restore in a loop.
        return link.with_side(s, replace(side, failed="a copy with this link id is still being removed"))
    return link.with_side(s, replace(side, id=r.target_id, gone=True))  # created, then deleted already


def created(w: Work, link: LinkRecord, s: Side, p: Pending, r: CommandResult) -> LinkRecord:
    side = link.side(s)
    record = merge.norm(link.entity, r.record) if r.record is not None else None
    sent = merge.norm(link.entity, p.fields)
    edited = record is not None and not merge.same(record, sent)
    other_item = side.id is not None and r.target_id and side.id != r.target_id
    if other_item and side.gone and (edited or unseen_values(link)):
        # The item the pair held meanwhile is deleted, and ours holds an edit no
        # delete saw (made to it, or the one a restore carries): it is the pair's now.
        w.record("adopt", link, side=s, target_id=r.target_id, reason="the item the pair held was deleted")
        retired = add_retired(side.retired, side.id)
        return take_created(
            w, link.with_side(s, SideState(retired=retired, modified_at=side.modified_at)), s, r, sent, p
        )
    if other_item:
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
        return discard_made(w, link.with_side(s, side), s, r, sent)
    if side.id is None and r.target_id:
        return take_created(w, link, s, r, sent, p)
    # Its echo linked the item before this result: the result proves the item is
    # ours, a copy that an original found later must replace.
    link = link.with_side(s, replace(side, created=side.created or side.id == r.target_id))
    refresh_waiters(w, link)
    return link


def updated(w: Work, link: LinkRecord, s: Side, p: Pending, r: CommandResult) -> LinkRecord:
    side = link.side(s)
    record = merge.norm(link.entity, r.record) if r.record is not None else None
    if side.version == p.expected_version:
        # Nothing newer was observed since we wrote, so the write's result is current.
        shadow = record if record is not None else merge.apply_patch(link.entity, side.shadow, p.fields)
        side = replace(
            side,
            shadow=shadow,
            version=r.new_version,
            modified_at=r.modified_at or side.modified_at,
        ).wrote(p, p.fields)
    elif r.modified_at is None or not is_older(r.modified_at, side.modified_at):
        # A newer version was seen since the command was planned, but nothing later than
        # our write: the echo of an earlier write of ours (a Salesforce answer carries no
        # version, so our own echo moves it). The fields we wrote are the side's content
        # now, and ours; the version seen stays.
        shadow = merge.apply_patch(link.entity, side.shadow, p.fields)
        side = replace(side, shadow=shadow).wrote(p, p.fields)
    else:
        return link  # a later change of the side was seen: it holds what the side has
    link = link.with_side(s, side)
    if s == "salesforce" and side.id:
        # A Salesforce answer carries no time: the content is as new as the edit it came from.
        fan_out(w, link, p, side.id, side.shadow or {}, r.new_version, r.modified_at or p.as_of)
    return link


def fan_out(
    w: Work, link: LinkRecord, p: Pending, sf_id: str, record: dict[str, Any], version: str | None, t: str | None
) -> None:
    """A write to a Salesforce record shared by several mailbox items: the other links see
    it as a Salesforce change now, rather than waiting for its CDC echo. What exsf wrote is
    ours for them too: it is no person's edit of the record (it came from a mailbox item,
    whose own delete ends it), so it cannot beat their mailbox's delete."""
    for sib in w.find("salesforce", sf_id):
        if sib.link_id == link.link_id or sib.salesforce.id != sf_id or sib.salesforce.version == version:
            continue
        if sib.status == "deleted" or sib.salesforce.gone:
            continue
        if sib.status == "unlinked":
            sib = follow_unlinked(w, sib, record, version, t)
        else:
            sib = observe(w, sib, "salesforce", sf_id, record, version, t)
        w.replan(sib.with_side("salesforce", sib.salesforce.wrote(p, p.fields)))


def refresh_waiters(w: Work, link: LinkRecord) -> None:
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
                w.replan(cand)
