"""Which API writes the org committed, as evidence that none was applied twice.

exsf makes its Salesforce writes idempotent in two ways (services/writer/salesforce_apply.py):
a create is an upsert on the external id field holding the exsf link id, so a redelivered
create updates the record it made instead of inserting a second one; an update carries
If-Unmodified-Since with the modification time it was planned against, so a redelivered
one meets a 412. The ledger watches the committed result of exactly those (the org's
commit listener, so a rolled-back allOrNone batch counts nothing): how many records were
inserted per external id value (more than one: a create applied twice), every upsert
that found its record already there (a create applied again: harmless when nothing changed
meanwhile, an overwrite of a newer edit when something did), and every API update that
changed no field (a write repeated onto a record that already held it). An upsert is
counted when its row succeeds; an allOrNone batch rolled back by a later row (the writer
sends allOrNone=false) would still count it. A second insert is legitimate only after the
first record was deleted and exsf restored it (edit beats delete); the scaled-out test's
load never makes an edit that warrants one.
Edits made in the Salesforce UI (the admin API; no API change origin) are not counted.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from services.emulators.salesforce.schema import SOBJECTS
from services.emulators.salesforce.store import Change

# Fields the org sets on every update; a change of only these changed nothing of the record.
_BOOKKEEPING = frozenset({"LastModifiedDate", "LastModifiedById", "SystemModstamp"})


@dataclass
class WriteLedger:
    # "<sobject>.<field>=<value>" -> records inserted through the API with that external id
    inserts_by_external_id: Counter[str] = field(default_factory=Counter)
    inserts: int = 0
    # "<sobject>.<field>=<value>" of upserts that matched a record already there
    reapplied_creates: list[str] = field(default_factory=list)
    updates: int = 0
    # API updates that changed no field: {"sobject", "id", "origin"}.
    repeated_updates: list[dict[str, Any]] = field(default_factory=list)

    def upsert_existing(self, sobject: str, field_name: str, value: str) -> None:
        self.reapplied_creates.append(f"{sobject}.{field_name}={value}")

    def on_changes(self, changes: list[Change]) -> None:
        for ch in changes:
            if not ch.change_origin:  # a UI edit, not an API client's write
                continue
            if ch.change_type == "CREATE":
                self.inserts += 1
                d = SOBJECTS.get(ch.sobject)
                for name in d.external_ids if d else ():
                    value = ch.values.get(name)
                    if value not in (None, ""):
                        self.inserts_by_external_id[f"{ch.sobject}.{name}={value}"] += 1
            elif ch.change_type == "UPDATE":
                self.updates += 1
                if not set(ch.changed_fields) - _BOOKKEEPING:
                    self.repeated_updates.append({"sobject": ch.sobject, "id": ch.record_id,
                                                  "origin": ch.change_origin})

    def snapshot(self) -> dict[str, Any]:
        return {
            "inserts": self.inserts,
            "inserts_by_external_id": dict(self.inserts_by_external_id),
            "inserted_twice": sorted(k for k, n in self.inserts_by_external_id.items() if n > 1),
            "reapplied_creates": list(self.reapplied_creates),
            "updates": self.updates,
            "repeated_updates": list(self.repeated_updates),
        }
