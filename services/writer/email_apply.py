"""Email commands -> a completed Salesforce Task with the message's files.

Per batch of email commands of a tenant:
1. WhoId: context.who_id when the reconciler knows the Contact, else the first of
   context.who_emails (sender first) that matches Contact.Email - one SOQL query for the
   whole batch, not one per email.
2. The Task is upserted by link id (external id field) via upsert_many, so redelivery
   updates the same Task.
3. Each file attachment of the Graph message (context.message_id, listed with
   ExchangeClient.list_attachments) becomes a Salesforce File published to the Task
   (ContentVersion with FirstPublishLocationId). Each file carries a marker derived from
   the Graph attachment id in its Description. When the Task was not created by this
   upsert (a redelivery or a retry), the files already linked to it are read first
   (ContentDocumentLink by Task id, then their ContentVersions: two queries per batch) and
   attachments whose marker is there are skipped, so every file is created once.
An attachment Salesforce refuses for good (e.g. too large) does not undo the Task: the
result is `applied` and its `error` names the attachments left out.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import structlog

from services.connectors.salesforce import mapping
from services.connectors.salesforce.rest import SalesforceRest, SaveResult
from services.core.envelopes import Command, stable_id
from services.core.errors import ConnectorError, NotFoundError
from services.core.records import normalise_email
from services.core.tenants import Tenant
from services.writer.config import WriterSettings
from services.writer.directory import TenantDirectory
from services.writer.grouping import Item
from services.writer.outcome import Done, Later, Outcome, Transient, applied, failed
from services.writer.retry import classify, with_retries
from services.writer.salesforce_apply import SalesforceApplier, owner_of, row_outcome

log = structlog.get_logger(__name__)

FILE_ATTACHMENT = "#microsoft.graph.fileAttachment"
MARKER_PREFIX = "exsf-attachment:"
IN_CHUNK = 200


def soql_quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def attachment_marker(attachment_id: str) -> str:
    """Short and stable: Graph attachment ids are long; Description holds 1000 characters."""
    return MARKER_PREFIX + stable_id("attachment", attachment_id)


def email_body(tenant: Tenant, cmd: Command, who_id: str | None) -> dict[str, Any]:
    body = mapping.canonical_to_sf("email", cmd.fields)
    body[tenant.salesforce.external_id_field] = cmd.link_id
    owner = owner_of(tenant, cmd)
    if owner:
        body["OwnerId"] = owner
    if who_id:
        body["WhoId"] = who_id
    return body


class EmailApplier:
    def __init__(self, directory: TenantDirectory, settings: WriterSettings, sf: SalesforceApplier) -> None:
        self.directory = directory
        self.settings = settings
        self.sf = sf

    async def apply(self, tenant: Tenant, items: list[Item], suspect: set[int]) -> dict[int, Outcome]:
        rest = self.directory.salesforce(tenant)

        async def attempt(pending: dict[int, Command], n: int) -> dict[int, Outcome | Transient]:
            return await self._attempt(rest, tenant, pending, maybe_retry=set(pending) if n > 0 else suspect)

        return await with_retries({it.index: it.command for it in items}, attempt, self.settings)

    async def _attempt(self, rest: SalesforceRest, tenant: Tenant, pending: dict[int, Command],
                       maybe_retry: set[int]) -> dict[int, Outcome | Transient]:
        out: dict[int, Outcome | Transient] = {}
        try:
            who = await self._resolve_who(rest, tenant, pending)
        except ConnectorError as exc:
            return {i: classify(c, exc, self.settings) for i, c in pending.items()}
        bodies: dict[int, dict[str, Any]] = {}
        for i, cmd in pending.items():
            try:
                bodies[i] = email_body(tenant, cmd, who.get(i))
            except mapping.MappingError as exc:
                out[i] = failed(cmd, f"cannot map the email: {exc}")
        created: dict[int, bool] = {}

        def on_row(i: int, cmd: Command, row: SaveResult) -> Outcome | Transient:
            created[i] = bool(row.created)
            return row_outcome(cmd, row, self.settings)

        rows = {i: pending[i] for i in bodies}
        ext = tenant.salesforce.external_id_field
        upserted = await self.sf.collection(
            tenant, rows, lambda part: rest.upsert_many("Task", ext, [bodies[i] for i in part]), on_row)
        out.update(upserted)
        tasks = {i: str(o.result.target_id) for i, o in upserted.items()
                 if isinstance(o, Done) and o.result.status == "applied" and o.result.target_id}
        if not tasks:
            return out
        # Files can already exist only if the Task did: a Task this upsert created has none.
        check = [tasks[i] for i in tasks if i in maybe_retry or not created.get(i, False)]
        try:
            existing = await self._existing_markers(rest, tenant, check)
        except ConnectorError as exc:
            for i in tasks:
                out[i] = classify(pending[i], exc, self.settings)
            return out

        async def files(i: int) -> None:
            out[i] = await self._attachments(rest, tenant, pending[i], tasks[i], existing.get(tasks[i], set()))

        await asyncio.gather(*(files(i) for i in tasks))
        return out

    async def _resolve_who(self, rest: SalesforceRest, tenant: Tenant, pending: dict[int, Command]
                           ) -> dict[int, str]:
        who: dict[int, str] = {}
        wanted: dict[int, list[str]] = {}
        for i, cmd in pending.items():
            if cmd.context.who_id:
                who[i] = cmd.context.who_id
                continue
            emails = [e for e in (normalise_email(x) for x in cmd.context.who_emails) if e]
            if emails:
                wanted[i] = emails
        addresses = sorted({e for es in wanted.values() for e in es})
        if not addresses:
            return who
        found: dict[str, str] = {}
        for s in range(0, len(addresses), IN_CHUNK):
            part = addresses[s : s + IN_CHUNK]
            soql = ("SELECT Id, Email FROM Contact WHERE Email IN (" + ", ".join(soql_quote(a) for a in part)
                    + ") ORDER BY CreatedDate ASC")
            for rec in await self._query(rest, tenant, soql):
                email = normalise_email(rec.get("Email"))
                if email and email not in found:
                    found[email] = str(rec["Id"])
        for i, emails in wanted.items():
            match = next((found[e] for e in emails if e in found), None)
            if match:
                who[i] = match
        return who

    async def _query(self, rest: SalesforceRest, tenant: Tenant, soql: str) -> list[dict[str, Any]]:
        async def run() -> list[dict[str, Any]]:
            return [r async for r in rest.query(soql)]

        result: list[dict[str, Any]] = await self.sf.call(tenant, run)
        return result

    async def _existing_markers(self, rest: SalesforceRest, tenant: Tenant, task_ids: list[str]
                                ) -> dict[str, set[str]]:
        """Task id -> markers (and file names) of the files already linked to it."""
        out: dict[str, set[str]] = {}
        if not task_ids:
            return out
        doc_to_tasks: dict[str, set[str]] = {}
        for s in range(0, len(task_ids), IN_CHUNK):
            part = task_ids[s : s + IN_CHUNK]
            soql = ("SELECT ContentDocumentId, LinkedEntityId FROM ContentDocumentLink WHERE LinkedEntityId IN ("
                    + ", ".join(soql_quote(t) for t in part) + ")")
            for rec in await self._query(rest, tenant, soql):
                linked = str(rec.get("LinkedEntityId") or "")
                task = next((t for t in part if t[:15] == linked[:15]), linked)
                doc_to_tasks.setdefault(str(rec["ContentDocumentId"]), set()).add(task)
        docs = sorted(doc_to_tasks)
        for s in range(0, len(docs), IN_CHUNK):
            part = docs[s : s + IN_CHUNK]
            soql = ("SELECT ContentDocumentId, Description, PathOnClient FROM ContentVersion "
                    "WHERE ContentDocumentId IN (" + ", ".join(soql_quote(d) for d in part) + ")")
            for rec in await self._query(rest, tenant, soql):
                for task in doc_to_tasks.get(str(rec.get("ContentDocumentId")), set()):
                    marks = out.setdefault(task, set())
                    if rec.get("Description"):
                        marks.add(str(rec["Description"]))
        return out

    async def _attachments(self, rest: SalesforceRest, tenant: Tenant, cmd: Command, task_id: str,
                           existing: set[str]) -> Outcome | Transient:
        message_id = cmd.context.message_id
        if not message_id:
            return applied(cmd, target_id=task_id)
        graph = self.directory.exchange(tenant)
        key = (tenant.tenant_id, cmd.user.lower())
        try:
            async with self.directory.graph_gate.slot(key):
                attachments = await graph.list_attachments(cmd.user, str(message_id))
        except NotFoundError as exc:
            # The message is gone from the mailbox: the Task stands, without files.
            return applied(cmd, target_id=task_id, error=f"attachments not read: {exc}")
        except ConnectorError as exc:
            o = classify(cmd, exc, self.settings)
            return o if not isinstance(o, Done) else applied(cmd, target_id=task_id,
                                                              error=f"attachments not read: {exc}")
        left_out: list[str] = []
        for att in attachments:
            if att.get("@odata.type") != FILE_ATTACHMENT or att.get("isInline"):
                continue  # item/reference attachments have no bytes; inline images belong to the body
            marker = attachment_marker(str(att.get("id")))
            if marker in existing:
                continue
            name = str(att.get("name") or "attachment")
            body = {
                "Title": name.rsplit(".", 1)[0] if "." in name else name,
                "PathOnClient": name,
                "FirstPublishLocationId": task_id,
                "VersionData": att.get("contentBytes") or "",
                "Description": marker,
            }
            try:
                await self.sf.call(tenant, functools.partial(rest.create, "ContentVersion", body))
            except ConnectorError as exc:
                o = classify(cmd, exc, self.settings)
                if isinstance(o, Later | Transient):
                    return o  # files uploaded so far are found by marker on the next attempt
                left_out.append(f"{name}: {exc}")
                continue
            existing.add(marker)
        error = ("attachments not uploaded: " + "; ".join(left_out)) if left_out else None
        return applied(cmd, target_id=task_id, error=error)
