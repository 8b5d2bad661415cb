"""The org's data: users, records, external-id indexes, file bodies, and write transactions.

Every write (REST, collections, admin "UI" edits) goes through `Org.transaction`, which
validates, applies, and on commit hands the resulting `Change`s to the listeners (CDC).
A failed all-or-none transaction restores the snapshots it took and publishes nothing.
"""

from __future__ import annotations

import base64
import copy
import re
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from services.emulators.salesforce import ids, recurrence, timefmt
from services.emulators.salesforce.errors import SfError, entity_deleted, invalid_field, not_found
from services.emulators.salesforce.schema import (
    CLOSED_TASK_STATUSES,
    SOBJECTS,
    FieldDef,
    SObjectDef,
    sobject,
)

_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
# Fields a change event never carries (reference §2) or that are computed from components.
NOT_IN_CHANGES = frozenset({"Id", "IsDeleted", "SystemModstamp", "Name", "MailingAddress"})

# Legacy recurring Events: what a series master hands its child occurrences, what later edits
# of the master carry over to them, and which master fields make the org rebuild the series.
SERIES_COPIED = ("Subject", "Description", "Location", "OwnerId", "WhoId", "WhatId", "IsAllDayEvent", "IsPrivate",
                 "ShowAs")
SERIES_PROPAGATED = tuple(n for n in SERIES_COPIED if n != "IsAllDayEvent")
SERIES_SHAPE = ("IsRecurrence", "RecurrenceType", "RecurrenceInterval", "RecurrenceDayOfWeekMask",
                "RecurrenceDayOfMonth", "RecurrenceInstance", "RecurrenceMonthOfYear", "RecurrenceStartDateTime",
                "RecurrenceEndDateOnly", "RecurrenceTimeZoneSidKey", "IsAllDayEvent", "StartDateTime", "EndDateTime",
                "ActivityDate", "DurationInMinutes")


@dataclass
class SfUser:
    id: str
    username: str
    password: str
    name: str


@dataclass
class Rec:
    sobject: str
    id: str
    fields: dict[str, Any]
    deleted: bool = False

    @property
    def modstamp_ms(self) -> int:
        return timefmt.parse_datetime(self.fields["SystemModstamp"])


@dataclass(frozen=True)
class WriteContext:
    user_id: str
    # "rest" for API calls; None for edits made in the Salesforce UI (admin API).
    api: str | None = "rest"
    api_version: str = "60.0"
    client: str | None = None

    @property
    def change_origin(self) -> str:
        if self.api is None:
            return ""
        origin = f"com/salesforce/api/{self.api}/{self.api_version}"
        return f"{origin};client={self.client}" if self.client else origin


@dataclass
class Change:
    sobject: str
    record_id: str
    change_type: str  # CREATE UPDATE DELETE UNDELETE
    commit_ms: int
    user_id: str
    change_origin: str
    transaction_key: str
    sequence: int
    changed_fields: list[str] = field(default_factory=list)
    values: dict[str, Any] = field(default_factory=dict)


@dataclass
class Transaction:
    ctx: WriteContext
    key: str = field(default_factory=lambda: str(uuid.uuid4()))
    changes: list[Change] = field(default_factory=list)
    # (record id, snapshot or None when the record did not exist before)
    undo: list[tuple[str, Rec | None, dict[tuple[str, str, str], str]]] = field(default_factory=list)


def parse_user_spec(spec: str, default_password: str) -> tuple[str, str]:
    """`alice@contoso.test` or `alice@contoso.test:secret`."""
    name, _, password = spec.partition(":")
    return name, password or default_password


class Org:
    def __init__(self, users: list[str], *, default_password: str = "password", api_version: str = "60.0") -> None:
        self.api_version = api_version
        self._ids = ids.IdFactory()
        self.org_id = self._ids.new(ids.PREFIXES["Organization"])
        self.users: dict[str, SfUser] = {}
        self.records: dict[str, Rec] = {}
        self.blobs: dict[str, bytes] = {}
        self._ext_index: dict[tuple[str, str, str], str] = {}
        self._ext_keys: dict[str, set[tuple[str, str, str]]] = {}
        self.clock_offset_ms = 0
        self._last_ms = 0
        self._commit_number = 1_100_670_000_000
        self.listeners: list[Callable[[list[Change]], None]] = []
        # Told of every upsert by external id that matched an existing record (sobject,
        # field, value): the write ledger's "create applied again" (ledger.py).
        self.on_upsert_existing: Callable[[str, str, str], None] | None = None
        # Series master id -> the child occurrences deleted along with it (an undelete restores them).
        self._series_deleted: dict[str, list[str]] = {}
        for spec in users:
            self.add_user(*parse_user_spec(spec, default_password))

    # --- users and time -------------------------------------------------------------------

    def add_user(self, username: str, password: str) -> SfUser:
        u = SfUser(self._ids.new(ids.PREFIXES["User"]), username, password, username.split("@")[0].title())
        self.users[username.lower()] = u
        return u

    def user(self, username: str) -> SfUser | None:
        return self.users.get(username.lower())

    def user_by_id(self, user_id: str) -> SfUser | None:
        return next((u for u in self.users.values() if u.id[:15] == user_id[:15]), None)

    def now_ms(self) -> int:
        # Strictly increasing, so that every write has its own SystemModstamp.
        ms = max(int(time.time() * 1000) + self.clock_offset_ms, self._last_ms + 1)
        self._last_ms = ms
        return ms

    def next_commit_number(self) -> int:
        self._commit_number += 1
        return self._commit_number

    # --- reads -----------------------------------------------------------------------------

    def get(self, sobject_name: str, record_id: str, *, include_deleted: bool = False) -> Rec:
        if not ids.is_valid(record_id):
            raise not_found()
        rec = self.records.get(ids.to18(record_id))
        if rec is None or rec.sobject != sobject_name:
            raise not_found()
        if rec.deleted and not include_deleted:
            raise entity_deleted()
        return rec

    def by_external_id(self, sobject_name: str, field_name: str, value: str) -> Rec | None:
        rid = self._ext_index.get((sobject_name, field_name, value))
        return self.records.get(rid) if rid else None

    def of_type(self, sobject_name: str) -> list[Rec]:
        return [r for r in self.records.values() if r.sobject == sobject_name]

    def render(self, rec: Rec, fields: list[str] | None = None) -> dict[str, Any]:
        """The REST representation: attributes first, then the fields (all when `fields` is None)."""
        d = SOBJECTS[rec.sobject]
        out: dict[str, Any] = {"attributes": {"type": rec.sobject, "url": self.url(rec.sobject, rec.id)}}
        names = fields if fields is not None else list(d.fields)
        for name in names:
            f = d.field(name)
            if f is None:
                continue
            out[f.name] = self.value(rec, f)
        return out

    def url(self, sobject_name: str, record_id: str) -> str:
        return f"/services/data/v{self.api_version}/sobjects/{sobject_name}/{record_id}"

    def value(self, rec: Rec, f: FieldDef) -> Any:
        if f.name == "Name" and rec.sobject == "Contact":
            parts = [rec.fields.get("FirstName"), rec.fields.get("LastName")]
            return " ".join(p for p in parts if p) or None
        if f.type == "address":
            comps = SOBJECTS[rec.sobject].compounds[f.name]
            vals = {k[0].lower() + k[1:]: rec.fields.get(v) for k, v in comps.items()}
            return vals if any(v is not None for v in vals.values()) else None
        if f.type == "base64":
            return self.url(rec.sobject, rec.id) + "/" + f.name if rec.fields.get(f.name) else None
        return rec.fields.get(f.name)

    # --- transactions ----------------------------------------------------------------------

    @contextmanager
    def transaction(self, ctx: WriteContext) -> Iterator[Transaction]:
        tx = Transaction(ctx)
        try:
            yield tx
        except BaseException:
            self.rollback(tx)
            raise
        self.commit(tx)

    def commit(self, tx: Transaction) -> None:
        changes, tx.changes, tx.undo = tx.changes, [], []
        if changes:
            for listener in self.listeners:
                listener(changes)

    def rollback(self, tx: Transaction) -> None:
        self.rollback_to(tx, (0, 0))

    def savepoint(self, tx: Transaction) -> tuple[int, int]:
        return len(tx.undo), len(tx.changes)

    def rollback_to(self, tx: Transaction, point: tuple[int, int]) -> None:
        """Undo one record's partial work (allOrNone=false keeps the others)."""
        n_undo, n_changes = point
        tail = tx.undo[n_undo:]
        del tx.undo[n_undo:]
        del tx.changes[n_changes:]
        for rid, snapshot, ext in reversed(tail):
            if snapshot is None:
                self.records.pop(rid, None)
                self.blobs.pop(rid, None)
            else:
                self.records[rid] = snapshot
            self._unindex(rid)
            for k, v in ext.items():
                self._ext_index[k] = v
                self._ext_keys.setdefault(v, set()).add(k)

    def _remember(self, tx: Transaction, rid: str) -> None:
        old = self.records.get(rid)
        ext = {k: rid for k in self._ext_keys.get(rid, ())}
        tx.undo.append((rid, copy.deepcopy(old) if old else None, ext))

    def _emit(self, tx: Transaction, rec: Rec, change_type: str, commit_ms: int,
              changed: list[str] | None = None) -> None:
        d = SOBJECTS[rec.sobject]
        if not d.cdc:
            return
        if change_type in ("CREATE", "UNDELETE"):
            values = {k: v for k, v in rec.fields.items() if v is not None and k not in NOT_IN_CHANGES}
            fields: list[str] = []
        elif change_type == "UPDATE":
            fields = changed or []
            values = {k: rec.fields.get(k) for k in fields}
        else:
            values, fields = {}, []
        tx.changes.append(
            Change(rec.sobject, rec.id, change_type, commit_ms, tx.ctx.user_id, tx.ctx.change_origin, tx.key,
                   len(tx.changes) + 1, fields, values)
        )

    # --- writes ----------------------------------------------------------------------------

    def create(self, tx: Transaction, sobject_name: str, values: dict[str, Any], *,
               system: dict[str, Any] | None = None) -> Rec:
        """`system`: read-only fields the org itself sets (not checked against createable)."""
        d = self._def(sobject_name)
        clean = self._coerce_all(d, values, creating=True)
        owner = clean.pop("OwnerId", None) or tx.ctx.user_id
        if "OwnerId" in d.fields:
            clean["OwnerId"] = owner
        rid = self._ids.new(ids.PREFIXES[d.name])
        now = self.now_ms()
        stamp = timefmt.rest(now)
        fields: dict[str, Any] = {n: None for n in d.fields if n not in ("Name", "MailingAddress")}
        fields.update(clean)
        fields.update(system or {})
        fields.update(
            Id=rid, IsDeleted=False, CreatedDate=stamp, CreatedById=tx.ctx.user_id, LastModifiedDate=stamp,
            LastModifiedById=tx.ctx.user_id, SystemModstamp=stamp,
        )
        self._derive(d, fields, None, now)
        missing = [f.name for f in d.fields.values() if f.required and fields.get(f.name) in (None, "")]
        if missing:
            raise SfError(400, "REQUIRED_FIELD_MISSING", f"Required fields are missing: [{', '.join(missing)}]",
                          missing)
        rec = Rec(d.name, rid, fields)
        self._check_unique(rec)
        self._remember(tx, rid)
        self.records[rid] = rec
        self._index(rec)
        self._store_blobs(d, rec)
        self._side_effects_create(tx, rec)
        self._emit(tx, rec, "CREATE", now)
        if _is_series_master(rec):
            self._expand_series(tx, rec)
        return rec

    def update(self, tx: Transaction, sobject_name: str, record_id: str, values: dict[str, Any],
               if_unmodified_since_s: int | None = None) -> Rec:
        d = self._def(sobject_name)
        rec = self.get(d.name, record_id)
        if if_unmodified_since_s is not None:
            # HTTP dates have second precision, so compare whole seconds (a weak validator).
            if timefmt.parse_datetime(rec.fields["LastModifiedDate"]) // 1000 > if_unmodified_since_s:
                raise SfError(412, "PRECONDITION_FAILED", "The requested resource has been modified since "
                              "the If-Unmodified-Since date")
        clean = self._coerce_all(d, values, creating=False)
        self._remember(tx, rec.id)
        before = dict(rec.fields)
        fields = dict(rec.fields)
        fields.update(clean)
        now = self.now_ms()
        stamp = timefmt.rest(now)
        fields.update(LastModifiedDate=stamp, LastModifiedById=tx.ctx.user_id, SystemModstamp=stamp)
        self._derive(d, fields, before, now)
        missing = [f.name for f in d.fields.values() if f.required and fields.get(f.name) in (None, "")]
        if missing:
            raise SfError(400, "REQUIRED_FIELD_MISSING", f"Required fields are missing: [{', '.join(missing)}]",
                          missing)
        new = Rec(d.name, rec.id, fields)
        self._check_unique(new)
        self.records[rec.id] = new
        self._unindex(rec.id)
        self._index(new)
        self._store_blobs(d, new)
        changed = [k for k in fields if k not in NOT_IN_CHANGES and fields[k] != before.get(k)]
        if "LastModifiedDate" not in changed:
            changed.append("LastModifiedDate")
        self._emit(tx, new, "UPDATE", now, changed)
        if _is_series_master(rec) or _is_series_master(new):
            self._update_series(tx, before, new)
        return new

    def delete(self, tx: Transaction, sobject_name: str, record_id: str) -> Rec:
        d = self._def(sobject_name)
        rec = self.get(d.name, record_id)
        self._remember(tx, rec.id)
        now = self.now_ms()
        fields = dict(rec.fields)
        fields.update(IsDeleted=True, SystemModstamp=timefmt.rest(now), LastModifiedById=tx.ctx.user_id)
        new = Rec(d.name, rec.id, fields, deleted=True)
        self.records[rec.id] = new
        self._unindex(rec.id)
        self._emit(tx, new, "DELETE", now)
        if _is_series_master(rec):
            children = self._series_children(rec.id)
            for child in children:
                self.delete(tx, "Event", child.id)
            self._series_deleted[rec.id] = [c.id for c in children]
        return new

    def undelete(self, tx: Transaction, sobject_name: str, record_id: str) -> Rec:
        d = self._def(sobject_name)
        rec = self.get(d.name, record_id, include_deleted=True)
        if not rec.deleted:
            raise SfError(400, "UNDELETE_FAILED", "Entity is not in the recycle bin")
        self._remember(tx, rec.id)
        now = self.now_ms()
        stamp = timefmt.rest(now)
        fields = dict(rec.fields)
        fields.update(IsDeleted=False, SystemModstamp=stamp, LastModifiedDate=stamp, LastModifiedById=tx.ctx.user_id)
        new = Rec(d.name, rec.id, fields)
        self._check_unique(new)
        self.records[rec.id] = new
        self._index(new)
        self._emit(tx, new, "UNDELETE", now)
        if _is_series_master(new):
            for child_id in self._series_deleted.get(new.id, []):
                child = self.records.get(child_id)
                if child is not None and child.deleted:
                    self.undelete(tx, "Event", child_id)
        return new

    # --- legacy recurring events ------------------------------------------------------------

    def _series_children(self, master_id: str) -> list[Rec]:
        return [r for r in self.records.values() if r.sobject == "Event" and not r.deleted
                and r.fields.get("RecurrenceActivityId") == master_id]

    def _expand_series(self, tx: Transaction, master: Rec) -> None:
        """One child Event per occurrence, created in the master's transaction."""
        common = {n: master.fields[n] for n in SERIES_COPIED if master.fields.get(n) is not None}
        for times in recurrence.occurrences(master.fields):
            self.create(tx, "Event", {**common, **times}, system={"RecurrenceActivityId": master.id})

    def _update_series(self, tx: Transaction, before: dict[str, Any], master: Rec) -> None:
        """A new pattern or new times rebuild the series; other edits reach the children that
        still had the master's old value."""
        after = master.fields
        if any(after.get(n) != before.get(n) for n in SERIES_SHAPE):
            for child in self._series_children(master.id):
                self.delete(tx, "Event", child.id)
            if after.get("IsRecurrence"):
                self._expand_series(tx, master)
            return
        edited = [n for n in SERIES_PROPAGATED if after.get(n) != before.get(n)]
        if not edited:
            return
        for child in self._series_children(master.id):
            values = {n: after.get(n) for n in edited if child.fields.get(n) == before.get(n)}
            if values:
                self.update(tx, "Event", child.id, values)

    # --- helpers ---------------------------------------------------------------------------

    def _def(self, name: str) -> SObjectDef:
        d = sobject(name)
        if d is None:
            raise SfError(404, "NOT_FOUND", f"The requested resource does not exist: sObject type '{name}'")
        return d

    def _coerce_all(self, d: SObjectDef, values: dict[str, Any], *, creating: bool) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, value in values.items():
            if name == "attributes":
                continue
            f = d.field(name)
            if f is None:
                raise invalid_field(d.name, name)
            if name == "Id" and not creating:
                continue
            if not (f.createable if creating else f.updateable):
                raise SfError(400, "INVALID_FIELD_FOR_INSERT_UPDATE",
                              f"Unable to create/update fields: {f.name}. Please check the security settings of "
                              "this field and verify that it is read/write for your profile or permission set.",
                              [f.name])
            out[f.name] = self._coerce(d, f, value)
        return out

    def _coerce(self, d: SObjectDef, f: FieldDef, value: Any) -> Any:
        if value is None or (value == "" and f.type not in ("string", "textarea")):
            return None
        t = f.type
        bad = SfError(400, "JSON_PARSER_ERROR",
                      f"Cannot deserialize instance of {t} from value {str(value)[:40]!r} for field {f.name}",
                      [f.name])
        if t in ("string", "textarea", "email", "phone", "picklist"):
            if isinstance(value, bool) or not isinstance(value, str | int | float):
                raise bad
            s = str(value)
            if s == "":
                return None
            if f.max_length and len(s) > f.max_length:
                raise SfError(400, "STRING_TOO_LONG", f"{f.name}: data value too large: {s[:20]}... "
                              f"(max length={f.max_length})", [f.name])
            if t == "picklist" and f.picklist and s not in f.picklist:
                raise SfError(400, "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                              f"{f.name}: bad value for restricted picklist field: {s}", [f.name])
            if t == "email" and not _EMAIL_RE.match(s):
                raise SfError(400, "INVALID_EMAIL_ADDRESS", f"Email: invalid email address: {s}", [f.name])
            return s
        if t == "boolean":
            if isinstance(value, bool):
                return value
            if value in ("true", "false"):
                return value == "true"
            raise bad
        if t == "datetime":
            try:
                return timefmt.rest(timefmt.parse_datetime(str(value)))
            except ValueError:
                raise bad from None
        if t == "date":
            try:
                return timefmt.parse_date(str(value))
            except ValueError:
                raise bad from None
        if t == "int":
            if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value:
                raise bad
            return int(value)
        if t == "double":
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise bad
            return float(value)
        if t == "reference":
            if not ids.is_valid(value):
                raise SfError(400, "MALFORMED_ID", f"{f.name}: id value of incorrect type: {value}", [f.name])
            rid = ids.to18(value)
            self._check_reference(f, rid)
            return rid
        if t == "base64":
            if not isinstance(value, str):
                raise bad
            try:
                base64.b64decode(value, validate=True)
            except ValueError:
                raise bad from None
            return value
        raise bad

    def _check_reference(self, f: FieldDef, rid: str) -> None:
        prefix_types = {v: k for k, v in ids.PREFIXES.items()}
        target = prefix_types.get(rid[:3])
        if f.reference_to and target not in f.reference_to and not (target == "Contact" and f.name == "WhoId"):
            raise SfError(400, "FIELD_INTEGRITY_EXCEPTION",
                          f"{f.name}: id value of incorrect type: {rid}", [f.name])
        exists = (
            self.user_by_id(rid) is not None
            if target == "User"
            else (rid in self.records and not self.records[rid].deleted) if target in SOBJECTS else True
        )
        if not exists:
            raise SfError(400, "INVALID_CROSS_REFERENCE_KEY", f"invalid cross reference id: {rid}", [f.name])

    def _check_unique(self, rec: Rec) -> None:
        for name in SOBJECTS[rec.sobject].external_ids:
            v = rec.fields.get(name)
            if v is None:
                continue
            other = self._ext_index.get((rec.sobject, name, v))
            if other and other != rec.id:
                raise SfError(400, "DUPLICATE_VALUE",
                              f"duplicate value found: {name} duplicates value on record with id: {other}", [name])

    def _index(self, rec: Rec) -> None:
        if rec.deleted:
            return
        for name in SOBJECTS[rec.sobject].external_ids:
            v = rec.fields.get(name)
            if v is not None:
                key = (rec.sobject, name, v)
                self._ext_index[key] = rec.id
                self._ext_keys.setdefault(rec.id, set()).add(key)

    def _unindex(self, rid: str) -> None:
        for k in self._ext_keys.pop(rid, set()):
            if self._ext_index.get(k) == rid:
                del self._ext_index[k]

    def _store_blobs(self, d: SObjectDef, rec: Rec) -> None:
        for f in d.fields.values():
            if f.type == "base64" and rec.fields.get(f.name):
                data = base64.b64decode(rec.fields[f.name])
                self.blobs[rec.id] = data
                # Keep the bytes out of the record itself; the API serves them at .../{field}.
                rec.fields[f.name] = "stored"
                size_field = "ContentSize" if d.name == "ContentVersion" else "BodyLength"
                if size_field in d.fields:
                    rec.fields[size_field] = len(data)

    def _derive(self, d: SObjectDef, fields: dict[str, Any], before: dict[str, Any] | None, now: int) -> None:
        if d.name == "Event":
            _derive_event(fields, before)
        elif d.name == "Task":
            closed = fields.get("Status") in CLOSED_TASK_STATUSES
            if before is None:
                fields["Status"] = fields.get("Status") or "Not Started"
                fields["Priority"] = fields.get("Priority") or "Normal"
                fields["TaskSubtype"] = fields.get("TaskSubtype") or "Task"
                fields["IsArchived"] = False
                closed = fields["Status"] in CLOSED_TASK_STATUSES
            fields["IsClosed"] = closed
            fields["IsHighPriority"] = fields.get("Priority") == "High"
            was_closed = bool(before and before.get("IsClosed"))
            if closed and not was_closed:
                fields["CompletedDateTime"] = timefmt.rest(now)
            elif not closed:
                fields["CompletedDateTime"] = None
            fields["IsReminderSet"] = bool(fields.get("IsReminderSet"))
        elif d.name == "ContentVersion" and before is None:
            path = fields.get("PathOnClient") or ""
            ext = path.rsplit(".", 1)[1].lower() if "." in path else ""
            fields["Title"] = fields.get("Title") or (path.rsplit(".", 1)[0] if path else None)
            fields["FileExtension"] = ext or None
            fields["FileType"] = ext.upper() or "UNKNOWN"
            fields["IsLatest"] = True
            fields["VersionNumber"] = "1"

    def _side_effects_create(self, tx: Transaction, rec: Rec) -> None:
        if rec.sobject != "ContentVersion":
            return
        f = rec.fields
        if f.get("ContentDocumentId"):
            doc = self.get("ContentDocument", f["ContentDocumentId"])
            doc_fields = dict(doc.fields)
            self._remember(tx, doc.id)
            for v in self.of_type("ContentVersion"):
                if v.fields.get("ContentDocumentId") == doc.id and v.id != rec.id:
                    v.fields["IsLatest"] = False
            doc_fields.update(LatestPublishedVersionId=rec.id, ContentSize=f.get("ContentSize"))
            self.records[doc.id] = Rec("ContentDocument", doc.id, doc_fields)
            return
        doc = self.create(tx, "ContentDocument", {"Title": f.get("Title"), "OwnerId": f.get("OwnerId")})
        doc.fields.update(LatestPublishedVersionId=rec.id, FileExtension=f.get("FileExtension"),
                          FileType=f.get("FileType"), ContentSize=f.get("ContentSize"))
        f["ContentDocumentId"] = doc.id
        # The owner always gets a link; FirstPublishLocationId adds the record it was published to.
        self.create(tx, "ContentDocumentLink",
                    {"ContentDocumentId": doc.id, "LinkedEntityId": f["OwnerId"], "ShareType": "I",
                     "Visibility": "AllUsers"})
        if f.get("FirstPublishLocationId") and f["FirstPublishLocationId"] != f["OwnerId"]:
            self.create(tx, "ContentDocumentLink",
                        {"ContentDocumentId": doc.id, "LinkedEntityId": f["FirstPublishLocationId"],
                         "ShareType": "V", "Visibility": "AllUsers"})


def _is_series_master(rec: Rec) -> bool:
    """A legacy series master: IsRecurrence set, and not itself an occurrence of a series."""
    return rec.sobject == "Event" and bool(rec.fields.get("IsRecurrence")) and not rec.fields.get(
        "RecurrenceActivityId")


def _derive_event(fields: dict[str, Any], before: dict[str, Any] | None) -> None:
    """Keep StartDateTime/ActivityDateTime/ActivityDate, EndDateTime and DurationInMinutes consistent
    the way Salesforce does: a new start keeps the duration unless an end or duration is given."""
    b = before or {}

    def changed(name: str) -> bool:
        return fields.get(name) != b.get(name)

    fields["IsAllDayEvent"] = bool(fields.get("IsAllDayEvent"))
    fields["IsPrivate"] = bool(fields.get("IsPrivate"))
    fields["IsReminderSet"] = bool(fields.get("IsReminderSet"))
    fields["IsRecurrence"] = bool(fields.get("IsRecurrence"))
    fields["IsChild"] = bool(fields.get("IsChild"))
    fields["IsGroupEvent"] = bool(fields.get("IsGroupEvent"))
    fields["ShowAs"] = fields.get("ShowAs") or "Busy"
    fields["EventSubtype"] = fields.get("EventSubtype") or "Event"
    if changed("ActivityDateTime") and not changed("StartDateTime"):
        fields["StartDateTime"] = fields.get("ActivityDateTime")
    if fields["IsAllDayEvent"]:
        day = fields.get("ActivityDate")
        if changed("StartDateTime") and fields.get("StartDateTime") and not changed("ActivityDate"):
            day = fields["StartDateTime"][:10]
        if day is None and fields.get("StartDateTime"):
            day = fields["StartDateTime"][:10]
        if day is None:
            raise SfError(400, "REQUIRED_FIELD_MISSING", "Required fields are missing: [ActivityDate]",
                          ["ActivityDate"])
        if changed("EndDateTime") and fields.get("EndDateTime") and not changed("DurationInMinutes"):
            days = (timefmt.date_to_ms(fields["EndDateTime"][:10]) - timefmt.date_to_ms(day)) // 86_400_000 + 1
        else:
            days = max(1, (fields.get("DurationInMinutes") or 1440) // 1440)
        start = timefmt.date_to_ms(day)
        fields.update(
            ActivityDate=day,
            StartDateTime=timefmt.rest(start),
            ActivityDateTime=timefmt.rest(start),
            DurationInMinutes=1440 * days,
            # All-day ends are inclusive dates at midnight GMT.
            EndDateTime=timefmt.rest(start + (days - 1) * 86_400_000),
            EndDate=timefmt.add_days(day, days - 1),
        )
        return
    start_s = fields.get("StartDateTime")
    if not start_s:
        raise SfError(400, "REQUIRED_FIELD_MISSING", "Required fields are missing: [StartDateTime]",
                      ["StartDateTime"])
    start = timefmt.parse_datetime(start_s)
    end_s = fields.get("EndDateTime")
    duration = fields.get("DurationInMinutes")
    if end_s and (changed("EndDateTime") or not changed("DurationInMinutes")) and (
        changed("EndDateTime") or duration is None
    ):
        end = timefmt.parse_datetime(end_s)
    elif duration is not None:
        end = start + int(duration) * 60_000
    else:
        raise SfError(400, "REQUIRED_FIELD_MISSING", "Required fields are missing: [DurationInMinutes]",
                      ["DurationInMinutes"])
    if end < start:
        raise SfError(400, "FIELD_INTEGRITY_EXCEPTION", "End Date Time: End time can't be before start time.",
                      ["EndDateTime"])
    fields.update(
        StartDateTime=timefmt.rest(start),
        ActivityDateTime=timefmt.rest(start),
        ActivityDate=timefmt.ms_to_date(start),
        EndDateTime=timefmt.rest(end),
        EndDate=timefmt.ms_to_date(end),
        DurationInMinutes=(end - start) // 60_000,
    )
