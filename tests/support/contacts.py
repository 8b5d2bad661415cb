"""Expected-state bookkeeping for contacts on both sides, and the two sides' actual views.

A load generator records every create, edit and delete it makes in `ExpectedContacts`; at
the end `outlook_view` (read through Graph itself, as any client would) and
`salesforce_view` (the emulator's admin records) must equal `expected.view()` exactly:
one entry per contact, keyed by its unique email, compared field by field. A duplicate on
either side is reported, not folded away, so "nothing twice" is checked too.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from services.emulators.graph.admin_client import GraphAdminClient
from services.emulators.salesforce.admin_client import SalesforceAdmin
from tests.support.graph_api import GraphApi

FOLDER = "Salesforce Contacts"


@dataclass(frozen=True)
class ContactView:
    """The fields both sides carry for a contact, normalised as the mappings do."""

    owner: str  # mailbox
    given_name: str
    family_name: str
    email: str
    job_title: str


@dataclass
class Tracked:
    side: str  # where it was created (and, so edits never race each other, where it is edited)
    owner: str
    source_id: str
    given_name: str
    family_name: str
    email: str
    job_title: str

    def view(self) -> ContactView:
        return ContactView(self.owner, self.given_name, self.family_name, self.email, self.job_title)


@dataclass
class ExpectedContacts:
    live: dict[str, Tracked] = field(default_factory=dict)  # email -> contact
    deleted: set[str] = field(default_factory=set)
    ops: Counter[str] = field(default_factory=Counter)

    def view(self) -> dict[str, ContactView]:
        return {e: t.view() for e, t in self.live.items()}


@dataclass
class ContactLoad:
    """A seeded mixed load of contact creates, edits and deletes on both sides."""

    graph: GraphAdminClient
    salesforce: SalesforceAdmin
    sf_user_ids: dict[str, str]  # mailbox -> 005... id
    rng: random.Random
    expected: ExpectedContacts = field(default_factory=ExpectedContacts)
    _n: int = 0

    async def step(self) -> None:
        live = list(self.expected.live.values())
        roll = self.rng.random()
        if not live or roll < 0.55:
            await self.create(self.rng.choice(("exchange", "salesforce")), self.rng.choice(sorted(self.sf_user_ids)))
        elif roll < 0.85:
            await self.edit(self.rng.choice(live))
        else:
            await self.delete(self.rng.choice(live))

    async def create(self, side: str, owner: str) -> Tracked:
        self._n += 1
        n = self._n
        given, family, email, title = f"G{n}", f"Load{n}", f"c{n}@load.test", f"v{n}.0"
        if side == "exchange":
            item = await self.graph.create_item(owner, "contact", {
                "givenName": given, "surname": family, "jobTitle": title,
                "emailAddresses": [{"address": email, "name": f"{given} {family}"}],
            }, container=FOLDER)
            sid = str(item["id"])
        else:
            sid = await self.salesforce.create("Contact", {"FirstName": given, "LastName": family, "Email": email,
                                                           "Title": title}, as_user=owner)
        t = Tracked(side, owner, sid, given, family, email, title)
        self.expected.live[email] = t
        self.expected.ops[f"create.{side}"] += 1
        return t

    async def edit(self, t: Tracked) -> None:
        t.job_title = f"{t.job_title.split('.')[0]}.{int(t.job_title.split('.')[1]) + 1}"
        if self.rng.random() < 0.3:
            t.given_name = f"{t.given_name.split('-')[0]}-{self.rng.randrange(1000)}"
        if t.side == "exchange":
            await self.graph.update_item(t.owner, t.source_id, {"jobTitle": t.job_title, "givenName": t.given_name})
        else:
            await self.salesforce.update("Contact", t.source_id, {"Title": t.job_title, "FirstName": t.given_name})
        self.expected.ops[f"edit.{t.side}"] += 1

    async def delete(self, t: Tracked) -> None:
        if t.side == "exchange":
            await self.graph.delete_item(t.owner, t.source_id)
        else:
            await self.salesforce.delete("Contact", t.source_id)
        del self.expected.live[t.email]
        self.expected.deleted.add(t.email)
        self.expected.ops[f"delete.{t.side}"] += 1


def _keyed(views: list[ContactView]) -> tuple[dict[str, ContactView], list[str]]:
    counts = Counter(v.email for v in views)
    return {v.email: v for v in views}, sorted(e for e, c in counts.items() if c > 1)


async def salesforce_view(admin: SalesforceAdmin, sf_user_ids: dict[str, str]) -> tuple[dict[str, ContactView],
                                                                                          list[str]]:
    """Live Salesforce contacts by email, and the emails held more than once."""
    owners = {v: k for k, v in sf_user_ids.items()}
    views = [
        ContactView(owners.get(str(r.get("OwnerId")), str(r.get("OwnerId"))), str(r.get("FirstName") or ""),
                    str(r.get("LastName") or ""), str(r.get("Email") or "").lower(), str(r.get("Title") or ""))
        for r in await admin.records("Contact") if not r.get("IsDeleted")
    ]
    return _keyed(views)


class GraphReader:
    """Reads each mailbox's contact folder through the Graph API with an app token."""

    def __init__(self, root: str, graph: GraphAdminClient) -> None:
        self.root, self.graph = root, graph
        self.api = GraphApi(root)
        self._folders: dict[str, str] = {}

    async def close(self) -> None:
        await self.api.close()

    async def _folder(self, mailbox: str) -> str:
        if mailbox not in self._folders:
            self._folders[mailbox] = next(c["id"] for c in await self.graph.containers(mailbox)
                                          if c.get("displayName") == FOLDER)
        return self._folders[mailbox]

    async def contacts(self, mailbox: str) -> list[dict[str, Any]]:
        return await self.api.all(f"/users/{mailbox}/contactFolders/{await self._folder(mailbox)}/contacts")

    async def view(self, mailboxes: list[str]) -> tuple[dict[str, ContactView], list[str]]:
        views = []
        for mb in mailboxes:
            for c in await self.contacts(mb):
                first = (c.get("emailAddresses") or [{}])[0]
                views.append(ContactView(mb, str(c.get("givenName") or ""), str(c.get("surname") or ""),
                                         str(first.get("address") or "").lower(), str(c.get("jobTitle") or "")))
        return _keyed(views)


def diff(expected: dict[str, ContactView], got: dict[str, ContactView], dupes: list[str],
         deleted: set[str]) -> list[str]:
    """Every way `got` differs from `expected`, one line each (empty: identical)."""
    out = [f"twice: {e}" for e in dupes]
    out += [f"lost: {e}" for e in sorted(expected.keys() - got.keys())]
    out += [f"{'resurrected' if e in deleted else 'unexpected'}: {e}" for e in sorted(got.keys() - expected.keys())]
    out += [f"differs: {got[e]} != expected {expected[e]}" for e in sorted(expected.keys() & got.keys())
            if got[e] != expected[e]]
    return out
