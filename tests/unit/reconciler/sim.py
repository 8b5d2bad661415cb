"""A simulated world for the reconcile core: mailboxes and Salesforce orgs as plain dicts,
an ingestor that turns every mutation into a ChangeEvent, a writer that applies Commands
with the real systems' rules (conditional writes, idempotent creates, tags that come back
as echoes), and the reconciler loop that persists state as a changelog and rebuilds it from
that changelog before every step.

The queues are explicit so a test (or hypothesis) decides every interleaving.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from services.core.envelopes import ChangeEvent, Command, CommandResult, Origin, Side, stable_id
from services.core.records import FIELDS, canonical, normalise_email
from services.core.tenants import Tenant, User
from services.reconciler.core import Decision, LinkRecord, TenantState, reconcile, sweep
from services.reconciler.handler import ReconcilerHandler

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


def ts(n: int) -> str:
    return (EPOCH + timedelta(seconds=n)).isoformat().replace("+00:00", "Z")


def make_tenant(tenant_id: str, policy: str = "latest-wins") -> Tenant:
    return Tenant(
        tenant_id=tenant_id,
        users=(
            User(mailbox=f"alice@{tenant_id}.example", salesforce_user_id=f"005{tenant_id}A00000001"),
            User(mailbox=f"bob@{tenant_id}.example", salesforce_user_id=f"005{tenant_id}B00000002"),
        ),
        conflict_policy=policy,  # type: ignore[arg-type]
    )


@dataclass
class ExItem:
    entity: str
    record: dict[str, Any]
    version: str
    modified: str
    tag: str | None = None  # our extended property: the link id
    ical_uid: str | None = None


@dataclass
class SfItem:
    entity: str
    record: dict[str, Any]
    owner: str  # Salesforce user id
    version: str
    modified: str
    ext_id: str | None = None  # external id field holding the link id


@dataclass
class TenantWorld:
    tenant: Tenant
    mailboxes: dict[str, dict[str, ExItem]] = field(default_factory=dict)
    moved_out: list[tuple[str, str, ExItem]] = field(default_factory=list)  # (mailbox, old id, item)
    sf: dict[str, SfItem] = field(default_factory=dict)
    sf_email: dict[str, SfItem] = field(default_factory=dict)
    ex_queue: list[ChangeEvent] = field(default_factory=list)
    sf_queue: list[ChangeEvent] = field(default_factory=list)
    results: list[CommandResult] = field(default_factory=list)
    commands: list[Command] = field(default_factory=list)
    dropped: list[ChangeEvent] = field(default_factory=list)
    processed: list[ChangeEvent] = field(default_factory=list)
    processed_results: list[CommandResult] = field(default_factory=list)
    processed_commands: list[Command] = field(default_factory=list)
    changelog: dict[str, bytes] = field(default_factory=dict)
    audit: list[dict[str, Any]] = field(default_factory=list)
    emails: set[tuple[str, str]] = field(default_factory=set)  # (mailbox, internet_message_id)

    def state(self) -> TenantState:
        # Rebuilt from the changelog alone, every time: proves that every index is derivable.
        return TenantState.from_records(self.tenant.tenant_id, (orjson.loads(v) for v in self.changelog.values()))

    def mailbox_of(self, sf_user_id: str) -> str:
        u = self.tenant.user_by_salesforce_id(sf_user_id)
        assert u is not None
        return u.mailbox


class World:
    def __init__(self, tenants: list[Tenant]) -> None:
        self.t: dict[str, TenantWorld] = {}
        for tenant in tenants:
            tw = TenantWorld(tenant)
            for u in tenant.users:
                tw.mailboxes[u.mailbox] = {}
            self.t[tenant.tenant_id] = tw
        self._clock = itertools.count(1)
        self.fail_next = 0
        self.blind_conflicts = False  # the writer cannot read the fresh record on a 412
        # The Salesforce ingestor reports the external id (link id) of records we made, as
        # production does (the field is required: creates are upserts on it). Tests of
        # content-only echo detection switch it off.
        self.sf_tags = True
        # Values typed by simulated people: value -> superseded (the person saw it replaced
        # or deleted it). Unsuperseded values must survive, or sit in a conflict record.
        self.values: dict[str, bool] = {}
        # Pairs whose item a person deleted (tenant, link id). Their copies (the items we made
        # for them carry the link id) must go too, unless they hold an edit a person made
        # that no delete saw (edit beats delete) or, in Salesforce, sync another mailbox's item.
        self.deleted: set[tuple[str, str]] = set()
        # Mailbox items a person put back in scope: that is a change of theirs too, one a
        # delete on the other side may not have seen.
        self.rescoped: set[str] = set()
        # Pairs a person's edit justified restoring when it was decided (see _check_restores).
        self.restored: set[tuple[str, str]] = set()

    # --- clock and ids ----------------------------------------------------------------
    def tick(self) -> int:
        return next(self._clock)

    # --- events (what the ingestors would publish) --------------------------------------
    def _ex_event(self, tw: TenantWorld, mailbox: str, item_id: str, item: ExItem, op: str) -> None:
        origin = Origin(link_tag=item.tag or None, ical_uid=item.ical_uid or None)
        n = self.tick()
        tw.ex_queue.append(
            ChangeEvent(
                tenant_id=tw.tenant.tenant_id,
                user=mailbox,
                source="exchange",
                entity=item.entity,  # type: ignore[arg-type]
                source_id=item_id,
                op=op,  # type: ignore[arg-type]
                version=item.version if op == "upsert" else f"del-{n}",
                observed_at=ts(n),
                modified_at=item.modified if op == "upsert" else ts(n),
                record=dict(item.record) if op == "upsert" else None,
                origin=origin,
            )
        )

    def _sf_event(self, tw: TenantWorld, item_id: str, item: SfItem, op: str, ours: bool) -> None:
        enrolled = tw.tenant.user_by_salesforce_id(item.owner)
        if op == "upsert" and enrolled is None:
            return  # the ingestor drops records of owners who are not enrolled
        origin = Origin(
            change_origin="com/salesforce/api/rest/60.0;client=exsf" if ours else None,
            link_tag=item.ext_id if item.ext_id and self.sf_tags else None,
        )
        n = self.tick()
        tw.sf_queue.append(
            ChangeEvent(
                tenant_id=tw.tenant.tenant_id,
                # CDC deletes carry no owner: the ingestor sends "*" (so does an unlink).
                user=enrolled.mailbox if op == "upsert" and enrolled else "*",
                source="salesforce",
                entity=item.entity,  # type: ignore[arg-type]
                source_id=item_id,
                op=op,  # type: ignore[arg-type]
                version=item.version if op == "upsert" else f"del-{n}",
                observed_at=ts(n),
                modified_at=item.modified if op == "upsert" else ts(n),
                record=dict(item.record) if op == "upsert" else None,
                origin=origin,
            )
        )

    # --- simulated people -------------------------------------------------------------
    def _track(self, record: dict[str, Any], entity: str, tracked: tuple[str, ...]) -> None:
        for f in tracked:
            v = record.get(f)
            if isinstance(v, str):
                self.values.setdefault(v, False)

    def _supersede(self, record: dict[str, Any]) -> None:
        for v in record.values():
            if isinstance(v, str) and v in self.values:
                self.values[v] = True

    def _bury(self, tw: TenantWorld, side: str, item: ExItem | SfItem, item_id: str) -> None:
        tid = tw.tenant.tenant_id
        self.deleted.add((tid, stable_id("link", tid, item.entity, side, item_id)))
        tag = item.tag if isinstance(item, ExItem) else item.ext_id
        if tag:
            self.deleted.add((tid, tag))  # a copy of ours deleted: its pair ends as well

    def ex_create(self, tenant_id: str, mailbox: str, entity: str, record: dict[str, Any]) -> str:
        tw = self.t[tenant_id]
        n = self.tick()
        item_id = f"X{n}"
        item = ExItem(
            entity, canonical(entity, record), f"ck{n}", ts(n), ical_uid=f"uid{n}" if entity == "event" else None
        )
        tw.mailboxes[mailbox][item_id] = item
        self._track(item.record, entity, TRACKED[entity])
        self._ex_event(tw, mailbox, item_id, item, "upsert")
        return item_id

    def ex_edit(self, tenant_id: str, mailbox: str, item_id: str, fname: str, value: Any) -> None:
        tw = self.t[tenant_id]
        item = tw.mailboxes[mailbox][item_id]
        old = item.record.get(fname)
        if isinstance(old, str):
            self._supersede({fname: old})
        n = self.tick()
        item.record = canonical(item.entity, {**item.record, fname: value})
        item.version, item.modified = f"ck{n}", ts(n)
        if isinstance(value, str):
            self.values.setdefault(value, False)
        self._ex_event(tw, mailbox, item_id, item, "upsert")

    def ex_delete(self, tenant_id: str, mailbox: str, item_id: str) -> None:
        tw = self.t[tenant_id]
        item = tw.mailboxes[mailbox].pop(item_id)
        self._supersede(item.record)
        self._bury(tw, "exchange", item, item_id)
        self._ex_event(tw, mailbox, item_id, item, "delete")

    def ex_move_out(self, tenant_id: str, mailbox: str, item_id: str) -> None:
        tw = self.t[tenant_id]
        item = tw.mailboxes[mailbox].pop(item_id)
        tw.moved_out.append((mailbox, item_id, item))
        self._ex_event(tw, mailbox, item_id, item, "left_scope")

    def ex_move_back(self, tenant_id: str, mailbox: str, index: int) -> str:
        """Move a moved-out item back in: Graph gives it a new id in the folder."""
        tw = self.t[tenant_id]
        _, _, item = tw.moved_out.pop(index)
        n = self.tick()
        item_id = f"X{n}"
        item.version, item.modified = f"ck{n}", ts(n)
        tw.mailboxes[mailbox][item_id] = item
        self.rescoped.add(item_id)
        self._ex_event(tw, mailbox, item_id, item, "upsert")
        return item_id

    def ex_recategorise(self, tenant_id: str, index: int) -> str:
        """The "Salesforce" category is put back on an item: same mailbox, same id."""
        tw = self.t[tenant_id]
        mailbox, item_id, item = tw.moved_out.pop(index)
        n = self.tick()
        item.version, item.modified = f"ck{n}", ts(n)
        tw.mailboxes[mailbox][item_id] = item
        self.rescoped.add(item_id)
        self._ex_event(tw, mailbox, item_id, item, "upsert")
        return item_id

    def sf_create(self, tenant_id: str, owner_mailbox: str, entity: str, record: dict[str, Any]) -> str:
        tw = self.t[tenant_id]
        user = tw.tenant.user_by_mailbox(owner_mailbox)
        assert user is not None
        n = self.tick()
        item_id = f"S{n}"
        item = SfItem(entity, canonical(entity, record), user.salesforce_user_id, f"sm{n}", ts(n))
        tw.sf[item_id] = item
        self._track(item.record, entity, TRACKED[entity])
        self._sf_event(tw, item_id, item, "upsert", ours=False)
        return item_id

    def sf_edit(self, tenant_id: str, item_id: str, fname: str, value: Any) -> None:
        tw = self.t[tenant_id]
        item = tw.sf[item_id]
        old = item.record.get(fname)
        if isinstance(old, str):
            self._supersede({fname: old})
        n = self.tick()
        item.record = canonical(item.entity, {**item.record, fname: value})
        item.version, item.modified = f"sm{n}", ts(n)
        if isinstance(value, str):
            self.values.setdefault(value, False)
        self._sf_event(tw, item_id, item, "upsert", ours=False)

    def sf_delete(self, tenant_id: str, item_id: str) -> None:
        tw = self.t[tenant_id]
        item = tw.sf.pop(item_id)
        self._supersede(item.record)
        self._bury(tw, "salesforce", item, item_id)
        self._sf_event(tw, item_id, item, "delete", ours=False)

    def sf_reassign(self, tenant_id: str, item_id: str, owner: str) -> None:
        """Someone changes the record's OwnerId (to an enrolled user or to an outsider)."""
        tw = self.t[tenant_id]
        item = tw.sf[item_id]
        n = self.tick()
        item.owner, item.version, item.modified = owner, f"sm{n}", ts(n)
        if tw.tenant.user_by_salesforce_id(owner) is None:
            self._sf_event(tw, item_id, item, "left_scope", ours=False)
        else:
            self._sf_event(tw, item_id, item, "upsert", ours=False)

    def email_arrives(self, tenant_id: str, mailbox: str, imid: str, sender: str) -> str:
        tw = self.t[tenant_id]
        n = self.tick()
        item_id = f"M{n}"
        record = {
            "subject": f"mail {imid}",
            "from_address": sender,
            "to_addresses": [mailbox],
            "sent_at": ts(n),
            "internet_message_id": imid,
        }
        item = ExItem("email", record, f"ck{n}", ts(n))
        tw.emails.add((mailbox, imid))
        self._ex_event(tw, mailbox, item_id, item, "upsert")
        return item_id

    # --- the writer -------------------------------------------------------------------
    def write(self, tenant_id: str, cmd: Command) -> CommandResult:
        tw = self.t[tenant_id]
        tenant = tw.tenant
        # Nothing crosses tenants: the command names this tenant, one of its users, and
        # (for updates/deletes) an id that exists in no other tenant's world.
        assert cmd.tenant_id == tenant_id
        assert tenant.user_by_mailbox(cmd.user) is not None, cmd
        if cmd.target_id is not None:
            for other_id, other in self.t.items():
                if other_id != tenant_id:
                    assert cmd.target_id not in other.sf and all(
                        cmd.target_id not in mb for mb in other.mailboxes.values()
                    ), f"command for {tenant_id} names an id of {other_id}"

        def result(
            status: str,
            target_id: str | None = None,
            version: str | None = None,
            record: dict[str, Any] | None = None,
            modified: str | None = None,
            error: str | None = None,
        ) -> CommandResult:
            return CommandResult(
                command_id=cmd.command_id,
                tenant_id=tenant_id,
                user=cmd.user,
                target=cmd.target,
                entity=cmd.entity,
                link_id=cmd.link_id,
                status=status,  # type: ignore[arg-type]
                target_id=target_id,
                new_version=version,
                record=dict(record) if record is not None else None,
                modified_at=modified,
                error=error,
            )

        if self.fail_next:
            self.fail_next -= 1
            return result("failed", error="simulated outage")
        n = self.tick()
        if cmd.target == "exchange":
            mbox = tw.mailboxes[cmd.user]
            if cmd.action == "create":
                # Idempotent: a retry finds the item by our extended property.
                found = next((i for i, it in mbox.items() if it.tag == cmd.link_id), None)
                if found is not None:
                    it = mbox[found]
                    return result("applied", found, it.version, it.record, it.modified)
                item_id = f"X{n}"
                item = ExItem(
                    cmd.entity,
                    canonical(cmd.entity, cmd.fields),
                    f"ck{n}",
                    ts(n),
                    tag=cmd.link_id,
                    ical_uid=f"uid{n}" if cmd.entity == "event" else None,
                )
                mbox[item_id] = item
                self._ex_event(tw, cmd.user, item_id, item, "upsert")
                return result("applied", item_id, item.version, item.record, item.modified)
            assert cmd.target_id is not None
            ex = mbox.get(cmd.target_id)
            if ex is None:
                return result("gone", cmd.target_id)
            if ex.version != cmd.expected_version:
                if self.blind_conflicts:
                    return result("conflict", cmd.target_id)
                return result("conflict", cmd.target_id, ex.version, ex.record, ex.modified)
            if cmd.action == "delete":
                del mbox[cmd.target_id]
                self._ex_event(tw, cmd.user, cmd.target_id, ex, "delete")
                return result("applied", cmd.target_id)
            ex.record = canonical(ex.entity, {**ex.record, **cmd.fields})
            ex.version, ex.modified = f"ck{n}", ts(n)
            self._ex_event(tw, cmd.user, cmd.target_id, ex, "upsert")
            return result("applied", cmd.target_id, ex.version, ex.record, ex.modified)

        # salesforce
        if cmd.action == "create":
            store = tw.sf_email if cmd.entity == "email" else tw.sf
            owner = cmd.context.owner_id
            assert owner in {u.salesforce_user_id for u in tenant.users}, cmd
            # Idempotent: an upsert on the external id field holding the link id. Like the
            # real writer's (services/writer/salesforce_apply.py), the answer carries the id
            # only: the version comes with the CDC echo.
            found = next((i for i, it in store.items() if it.ext_id == cmd.link_id), None)
            if found is not None:
                return result("applied", found)
            item_id = f"S{n}"
            sfi = SfItem(cmd.entity, canonical(cmd.entity, cmd.fields), owner, f"sm{n}", ts(n), ext_id=cmd.link_id)
            store[item_id] = sfi
            if cmd.entity != "email":
                self._sf_event(tw, item_id, sfi, "upsert", ours=True)
            return result("applied", item_id)
        assert cmd.target_id is not None
        sfi2 = tw.sf.get(cmd.target_id)
        if sfi2 is None:
            return result("gone", cmd.target_id)
        # Updates are conditional on If-Unmodified-Since (the time the service adds from the
        # link), deletes on the version (kinder than the real writer's delete_many, which is
        # unconditional: issue 12's note).
        since = cmd.context.expected_modified_at
        if cmd.action == "update":
            changed = bool(since and sfi2.modified > since)
        else:
            changed = sfi2.version != cmd.expected_version
        if changed:
            if self.blind_conflicts:
                return result("conflict", cmd.target_id)
            return result("conflict", cmd.target_id, sfi2.version, sfi2.record, sfi2.modified)
        if cmd.action == "delete":
            del tw.sf[cmd.target_id]
            self._sf_event(tw, cmd.target_id, sfi2, "delete", ours=True)
            return result("applied", cmd.target_id)
        sfi2.record = canonical(sfi2.entity, {**sfi2.record, **cmd.fields})
        sfi2.version, sfi2.modified = f"sm{n}", ts(n)
        self._sf_event(tw, cmd.target_id, sfi2, "upsert", ours=True)
        return result("applied", cmd.target_id)  # ids only, as the real writer answers

    # --- the reconciler loop ----------------------------------------------------------
    def _apply(self, tw: TenantWorld, d: Decision) -> None:
        for rec in d.changes:
            assert rec.tenant_id == tw.tenant.tenant_id
        for key, value in d.changelog():
            if value is None:
                tw.changelog.pop(key, None)
            else:
                tw.changelog[key] = orjson.dumps(value)
        links = {r.link_id: r for r in d.changes if isinstance(r, LinkRecord)}
        for cmd in d.commands:
            assert cmd.tenant_id == tw.tenant.tenant_id
        # What the service adds before sending (the merged record, Salesforce's
        # If-Unmodified-Since time), by the service's own code.
        tw.commands.extend(ReconcilerHandler._enrich(cmd, links.get(cmd.link_id)) for cmd in d.commands)
        tw.audit.extend(d.audit)

    def reconcile_one(self, tenant_id: str, item: ChangeEvent | CommandResult) -> Decision:
        tw = self.t[tenant_id]
        d = reconcile(tw.state(), tw.tenant, item, ts(self.tick()))
        self._check_restores(tw, d)
        self._apply(tw, d)
        return d

    def _holds_live_edit(self, record: dict[str, Any]) -> bool:
        """Does the record hold a value a person typed that nothing superseded yet?"""
        return any(self.values.get(v) is False for v in record.values() if isinstance(v, str))

    def _check_restores(self, tw: TenantWorld, d: Decision) -> None:
        """Note the restores (edit beats delete) that a person's edit justified when they were
        decided: the record brought back holds a value a person typed that nothing superseded
        yet, or its mailbox item was put back in scope by a person. Later edits and merges may
        legitimately replace that value, so the end check trusts these restores; any other
        copy of a deleted pair left at the end is a resurrection."""
        changed = {r.link_id: r for r in d.changes}
        for a in d.audit:
            if a["kind"] != "restore":
                continue
            link = changed.get(a["link_id"])
            rescoped = link is not None and link.exchange.id in self.rescoped
            record = a.get("record") or {}
            if rescoped or self._holds_live_edit(record):
                self.restored.add((tw.tenant.tenant_id, a["link_id"]))

    def step(self, tenant_id: str, queue: str, index: int = 0) -> bool:
        """Process one message of a queue (index 0 = in order, other = overtaking)."""
        tw = self.t[tenant_id]
        q: list[Any] = {
            "exchange": tw.ex_queue,
            "salesforce": tw.sf_queue,
            "results": tw.results,
            "commands": tw.commands,
        }[queue]
        if not q:
            return False
        msg = q.pop(index % len(q))
        if queue == "commands":
            tw.processed_commands.append(msg)
            tw.results.append(self.write(tenant_id, msg))
        else:
            (tw.processed_results if queue == "results" else tw.processed).append(msg)
            self.reconcile_one(tenant_id, msg)
        return True

    def settle(self, max_steps: int = 5000) -> None:
        self.fail_next = 0
        for tw in self.t.values():
            tw.ex_queue.extend(e for e in tw.dropped if e.source == "exchange")
            tw.sf_queue.extend(e for e in tw.dropped if e.source == "salesforce")
            tw.dropped.clear()
        steps = 0
        while True:
            progressed = False
            for tid in self.t:
                for q in ("commands", "results", "exchange", "salesforce"):
                    while self.step(tid, q):
                        progressed = True
                        steps += 1
                        assert steps < max_steps, "no convergence: the queues never drain"
            if progressed:
                continue
            swept = False
            for tw in self.t.values():
                d = sweep(tw.state(), tw.tenant, ts(self.tick()))
                self._apply(tw, d)
                swept = swept or bool(d.commands)
            if not swept:
                return

    # --- checks -------------------------------------------------------------------------
    def check(self) -> None:
        for tid, tw in self.t.items():
            self._check_tenant(tid, tw)
        self._check_values()
        self._check_no_resurrection()

    def _check_tenant(self, tid: str, tw: TenantWorld) -> None:
        state = tw.state()
        ex_owner: dict[str, str] = {}
        sf_linked: set[str] = set()
        sf_known: set[str] = set()
        for copy in state.copies.values():
            assert copy.tenant_id == tid
            if copy.side == "salesforce" and copy.item.id:
                sf_known.add(copy.item.id)
            # A copy of ours being removed waits (parked) while someone not enrolled owns it.
            assert copy.done or copy.parked, f"copy left undeleted: {copy}"
        for link in state.links.values():
            assert link.tenant_id == tid
            if link.entity == "email":
                continue
            if link.salesforce.id:
                sf_known.add(link.salesforce.id)
            if link.status != "linked":
                assert link.status in ("unlinked", "deleted"), f"link left {link.status}: {link}"
                continue
            ex_id, sf_id = link.exchange.id, link.salesforce.id
            assert ex_id and sf_id
            ex = tw.mailboxes[link.user].get(ex_id)
            sf = tw.sf.get(sf_id)
            assert ex is not None, f"linked exchange item {ex_id} missing: {link}"
            assert sf is not None, f"linked salesforce item {sf_id} missing: {link}"
            assert canonical(link.entity, ex.record) == canonical(link.entity, sf.record), (link, ex, sf)
            assert ex_id not in ex_owner, f"exchange item {ex_id} in two links"
            ex_owner[ex_id] = link.link_id
            sf_linked.add(sf_id)
        # A mailbox's own item whose Salesforce record passed to an owner who is not
        # enrolled stays in the mailbox, unsynced.
        kept = {
            link.exchange.id
            for link in state.links.values()
            if link.status == "unlinked" and link.parked and link.exchange.alive
        }
        for mailbox, items in tw.mailboxes.items():
            for item_id, item in items.items():
                if item.entity != "email" and item_id not in kept:
                    assert item_id in ex_owner, f"{mailbox} item {item_id} {item} is not linked"
        for item_id, sfi in tw.sf.items():
            assert item_id in sf_known, f"salesforce item {item_id} {sfi} unknown to the reconciler"
        # Dedupe: one Salesforce record per logical item.
        keys: dict[tuple[Any, ...], str] = {}
        for item_id, sfi in tw.sf.items():
            if tw.tenant.user_by_salesforce_id(sfi.owner) is None:
                continue  # records of owners who are not enrolled are never ingested
            key = sf_key(sfi)
            assert key not in keys, f"duplicate in salesforce: {item_id} and {keys[key]} ({key})"
            keys[key] = item_id
        # Email: one task per message and mailbox, whatever happened to the message.
        made: dict[tuple[str, str], int] = {}
        for sfi in tw.sf_email.values():
            k = (tw.mailbox_of(sfi.owner), sfi.record["internet_message_id"])
            made[k] = made.get(k, 0) + 1
        assert made == dict.fromkeys(tw.emails, 1), (made, tw.emails)

    def _check_values(self) -> None:
        present: set[str] = set()
        audited: set[str] = set()
        for tw in self.t.values():
            for items in tw.mailboxes.values():
                for it in items.values():
                    present.update(v for v in it.record.values() if isinstance(v, str))
            for _, _, it in tw.moved_out:
                present.update(v for v in it.record.values() if isinstance(v, str))
            for sfi in tw.sf.values():
                present.update(v for v in sfi.record.values() if isinstance(v, str))
            for a in tw.audit:
                if a["kind"] == "conflict":
                    audited.update(str(a[k]) for k in ("exchange_value", "salesforce_value", "losing_value"))
                elif a["kind"] == "discarded_edit":
                    audited.update(str(v) for v in (a.get("record") or {}).values())
        lost = [v for v, superseded in self.values.items() if not superseded and v not in present | audited]
        assert not lost, f"edits lost without an audit record: {lost}"

    def _check_no_resurrection(self) -> None:
        for tid, tw in self.t.items():
            state = tw.state()
            shared = {r.salesforce.id for r in state.links.values() if r.status == "linked" and r.exchange.alive}
            unlinked = {r.salesforce.id for r in state.links.values() if r.status == "unlinked"}
            items: list[tuple[str, str, ExItem | SfItem]] = [
                ("exchange", i, it) for mb in tw.mailboxes.values() for i, it in mb.items()
            ]
            items += [("salesforce", i, it) for i, it in tw.sf.items()]
            for _side, item_id, item in items:
                tag = item.tag if isinstance(item, ExItem) else item.ext_id
                if item.entity == "email" or (tid, tag) not in self.deleted or (tid, tag) in self.restored:
                    continue  # not a deleted pair's copy, or one a justified restore brought back
                live_edit = item_id in self.rescoped or self._holds_live_edit(item.record)
                # A record exsf keeps syncing for another mailbox; one handed to an owner who is
                # not enrolled (out of exsf's hands, so never deleted by it); one whose mailbox
                # item left scope before its delete, as far as exsf saw (moving out keeps it).
                kept = isinstance(item, SfItem) and (
                    item_id in shared or item_id in unlinked or tw.tenant.user_by_salesforce_id(item.owner) is None
                )
                assert live_edit or kept, f"deleted item came back, no edit beats the delete: {item}"


TRACKED: dict[str, tuple[str, ...]] = {
    "contact": ("given_name", "job_title", "notes", "mobile_phone"),
    "task": ("body",),
    "event": ("body", "location"),
    "email": (),
}
EDITABLE = TRACKED


def side_items(world: World, tenant_id: str, side: Side) -> list[str]:
    tw = world.t[tenant_id]
    if side == "salesforce":
        return sorted(tw.sf)
    return sorted(i for items in tw.mailboxes.values() for i in items)


__all__ = ["FIELDS", "TRACKED", "World", "make_tenant", "ts"]


def sf_key(sfi: SfItem, owner: str | None = None) -> tuple[Any, ...]:
    """The dedupe key of docs/design.md §7 (contact by email; task and event per owner)."""
    r, who = sfi.record, owner or sfi.owner
    if sfi.entity == "contact":
        return ("contact", normalise_email(r.get("email")))
    if sfi.entity == "task":
        return ("task", who, r.get("subject"), r.get("due_date"))
    return ("event", who, r.get("subject"), r.get("start"))
