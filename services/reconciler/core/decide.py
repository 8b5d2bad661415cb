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
  alone; origin tags (`Origin.link_tag`) are used only to find the link of an item whose id
  we do not know yet (our create seen before its result);
- a Salesforce record may be linked to several mailbox items (one link per pair); a write
  to it is shown to the sibling links at once (fan-out). Deleting one mailbox's copy only
  unlinks that copy while other mailboxes still sync the record;
- dedupe waits: a new item whose key matches a create still in flight waits for it and
  then joins it. An original whose event arrives after we created a copy wins: links move
  to it and our copy is deleted through a `discard` record (edits made to the copy move
  over first);
- a `failed` write is not retried by itself (no hot loop): the next change of the link or
  `sweep` retries it;
- the owner's mailbox follows the Salesforce OwnerId (ownership.py).

Where each step lives (the table is docs/design.md §8): `step` below dispatches every
input; events.py (change events, by link status and op), results.py (command results, by
link status and result), plan.py (merge and planning, by side state), discard.py (stray
copies), ownership.py, email.py; work.py holds the working set of one decision and the
queue of follow-ups (`Replan`) that steps leave for other links.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import assert_never

from services.core.envelopes import ChangeEvent, CommandResult
from services.core.tenants import Tenant
from services.reconciler.core import merge
from services.reconciler.core.discard import remove
from services.reconciler.core.events import on_event
from services.reconciler.core.plan import plan
from services.reconciler.core.results import on_result
from services.reconciler.core.state import Record, TenantState
from services.reconciler.core.unlinked import push_unlinked
from services.reconciler.core.work import Decision, Input, Replan, Step, Work


def reconcile(state: TenantState, tenant: Tenant, item: Input, now: str) -> Decision:
    w = Work(state, tenant, now)
    if item.tenant_id != tenant.tenant_id or state.tenant_id != tenant.tenant_id:
        w.record("drop", reason="tenant mismatch", input_tenant=item.tenant_id, entity=item.entity)
        return w.decision()
    if isinstance(item, ChangeEvent) and item.entity not in tenant.entities:
        w.record("drop", reason="entity not synced for tenant", entity=item.entity, source_id=item.source_id)
        return w.decision()
    run(w, item)
    return w.decision()


def run(w: Work, item: Step) -> None:
    """One input, then the follow-ups it queued for other links, in order."""
    step(w, item)
    drain(w)


def drain(w: Work) -> None:
    while w.followups:
        step(w, Replan(w.followups.popleft()))


def step(w: Work, item: Step) -> None:
    match item:
        case ChangeEvent():
            on_event(w, item)
        case CommandResult():
            on_result(w, item)
        case Replan(link_id=link_id):
            link = w.get(link_id)
            if link is not None and link.status == "unlinked":
                push_unlinked(w, link)
            elif link is not None:
                plan(w, link)
        case _:
            assert_never(item)


def sweep(state: TenantState, tenant: Tenant, now: str) -> Decision:
    """Re-plan every active link: retries writes that failed and creates that never landed.
    The service runs it on the tenant's safety-sweep timer; it emits nothing for links that
    are in sync or have a command in flight. Tombstones (deleted pairs) older than the
    tenant's `tombstone_days` are dropped: no input about them can still arrive."""
    w = Work(state, tenant, now)
    now_t = merge.parse_time(now)
    cutoff = now_t - timedelta(days=tenant.tombstone_days) if now_t else None
    for lid in sorted(state.links):
        link = w.get(lid)
        if link is None:
            continue
        if link.status == "unlinked":
            if link.salesforce.failed:  # a write of edits carried from a discarded copy
                push_unlinked(w, replace(link, salesforce=replace(link.salesforce, failed=None)))
            continue
        if link.status == "deleted":
            if expired(link, cutoff):
                w.forget(link)
            continue
        if link.exchange.failed or link.salesforce.failed:
            link = replace(
                link, exchange=replace(link.exchange, failed=None), salesforce=replace(link.salesforce, failed=None)
            )
        plan(w, link)
    for cid in sorted(state.copies):
        copy = w.copy(cid)
        if copy is None:
            continue
        if copy.done:
            if expired(copy, cutoff):
                w.forget(copy)
            continue
        w.save_copy(remove(w, copy.with_item(replace(copy.item, failed=None))))
    drain(w)
    return w.decision()


def expired(rec: Record, cutoff: datetime | None) -> bool:
    """A tombstone (an ended pair, a removed copy) last changed before the cutoff."""
    t = merge.parse_time(rec.updated_at)
    return cutoff is not None and t is not None and t < cutoff
