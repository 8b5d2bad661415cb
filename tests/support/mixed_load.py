"""A seeded mixed load on both sides (contacts, events, tasks: creates, edits, deletes; filed
emails) and the two sides' actual views, for exact end-state checks.

Every item is keyed by a unique value (contact: its email; event, task: its subject; email:
its subject) and compared field by field, the owner included. An item is edited and deleted
only on the side that created it, so the expected end state needs no conflict rules. An
email moved into "Salesforce Emails" must become exactly one completed Salesforce Task
(TaskSubtype Email) holding exactly its file; the message itself stays in Outlook, out of
the compared views. The views are read as any client would: Outlook through the Graph API
with an app token, Salesforce from the emulator's records. A duplicate on either side is
reported, not folded away.

Values are normalised independently of exsf's mappings (times to UTC minutes, dates to
YYYY-MM-DD), so a mapping defect shows as a difference instead of cancelling out.
"""

from __future__ import annotations

import base64
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from datetime import tzinfo as tzinfo_t
from typing import Any

from services.connectors.exchange.timezones import zone_of
from services.emulators.graph.admin_client import GraphAdminClient
from services.emulators.salesforce.admin_client import SalesforceAdmin
from tests.support.graph_api import GraphApi

CONTACTS, TASKS, EMAILS = "Salesforce Contacts", "Salesforce Tasks", "Salesforce Emails"
ENTITIES = ("contact", "event", "task", "email")
WEIGHTS = {"contact": 0.35, "event": 0.25, "task": 0.25, "email": 0.15}
# Far enough ahead to sit in the calendar window (EXSF_CALENDAR_FUTURE_DAYS, 365 by default)
# and never in the past while the test runs; whole days, so To Do due dates are unambiguous.
DAY0 = (datetime.now(UTC) + timedelta(days=10)).date()

View = tuple[tuple[str, str], ...]  # (field, value) pairs, owner included


def view(owner: str, **fields: str) -> View:
    return (("owner", owner), *sorted(fields.items()))


@dataclass
class Tracked:
    entity: str
    side: str  # where it was created, and where it is edited and deleted
    owner: str
    source_id: str
    key: str
    fields: dict[str, str]

    def view(self) -> View:
        return view(self.owner, **self.fields)


@dataclass
class Expected:
    live: dict[str, Tracked] = field(default_factory=dict)  # "<entity>:<key>" -> item
    deleted: set[str] = field(default_factory=set)
    ops: Counter[str] = field(default_factory=Counter)

    def view(self) -> dict[str, View]:
        return {k: t.view() for k, t in self.live.items()}


def _at(day: int, hour: int) -> datetime:
    return datetime.combine(DAY0 + timedelta(days=day), datetime.min.time(), UTC) + timedelta(hours=hour)


def _minute(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M")


@dataclass
class MixedLoad:
    graph: GraphAdminClient
    salesforce: SalesforceAdmin
    sf_user_ids: dict[str, str]  # mailbox -> 005... id
    rng: random.Random
    expected: Expected = field(default_factory=Expected)
    _n: int = 0

    # How often each kind of item is picked (a share; leave one out to leave it out).
    weights: dict[str, float] = field(default_factory=lambda: dict(WEIGHTS))

    def _pick(self) -> str:
        roll, total = self.rng.random() * sum(self.weights.values()), 0.0
        for entity in ENTITIES:
            total += self.weights.get(entity, 0.0)
            if roll < total:
                return entity
        return next(e for e in reversed(ENTITIES) if self.weights.get(e))

    async def step(self) -> None:
        entity = self._pick()
        owner = self.rng.choice(sorted(self.sf_user_ids))
        if entity == "email":
            await self.file_email(owner)
            return
        live = [t for t in self.expected.live.values() if t.entity == entity]
        roll = self.rng.random()
        if not live or roll < 0.5:
            await self.create(entity, self.rng.choice(("exchange", "salesforce")), owner)
        elif roll < 0.82:
            await self.edit(self.rng.choice(live))
        else:
            await self.delete(self.rng.choice(live))

    def _next(self) -> int:
        self._n += 1
        return self._n

    # -- creates ------------------------------------------------------------------------
    async def create(self, entity: str, side: str, owner: str) -> Tracked:
        n = self._next()
        if entity == "contact":
            key = f"c{n}@load.test"
            fields = {"given_name": f"G{n}", "family_name": f"Load{n}", "email": key, "job_title": f"v{n}.0"}
        elif entity == "event":
            key = f"Event {n}"
            start = _at(n % 20, 8 + n % 8)
            fields = {"subject": key, "start": _minute(start), "end": _minute(start + timedelta(minutes=30)),
                      "location": f"Room {n}.0"}
        else:
            key = f"Task {n}"
            fields = {"subject": key, "due_date": (DAY0 + timedelta(days=n % 20)).isoformat(),
                      "status": "not_started"}
        t = Tracked(entity, side, owner, "", key, fields)
        t.source_id = await (self._create_graph(t) if side == "exchange" else self._create_sf(t))
        self.expected.live[f"{entity}:{key}"] = t
        self.expected.ops[f"create.{entity}.{side}"] += 1
        return t

    async def _create_graph(self, t: Tracked) -> str:
        f = t.fields
        if t.entity == "contact":
            item = await self.graph.create_item(t.owner, "contact", {
                "givenName": f["given_name"], "surname": f["family_name"], "jobTitle": f["job_title"],
                "emailAddresses": [{"address": f["email"], "name": f"{f['given_name']} {f['family_name']}"}],
            }, container=CONTACTS)
        elif t.entity == "event":
            item = await self.graph.create_item(t.owner, "event", {
                "subject": f["subject"], "categories": ["Salesforce"], **_graph_times(f),
                "location": {"displayName": f["location"]},
            })
        else:
            item = await self.graph.create_item(t.owner, "task", {
                "title": f["subject"], "status": _GRAPH_STATUS[f["status"]], "dueDateTime": _graph_due(f),
            }, container=TASKS)
        return str(item["id"])

    async def _create_sf(self, t: Tracked) -> str:
        sobject, body = _sf_body(t.entity, t.fields)
        return await self.salesforce.create(sobject, body, as_user=t.owner)

    # -- edits and deletes --------------------------------------------------------------
    async def edit(self, t: Tracked) -> None:
        f = t.fields
        if t.entity == "contact":
            f["job_title"] = _bump(f["job_title"])
            if self.rng.random() < 0.3:
                f["given_name"] = f"{f['given_name'].split('-')[0]}-{self.rng.randrange(1000)}"
        elif t.entity == "event":
            f["location"] = _bump(f["location"])
            if self.rng.random() < 0.4:  # move it by half an hour
                start = datetime.fromisoformat(f["start"]).replace(tzinfo=UTC) + timedelta(minutes=30)
                f["start"], f["end"] = _minute(start), _minute(start + timedelta(minutes=30))
        else:
            f["status"] = "in_progress" if f["status"] == "not_started" else "not_started"
            if self.rng.random() < 0.4:
                f["due_date"] = (date.fromisoformat(f["due_date"]) + timedelta(days=1)).isoformat()
        if t.side == "exchange":
            await self.graph.update_item(t.owner, t.source_id, _graph_patch(t.entity, f))
        else:
            sobject, body = _sf_body(t.entity, f)
            await self.salesforce.update(sobject, t.source_id, body)
        self.expected.ops[f"edit.{t.entity}.{t.side}"] += 1

    async def delete(self, t: Tracked) -> None:
        if t.side == "exchange":
            await self.graph.delete_item(t.owner, t.source_id)
        else:
            await self.salesforce.delete(_SOBJECT[t.entity], t.source_id)
        k = f"{t.entity}:{t.key}"
        del self.expected.live[k]
        self.expected.deleted.add(k)
        self.expected.ops[f"delete.{t.entity}.{t.side}"] += 1

    # -- filed emails -------------------------------------------------------------------
    async def file_email(self, owner: str) -> Tracked:
        """A message arrives with a file and the person moves it into "Salesforce Emails"."""
        n = self._next()
        subject = f"Mail {n}"
        msg = await self.graph.create_item(owner, "message", {
            "subject": subject, "body": {"contentType": "text", "content": f"body {n}"},
            "from": {"emailAddress": {"address": f"sender{n}@mail.test", "name": f"Sender {n}"}},
            "toRecipients": [{"emailAddress": {"address": owner}}],
            "internetMessageId": f"<m{n}@mail.test>", "sentDateTime": f"{DAY0.isoformat()}T09:00:00Z",
        }, container="inbox")
        await self.graph.add_attachment(owner, msg["id"], f"m{n}.txt", "text/plain",
                                        base64.b64encode(f"file {n}".encode()).decode())
        moved = await self.graph.move_item(owner, msg["id"], EMAILS)
        t = Tracked("email", "exchange", owner, str(moved["id"]), subject,
                    {"subject": f"Email: {subject}", "status": "Completed", "files": f"m{n}.txt"})
        self.expected.live[f"email:{subject}"] = t
        self.expected.ops["file.email"] += 1
        return t


_SOBJECT = {"contact": "Contact", "event": "Event", "task": "Task"}
_GRAPH_STATUS = {"not_started": "notStarted", "in_progress": "inProgress", "completed": "completed"}
_SF_STATUS = {"not_started": "Not Started", "in_progress": "In Progress", "completed": "Completed"}


def _bump(v: str) -> str:
    head, _, minor = v.rpartition(".")
    return f"{head}.{int(minor) + 1}"


def _graph_times(f: dict[str, str]) -> dict[str, Any]:
    return {"start": {"dateTime": f["start"] + ":00", "timeZone": "UTC"},
            "end": {"dateTime": f["end"] + ":00", "timeZone": "UTC"}}


def _graph_due(f: dict[str, str]) -> dict[str, str]:
    return {"dateTime": f["due_date"] + "T00:00:00", "timeZone": "UTC"}


def _graph_patch(entity: str, f: dict[str, str]) -> dict[str, Any]:
    if entity == "contact":
        return {"jobTitle": f["job_title"], "givenName": f["given_name"]}
    if entity == "event":
        return {**_graph_times(f), "location": {"displayName": f["location"]}}
    return {"status": _GRAPH_STATUS[f["status"]], "dueDateTime": _graph_due(f)}


def _sf_body(entity: str, f: dict[str, str]) -> tuple[str, dict[str, Any]]:
    if entity == "contact":
        return "Contact", {"FirstName": f["given_name"], "LastName": f["family_name"], "Email": f["email"],
                           "Title": f["job_title"]}
    if entity == "event":
        return "Event", {"Subject": f["subject"], "StartDateTime": f["start"] + ":00.000+0000",
                         "EndDateTime": f["end"] + ":00.000+0000", "DurationInMinutes": 30,
                         "Location": f["location"]}
    return "Task", {"Subject": f["subject"], "ActivityDate": f["due_date"], "Status": _SF_STATUS[f["status"]]}


# -- the two sides' views ---------------------------------------------------------------

def _keyed(items: list[tuple[str, View]]) -> tuple[dict[str, View], list[str]]:
    counts = Counter(k for k, _ in items)
    return dict(items), sorted(k for k, c in counts.items() if c > 1)


_INSTANT = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d)(?::\d\d(?:\.\d+)?)?(Z|[+-]\d\d:?\d\d)?$")


def _utc_minute(value: str | None, zone: str | None = None) -> str:
    """An instant as UTC minutes, from Salesforce (`...+0000`) or Graph (wall time + zone name,
    Windows or IANA: resolved with the zone table, the one fact taken from exsf)."""
    if not value:
        return ""
    m = _INSTANT.match(value)
    if m is None:
        return f"unparsed {value!r}"
    wall = datetime.fromisoformat(m[1])
    if m[2]:
        off = m[2].replace(":", "")
        sign = -1 if off.startswith("-") else 1
        tzinfo: tzinfo_t = UTC if off == "Z" else timezone(sign * timedelta(hours=int(off[1:3]), minutes=int(off[3:5])))
    else:
        found = zone_of(zone or "UTC")
        if found is None:
            return f"unknown zone {zone!r}"
        tzinfo = found
    return _minute(wall.replace(tzinfo=tzinfo))


async def salesforce_view(admin: SalesforceAdmin, sf_user_ids: dict[str, str]) -> tuple[dict[str, View], list[str]]:
    owners = {v: k for k, v in sf_user_ids.items()}

    def owner(r: dict[str, Any]) -> str:
        return owners.get(str(r.get("OwnerId")), str(r.get("OwnerId")))

    live = lambda rs: [r for r in rs if not r.get("IsDeleted")]  # noqa: E731
    items: list[tuple[str, View]] = []
    for r in live(await admin.records("Contact")):
        email = str(r.get("Email") or "").lower()
        items.append((f"contact:{email}", view(owner(r), given_name=str(r.get("FirstName") or ""),
                                               family_name=str(r.get("LastName") or ""), email=email,
                                               job_title=str(r.get("Title") or ""))))
    for r in live(await admin.records("Event")):
        items.append((f"event:{r.get('Subject')}", view(
            owner(r), subject=str(r.get("Subject") or ""), start=_utc_minute(r.get("StartDateTime")),
            end=_utc_minute(r.get("EndDateTime")), location=str(r.get("Location") or ""))))
    files: dict[str, list[str]] = {}
    for cv in live(await admin.records("ContentVersion")):
        files.setdefault(str(cv.get("FirstPublishLocationId")), []).append(str(cv.get("PathOnClient") or ""))
    status_of = {v: k for k, v in _SF_STATUS.items()}
    for r in live(await admin.records("Task")):
        subject = str(r.get("Subject") or "")
        if r.get("TaskSubtype") == "Email":
            key = subject.removeprefix("Email: ")
            items.append((f"email:{key}", view(owner(r), subject=subject, status=str(r.get("Status") or ""),
                                               files=",".join(sorted(files.get(str(r.get("Id")), []))))))
        else:
            items.append((f"task:{subject}", view(
                owner(r), subject=subject, due_date=str(r.get("ActivityDate") or "")[:10],
                status=status_of.get(str(r.get("Status")), str(r.get("Status"))))))
    return _keyed(items)


class GraphReader:
    """Reads each mailbox's synced places through the Graph API with an app token."""

    def __init__(self, root: str, graph: GraphAdminClient) -> None:
        self.graph = graph
        self.api = GraphApi(root)
        self._places: dict[tuple[str, str], str] = {}

    async def close(self) -> None:
        await self.api.close()

    async def _place(self, mailbox: str, name: str) -> str:
        if (mailbox, name) not in self._places:
            self._places[(mailbox, name)] = next(c["id"] for c in await self.graph.containers(mailbox)
                                                 if c.get("displayName") == name)
        return self._places[(mailbox, name)]

    async def view(self, mailboxes: list[str]) -> tuple[dict[str, View], list[str]]:
        items: list[tuple[str, View]] = []
        for mb in mailboxes:
            folder = await self._place(mb, CONTACTS)
            for c in await self.api.all(f"/users/{mb}/contactFolders/{folder}/contacts"):
                first = (c.get("emailAddresses") or [{}])[0]
                email = str(first.get("address") or "").lower()
                items.append((f"contact:{email}", view(mb, given_name=str(c.get("givenName") or ""),
                                                       family_name=str(c.get("surname") or ""), email=email,
                                                       job_title=str(c.get("jobTitle") or ""))))
            for e in await self.api.all(f"/users/{mb}/events"):
                if "Salesforce" not in (e.get("categories") or []):
                    continue
                s, en = e.get("start") or {}, e.get("end") or {}
                items.append((f"event:{e.get('subject')}", view(
                    mb, subject=str(e.get("subject") or ""), start=_utc_minute(s.get("dateTime"), s.get("timeZone")),
                    end=_utc_minute(en.get("dateTime"), en.get("timeZone")),
                    location=str((e.get("location") or {}).get("displayName") or ""))))
            todo = await self._place(mb, TASKS)
            status_of = {v: k for k, v in _GRAPH_STATUS.items()}
            for t in await self.api.all(f"/users/{mb}/todo/lists/{todo}/tasks"):
                due = (t.get("dueDateTime") or {}).get("dateTime") or ""
                items.append((f"task:{t.get('title')}", view(
                    mb, subject=str(t.get("title") or ""), due_date=str(due)[:10],
                    status=status_of.get(str(t.get("status")), str(t.get("status"))))))
        return _keyed(items)


def outlook_expected(expected: dict[str, View]) -> dict[str, View]:
    """Filed emails are compared on the Salesforce side only (they become Tasks there)."""
    return {k: v for k, v in expected.items() if not k.startswith("email:")}


def diff(expected: dict[str, View], got: dict[str, View], dupes: list[str], deleted: set[str]) -> list[str]:
    """Every way `got` differs from `expected`, one line each (empty: identical)."""
    out = [f"twice: {k}" for k in dupes]
    out += [f"lost: {k}" for k in sorted(expected.keys() - got.keys())]
    out += [f"{'resurrected' if k in deleted else 'unexpected'}: {k}" for k in sorted(got.keys() - expected.keys())]
    out += [f"differs: {k} {dict(got[k])} != expected {dict(expected[k])}" for k in sorted(expected.keys() & got.keys())
            if got[k] != expected[k]]
    return out
