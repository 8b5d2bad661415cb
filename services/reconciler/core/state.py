"""Link records and the per-tenant state built from them.

A LinkRecord is everything the reconciler knows about one pair (a mailbox item and a
Salesforce record). It is the unit persisted to exsf.state (key `tenant/entity/link_id`),
and every index in TenantState is derived from the set of records, so state can be rebuilt
from the compacted changelog alone.

Per side we keep a *shadow*: the content we believe that side holds, as far as we have
accounted for it (from its events or our applied writes). A change on a side is its new
content minus its shadow; `desired` is the merged record both sides should converge to;
`base` is the last record both sides were confirmed to hold.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal, cast

from services.core.envelopes import Action, Entity, Side, content_hash, stable_id
from services.reconciler.core.dedupe import match_keys

LinkStatus = Literal["pending", "linked", "unlinked", "deleted"]
# Why a pair stopped syncing its mailbox item (status "unlinked"), for operators and the
# audit: the person moved the item out of scope; the Salesforce owner is not enrolled;
# one mailbox deleted its copy while others still sync the record; a Salesforce record
# duplicating a synced one (tracked, never copied into a mailbox).
UnlinkReason = Literal["moved_out", "owner_not_enrolled", "deleted_here", "salesforce_duplicate"]
# exsf.state record format: 2 adds `reason` and copy records (`record: "copy"`); records
# without `schema` are 1 and migrate (a schema-1 link with status "discard" is a copy).
STATE_SCHEMA = 2
SEEN_LIMIT = 32  # recent event ids per link; older redeliveries are caught by the watermark


@dataclass(frozen=True, slots=True)
class Pending:
    """The one command in flight to a side. One at a time per side keeps reasoning simple:
    its result (always produced by the writer) decides what happens next."""

    command_id: str
    action: Action
    fields: dict[str, Any]
    expected_version: str | None
    # When a person last changed the content this command writes (the time it carries
    # into latest-wins once it is the side's content).
    as_of: str | None = None
    # The fields whose values the other side held when the command was made: only those are
    # "ours" once written (a value carried from elsewhere, say an edit of a removed copy,
    # is still a person's edit the other side never saw).
    sourced: tuple[str, ...] = ()

    def ours_of(self, values: dict[str, Any]) -> dict[str, Any]:
        return {f: v for f, v in values.items() if f in self.sourced}


@dataclass(frozen=True, slots=True)
class SideState:
    id: str | None = None
    version: str | None = None
    modified_at: str | None = None  # watermark: older inputs for this side change nothing
    shadow: dict[str, Any] | None = None
    gone: bool = False  # the item was deleted on this side
    pending: Pending | None = None
    retired: tuple[str, ...] = ()  # ids this side used to have (deleted, re-pointed)
    failed: str | None = None  # last write error, cleared by the next attempt
    created: bool = False  # we created this item (so it may be replaced by a matching original)
    uncertain: bool = False  # a create was reported failed, yet may have made an item
    # Field values exsf's writes gave this side (all of a create, the fields of each update).
    # A field still holding its value here holds no person's edit of this side, so it can
    # neither beat a delete nor carry a person's time into latest-wins.
    ours: dict[str, Any] | None = None
    ours_at: str | None = None  # when a person made the content exsf wrote (Pending.as_of)

    def holds_ours(self) -> bool:
        """All the side holds is what exsf wrote."""
        return (
            self.shadow is not None and self.ours is not None and content_hash(self.shadow) == content_hash(self.ours)
        )

    def wrote(self, p: Pending, values: dict[str, Any], filled: dict[str, Any] | None = None) -> SideState:
        """The side now holds `values` of command `p`: those that came from the other side are
        ours, and so is what the side filled in by itself on our create (`filled`)."""
        return replace(self, ours={**(self.ours or {}), **p.ours_of(values), **(filled or {})}, ours_at=p.as_of)

    @property
    def alive(self) -> bool:
        return self.id is not None and not self.gone


# What one side of a pair is doing, named (docs/design.md §8). SideState stores it as
# fields (the exsf.state format); phase() says which state those fields are in, so a
# decision matches on a state instead of combining flags by hand.
@dataclass(frozen=True, slots=True)
class Absent:
    """No item on this side: none yet, or the one it had was retired (a restore is due)."""


@dataclass(frozen=True, slots=True)
class Creating:
    command: Pending


@dataclass(frozen=True, slots=True)
class Present:
    id: str


@dataclass(frozen=True, slots=True)
class Writing:
    """An update or delete in flight; `gone` when the item was deleted meanwhile."""

    id: str
    command: Pending
    gone: bool


@dataclass(frozen=True, slots=True)
class Stalled:
    """A write failed: it waits for the next change of the pair or the sweep."""

    error: str
    id: str | None


@dataclass(frozen=True, slots=True)
class Gone:
    id: str | None


SidePhase = Absent | Creating | Present | Writing | Stalled | Gone


def phase(side: SideState) -> SidePhase:
    p = side.pending
    if p is not None:
        return Creating(p) if side.id is None else Writing(side.id, p, side.gone)
    if side.gone:
        return Gone(side.id)  # a failed write to it no longer matters: the delete rules do
    if side.failed is not None:
        return Stalled(side.failed, side.id)
    return Absent() if side.id is None else Present(side.id)


@dataclass(frozen=True, slots=True)
class LinkRecord:
    tenant_id: str
    entity: Entity
    link_id: str
    user: str  # the mailbox this pair syncs with
    status: LinkStatus
    exchange: SideState = field(default_factory=SideState)
    salesforce: SideState = field(default_factory=SideState)
    desired: dict[str, Any] = field(default_factory=dict)
    base: dict[str, Any] | None = None
    base_hash: str | None = None
    ical_uid: str | None = None
    # Mailbox of the Salesforce owner as last seen ("" = an owner who is not enrolled;
    # None = not seen yet). A change moves the record to the new owner's mailbox.
    owner: str | None = None
    # Unlinked only because the record's owner is not enrolled (the mailbox item is still
    # in scope): syncs again when an enrolled user owns the record.
    parked: bool = False
    reason: UnlinkReason | None = None  # set exactly while status is "unlinked"
    seen: tuple[str, ...] = ()
    seq: int = 0  # commands issued so far; part of command ids so retries get fresh ids
    updated_at: str = ""

    @property
    def key(self) -> str:
        return state_key(self.tenant_id, self.entity, self.link_id)

    def side(self, s: Side | str) -> SideState:
        return self.exchange if s == "exchange" else self.salesforce

    def with_side(self, s: Side | str, st: SideState) -> LinkRecord:
        return replace(self, exchange=st) if s == "exchange" else replace(self, salesforce=st)

    def match_keys(self) -> tuple[str, ...]:
        if self.status == "deleted":
            return ()
        return match_keys(self.entity, self.user, self.desired, self.ical_uid)

    def unlinked(self, reason: UnlinkReason) -> LinkRecord:
        return replace(self, status="unlinked", reason=reason)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "schema": STATE_SCHEMA}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LinkRecord:
        dd = dict(d)
        schema = dd.pop("schema", 1)
        dd.pop("record", None)
        dd["exchange"] = side_from_dict(d.get("exchange"))
        dd["salesforce"] = side_from_dict(d.get("salesforce"))
        dd["seen"] = tuple(d.get("seen") or ())
        dd["entity"] = cast(Entity, d["entity"])
        rec = cls(**dd)
        return migrate_v1(rec) if schema == 1 else rec


@dataclass(frozen=True, slots=True)
class CopyRecord:
    """A stray copy of ours being removed: an item our create made that duplicates one a
    pair already syncs (docs/design.md §8, Stray copies). Its own record, not a pair: one
    side, no dedupe key, no owner. It ends `done` (deleted, or found gone; kept like a
    tombstone so the copy's late events stay stale) or, when the person moves the copy
    out of the folder first, becomes an unlinked pair of theirs (`as_pair`). Pairs that
    replaced it hold its id among their retired ids and take edits made to it."""

    tenant_id: str
    entity: Entity
    link_id: str
    user: str
    side: Side
    item: SideState  # the copy; its shadow is what it holds as far as we know
    parked: bool = False  # a Salesforce copy handed to an owner exsf does not sync: kept
    done: bool = False
    seen: tuple[str, ...] = ()
    seq: int = 0
    updated_at: str = ""

    @property
    def key(self) -> str:
        return state_key(self.tenant_id, self.entity, self.link_id)

    def with_item(self, st: SideState) -> CopyRecord:
        return replace(self, item=st)

    def as_pair(self, st: SideState) -> LinkRecord:
        """The person took the copy (moved it out of the folder): an unlinked pair of theirs
        that syncs again, as their own item, when put back in scope."""
        link = LinkRecord(
            tenant_id=self.tenant_id,
            entity=self.entity,
            link_id=self.link_id,
            user=self.user,
            status="unlinked",
            reason="moved_out",
            desired=dict(st.shadow or {}),
            seen=self.seen,
            seq=self.seq,
        )
        return link.with_side(self.side, st)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "record": "copy", "schema": STATE_SCHEMA}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CopyRecord:
        dd = {k: v for k, v in d.items() if k not in ("record", "schema")}
        dd["item"] = side_from_dict(d.get("item"))
        dd["seen"] = tuple(d.get("seen") or ())
        dd["entity"] = cast(Entity, d["entity"])
        dd["side"] = cast(Side, d["side"])
        return cls(**dd)

    @classmethod
    def from_v1(cls, d: Mapping[str, Any]) -> CopyRecord:
        """A schema-1 copy was a link record with status "discard" and one side."""
        link = LinkRecord.from_dict({**d, "status": "deleted"})
        s: Side = "exchange" if link.exchange.id else "salesforce"
        return cls(
            link.tenant_id,
            link.entity,
            link.link_id,
            link.user,
            s,
            link.side(s),
            link.parked,
            False,
            link.seen,
            link.seq,
            link.updated_at,
        )


Record = LinkRecord | CopyRecord


def record_from_dict(d: Mapping[str, Any]) -> Record:
    """Any exsf.state value, of any schema."""
    if d.get("record") == "copy":
        return CopyRecord.from_dict(d)
    if d.get("status") == "discard":
        return CopyRecord.from_v1(d)
    return LinkRecord.from_dict(d)


def side_from_dict(sd: Mapping[str, Any] | None) -> SideState:
    sd = dict(sd or {})
    p = sd.get("pending")
    sd["pending"] = Pending(**{**p, "sourced": tuple(p.get("sourced") or ())}) if p else None
    sd["retired"] = tuple(sd.get("retired") or ())
    return SideState(**sd)


def migrate_v1(rec: LinkRecord) -> LinkRecord:
    """Schema 1 kept no reason for an unlinked pair: read it from the record's shape."""
    if rec.status != "unlinked" or rec.reason is not None:
        return rec
    reason: UnlinkReason
    if rec.owner == "":
        reason = "owner_not_enrolled"
    elif rec.exchange.gone:
        reason = "deleted_here"
    elif rec.exchange.id is None:
        reason = "salesforce_duplicate"
    else:
        reason = "moved_out"
    return replace(rec, reason=reason)


def state_key(tenant_id: str, entity: str, link_id: str) -> str:
    return f"{tenant_id}/{entity}/{link_id}"


def copy_id(tenant_id: str, entity: str, s: Side | str, item_id: str) -> str:
    """The id of the copy record removing item `item_id` of side `s`."""
    return stable_id("discard", tenant_id, entity, s, item_id)


def other(side: Side | str) -> Side:
    return "salesforce" if side == "exchange" else "exchange"


def index_entries(rec: LinkRecord) -> dict[str, tuple[str, ...]]:
    """Where a record appears in the indexes; the single definition both the state and
    the reconciler's working overlay use."""
    ex, sf = rec.exchange, rec.salesforce
    return {
        "exchange": tuple(i for i in (ex.id, *ex.retired) if i),
        "salesforce": tuple(i for i in (sf.id, *sf.retired) if i),
        "key": rec.match_keys(),
    }


class TenantState:
    """All link records of one tenant plus derived indexes. Nothing here crosses tenants:
    the reconciler refuses inputs whose tenant differs from the state's."""

    INDEXES = ("exchange", "salesforce", "key")

    def __init__(self, tenant_id: str, records: Iterable[Record] = ()) -> None:
        self.tenant_id = tenant_id
        self.links: dict[str, LinkRecord] = {}
        self.copies: dict[str, CopyRecord] = {}  # found by id (copy_id), never by an index
        self.index: dict[str, dict[str, set[str]]] = {n: {} for n in self.INDEXES}
        self.apply(records)

    @classmethod
    def from_records(cls, tenant_id: str, records: Iterable[Record | Mapping[str, Any]]) -> TenantState:
        return cls(tenant_id, (r if isinstance(r, LinkRecord | CopyRecord) else record_from_dict(r) for r in records))

    def get(self, link_id: str) -> LinkRecord | None:
        return self.links.get(link_id)

    def get_copy(self, copy_id: str) -> CopyRecord | None:
        return self.copies.get(copy_id)

    def records(self) -> list[Record]:
        return [*self.links.values(), *self.copies.values()]

    def lookup(self, index: str, value: str) -> set[str]:
        return self.index[index].get(value, set())

    def apply(self, records: Iterable[Record]) -> None:
        """Apply changed records in place (what the service does after a decision commits)."""
        for rec in records:
            if rec.tenant_id != self.tenant_id:
                raise ValueError(f"link {rec.link_id} belongs to tenant {rec.tenant_id}, not {self.tenant_id}")
            if isinstance(rec, CopyRecord):
                self.copies[rec.link_id] = rec
                continue
            self.copies.pop(rec.link_id, None)  # a copy the person took is a pair now
            old = self.links.get(rec.link_id)
            if old is not None:
                self._unindex(old)
            self.links[rec.link_id] = rec
            for name, values in index_entries(rec).items():
                for v in values:
                    self.index[name].setdefault(v, set()).add(rec.link_id)

    def forget(self, link_ids: Iterable[str]) -> None:
        """Remove records entirely (trimmed tombstones)."""
        for lid in link_ids:
            self.copies.pop(lid, None)
            old = self.links.pop(lid, None)
            if old is not None:
                self._unindex(old)

    def _unindex(self, rec: LinkRecord) -> None:
        for name, values in index_entries(rec).items():
            for v in values:
                ids = self.index[name].get(v)
                if ids is not None:
                    ids.discard(rec.link_id)
                    if not ids:
                        del self.index[name][v]

    def with_changes(self, records: Iterable[Record]) -> TenantState:
        new = TenantState(self.tenant_id, self.records())
        new.apply(records)
        return new
