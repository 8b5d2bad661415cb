"""Pairs whose mailbox item left scope (unlinked). They no longer sync the mailbox, but
keep following their Salesforce record (so a re-linked item merges against its current
content and the dedupe key stays true), and write to it what reached them from copies of
ours removed since: edits made to those copies in Salesforce."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from services.reconciler.core import merge
from services.reconciler.core.plan import plan_create, unseen_values
from services.reconciler.core.state import LinkRecord, SideState
from services.reconciler.core.work import Work, add_retired, later


def follow_unlinked(
    w: Work, link: LinkRecord, record: dict[str, Any], version: str | None, t: str | None
) -> LinkRecord:
    """An unlinked pair keeps following its Salesforce record, so a re-linked item merges
    against its current content and the dedupe key stays true. Edits carried to it from a
    discarded copy of ours wait in `desired` until written: a newer version merges with
    them instead of replacing them, and the live record wins a field both changed (the
    carried value stays in the conflict audit)."""
    side = link.salesforce
    conflicts: list[merge.Conflict] = []
    if side.shadow is None:
        desired = dict(record)
    else:
        desired, conflicts = merge.absorb(
            link.entity, link.desired, side.shadow, record, "salesforce", "salesforce-wins", t, None
        )
    w.conflicts(link, conflicts, "salesforce-wins")
    st = replace(side, shadow=record, version=version, modified_at=later(t, side.modified_at), gone=False)
    return replace(link.with_side("salesforce", st), desired=desired)


def push_unlinked(w: Work, link: LinkRecord) -> LinkRecord:
    """Write what an unlinked pair's Salesforce record lacks of `desired` (edits carried
    from a discarded copy). The mailbox side is out of scope and is never written."""
    sf = link.salesforce
    if (
        link.status != "unlinked"
        or link.parked
        or link.entity == "email"
        or sf.pending is not None
        or sf.failed is not None
    ):
        return w.save(link)
    if (sf.gone or sf.id is None) and unseen_values(link):
        # Edit beats delete: the record was deleted (or its restore is still to be made),
        # but an edit made later to our copy of it (removed as a duplicate) reached this
        # pair and no delete saw it.
        if sf.gone:
            w.record("restore", link, side="salesforce", deleted_id=sf.id, record=link.desired, base=link.base)
            fresh = SideState(retired=add_retired(sf.retired, sf.id), modified_at=sf.modified_at)
            link = w.save(link.with_side("salesforce", fresh))
        link = w.save(plan_create(w, link, "salesforce"))
        joined = link.salesforce.id is not None and link.salesforce.pending is None
        return push_unlinked(w, link) if joined else link
    if sf.id is None or sf.gone or sf.shadow is None or merge.same(sf.shadow, link.desired):
        return w.save(link)
    fields = merge.patch(link.entity, sf.shadow, link.desired)
    return w.save(w.command(link, "salesforce", "update", sf.id, fields, sf.version))
