"""Which client writes the emulator applied, as evidence that none was applied twice.

exsf makes its Graph writes idempotent in two ways (services/writer/exchange_apply.py):
a create carries the exsf link id (an extended property; To Do tasks a linkedResource of
application "exsf"; events also the link id as transactionId) and a create that might be
a retry is looked up by it first; an update or delete carries If-Match with the changeKey
it was planned against, so a redelivered one meets a 412. The ledger watches the API side
of exactly those: how many items were created per link id (more than one: a create applied
twice), and every PATCH that changed nothing an item shows (a write repeated onto an item
that already held it). Admin-API writes (the person in Outlook) are not counted.
"""

from __future__ import annotations

import copy
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from services.emulators.graph.store import Item

# The extended property exsf stamps on contacts and events (the same id as
# services/connectors/exchange/models.LINK_PROPERTY_ID; the emulator does not import exsf).
LINK_PROPERTY_ID = "String {66f5a359-4659-4830-9070-00047ec6ac6e} Name exsfLinkId"
LINKED_RESOURCE_APP = "exsf"


def link_id_of(it: Item) -> str | None:
    hit = it.ext_value(LINK_PROPERTY_ID)
    if hit:
        return hit
    for res in it.data.get("linkedResources") or []:
        if isinstance(res, dict) and res.get("applicationName") == LINKED_RESOURCE_APP and res.get("externalId"):
            return str(res["externalId"])
    tx = it.data.get("transactionId")
    return str(tx) if tx else None


@dataclass(frozen=True)
class Snapshot:
    """What an item shows, to tell a PATCH that changed something from one that did not."""

    data: dict[str, Any]
    ext: dict[str, tuple[str, str]]
    exceptions: dict[str, dict[str, Any]]

    @classmethod
    def of(cls, it: Item) -> Snapshot:
        return cls(copy.deepcopy(it.data), dict(it.ext), copy.deepcopy(it.exceptions))


@dataclass
class WriteLedger:
    creates_by_link: Counter[str] = field(default_factory=Counter)
    creates: int = 0  # every API create, with a link id or not
    updates: int = 0  # every API PATCH applied
    # PATCHes applied that left the item as it was: {"mailbox", "item", "link_id", "if_match"}.
    repeated_updates: list[dict[str, Any]] = field(default_factory=list)

    def created(self, mailbox: str, it: Item) -> None:
        self.creates += 1
        lid = link_id_of(it)
        if lid:
            self.creates_by_link[lid] += 1

    def updated(self, mailbox: str, it: Item, before: Snapshot, if_match: str | None) -> None:
        self.updates += 1
        if Snapshot.of(it) == before:
            self.repeated_updates.append(
                {"mailbox": mailbox, "item": it.id, "link_id": link_id_of(it), "if_match": if_match})

    def snapshot(self) -> dict[str, Any]:
        return {
            "creates": self.creates,
            "creates_by_link": dict(self.creates_by_link),
            "created_twice": sorted(k for k, n in self.creates_by_link.items() if n > 1),
            "updates": self.updates,
            "repeated_updates": list(self.repeated_updates),
        }
