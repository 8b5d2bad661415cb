"""Commands -> Salesforce REST through SalesforceRest and sObject Collections.

- create: upsert on the tenant's external id field (value = link id) via upsert_many, 200
  records a call; an upsert is idempotent by nature, so a redelivered create needs no
  lookup. OwnerId comes from context.owner_id, else from the enrolled user's Salesforce
  id in the tenant config (owner_of). Only ids come back, so new_version stays
  None (the CDC echo brings the version to the reconciler).
- update: with context.expected_modified_at one PATCH per record with If-Unmodified-Since
  (sObject Collections take no conditional headers); without it, update_many (200 a call).
  412 -> `conflict` with the fresh record read back (one get_many for all conflicts of the
  group); NOT_FOUND / ENTITY_IS_DELETED -> `gone`.
- delete: delete_many (200 a call); a record already gone -> `gone`.
Calls for one org run at most `salesforce_concurrency` at a time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from services.connectors.salesforce import mapping
from services.connectors.salesforce.errors_map import error_for_record
from services.connectors.salesforce.rest import COLLECTION_LIMIT, SalesforceRest, SaveResult
from services.core.envelopes import Command
from services.core.errors import ConnectorError
from services.core.tenants import Tenant
from services.writer.config import WriterSettings
from services.writer.directory import TenantDirectory
from services.writer.grouping import Item
from services.writer.outcome import Done, Outcome, Transient, applied, failed, gone, result_of
from services.writer.retry import classify, with_retries

log = structlog.get_logger(__name__)

# Row errors that mean "the record is not there" for an update or delete.
GONE_CODES = frozenset({"NOT_FOUND", "ENTITY_IS_DELETED", "INVALID_CROSS_REFERENCE_KEY"})
SF_ENTITIES = ("contact", "event", "task")


def read_fields(entity: str) -> list[str]:
    """The sObject fields a canonical record of `entity` is read from (for conflicts)."""
    names: list[str] = []
    for g in mapping.TABLES[entity]:
        for f in g.fields:
            if f not in names:
                names.append(f)
    return ["Id", *names, "LastModifiedDate", "SystemModstamp"]


def create_body(tenant: Tenant, cmd: Command) -> dict[str, Any]:
    body = mapping.canonical_to_sf(cmd.entity, cmd.fields)
    body[tenant.salesforce.external_id_field] = cmd.link_id
    owner = owner_of(tenant, cmd)
    if owner:
        body["OwnerId"] = owner
    return body


def owner_of(tenant: Tenant, cmd: Command) -> str | None:
    """The Salesforce owner of a record created for this command's user."""
    if cmd.context.owner_id:
        return cmd.context.owner_id
    user = tenant.user_by_mailbox(cmd.user)
    return user.salesforce_user_id if user is not None and user.salesforce_user_id else None


def row_outcome(cmd: Command, row: SaveResult, settings: WriterSettings) -> Outcome | Transient:
    if row.success:
        return applied(cmd, target_id=row.id or cmd.target_id)
    code = row.error_code or ""
    message = "; ".join(e.message for e in row.errors) or "no message"
    if cmd.action != "create" and code in GONE_CODES:
        return gone(cmd, f"{code}: {message}")
    return classify(cmd, error_for_record(code, message, f"{cmd.action} {cmd.entity}"), settings)


class SalesforceApplier:
    def __init__(self, directory: TenantDirectory, settings: WriterSettings) -> None:
        self.directory = directory
        self.settings = settings

    async def call(self, tenant: Tenant, fn: Callable[[], Awaitable[Any]]) -> Any:
        async with self.directory.salesforce_gate.slot(tenant.tenant_id):
            return await fn()

    async def apply(self, tenant: Tenant, entity: str, action: str, items: list[Item],
                    suspect: set[int]) -> dict[int, Outcome]:
        # `suspect` needs no special handling here: upserts by link id are idempotent.
        if entity not in SF_ENTITIES:
            return {it.index: failed(it.command, f"entity {entity!r} cannot be {action}d here") for it in items}
        rest = self.directory.salesforce(tenant)
        sobject = mapping.sobject_for(entity)

        async def attempt(pending: dict[int, Command], n: int) -> dict[int, Outcome | Transient]:
            if action == "create":
                return await self._create(rest, tenant, sobject, pending)
            if action == "update":
                out = await self._update(rest, tenant, sobject, pending)
                await self._fresh_for_conflicts(rest, tenant, entity, sobject, pending, out)
                return out
            return await self._delete(rest, tenant, pending)

        return await with_retries({it.index: it.command for it in items}, attempt, self.settings)

    async def collection(
        self,
        tenant: Tenant,
        rows: dict[int, Command],
        send: Callable[[list[int]], Awaitable[list[SaveResult]]],
        on_row: Callable[[int, Command, SaveResult], Outcome | Transient] | None = None,
    ) -> dict[int, Outcome | Transient]:
        """`send` one collection call per 200 rows (in parallel under the org's gate);
        each row's SaveResult -> outcome (`on_row`, default `row_outcome`)."""
        order = list(rows)
        parts = [order[s : s + COLLECTION_LIMIT] for s in range(0, len(order), COLLECTION_LIMIT)]

        async def one(part: list[int]) -> dict[int, Outcome | Transient]:
            try:
                results = await self.call(tenant, lambda: send(part))
            except ConnectorError as exc:
                return {i: classify(rows[i], exc, self.settings) for i in part}
            if len(results) != len(part):
                return {i: Transient("collection answer has the wrong number of rows") for i in part}
            if on_row is not None:
                return {i: on_row(i, rows[i], r) for i, r in zip(part, results, strict=True)}
            return {i: row_outcome(rows[i], r, self.settings) for i, r in zip(part, results, strict=True)}

        out: dict[int, Outcome | Transient] = {}
        for got in await asyncio.gather(*(one(p) for p in parts)):
            out.update(got)
        return out

    async def _create(self, rest: SalesforceRest, tenant: Tenant, sobject: str,
                      pending: dict[int, Command]) -> dict[int, Outcome | Transient]:
        out: dict[int, Outcome | Transient] = {}
        bodies: dict[int, dict[str, Any]] = {}
        for i, cmd in pending.items():
            try:
                bodies[i] = create_body(tenant, cmd)
            except mapping.MappingError as exc:
                out[i] = failed(cmd, f"cannot map the record: {exc}")
        ext = tenant.salesforce.external_id_field
        rows = {i: pending[i] for i in bodies}
        out.update(await self.collection(
            tenant, rows, lambda part: rest.upsert_many(sobject, ext, [bodies[i] for i in part])))
        return out

    async def _update(self, rest: SalesforceRest, tenant: Tenant, sobject: str,
                      pending: dict[int, Command]) -> dict[int, Outcome | Transient]:
        out: dict[int, Outcome | Transient] = {}
        plain: dict[int, dict[str, Any]] = {}
        conditional: dict[int, dict[str, Any]] = {}
        for i, cmd in pending.items():
            record = cmd.context.record
            try:
                body = mapping.canonical_patch_to_sf(cmd.entity, cmd.fields, record)
            except mapping.MappingError as exc:
                out[i] = failed(cmd, f"cannot map the patch: {exc}")
                continue
            if not cmd.target_id:
                out[i] = failed(cmd, "update needs target_id")
            elif not body:
                out[i] = applied(cmd)  # nothing this side stores changed
            elif cmd.context.expected_modified_at:
                conditional[i] = body
            else:
                plain[i] = {"Id": cmd.target_id, **body}
        if plain:
            rows = {i: pending[i] for i in plain}
            out.update(await self.collection(
                tenant, rows, lambda part: rest.update_many(sobject, [plain[i] for i in part])))

        async def one(i: int) -> None:
            cmd = pending[i]
            since = cmd.context.expected_modified_at or ""
            try:
                await self.call(tenant, lambda: rest.update(sobject, cmd.target_id or "", conditional[i],
                                                            if_unmodified_since=since))
                out[i] = applied(cmd)
            except ConnectorError as exc:
                if exc.code in GONE_CODES:
                    out[i] = gone(cmd, str(exc))
                else:
                    out[i] = classify(cmd, exc, self.settings)

        await asyncio.gather(*(one(i) for i in conditional))
        return out

    async def _delete(self, rest: SalesforceRest, tenant: Tenant,
                      pending: dict[int, Command]) -> dict[int, Outcome | Transient]:
        out: dict[int, Outcome | Transient] = {}
        rows: dict[int, Command] = {}
        for i, cmd in pending.items():
            if cmd.target_id:
                rows[i] = cmd
            else:
                out[i] = failed(cmd, "delete needs target_id")
        out.update(await self.collection(
            tenant, rows, lambda part: rest.delete_many([rows[i].target_id or "" for i in part])))
        return out

    async def _fresh_for_conflicts(self, rest: SalesforceRest, tenant: Tenant, entity: str, sobject: str,
                                   pending: dict[int, Command], out: dict[int, Outcome | Transient]) -> None:
        conflicts = [i for i, o in out.items() if isinstance(o, Done) and o.result.status == "conflict"]
        if not conflicts:
            return
        try:
            recs = await self.call(tenant, lambda: rest.get_many(
                sobject, [pending[i].target_id or "" for i in conflicts], read_fields(entity)))
        except ConnectorError as exc:
            log.info("writer.conflict_read_failed", entity=entity, error=type(exc).__name__)
            return
        for i, rec in zip(conflicts, recs, strict=False):
            if not rec:
                continue
            prev = out[i]
            err = prev.result.error if isinstance(prev, Done) else None
            try:
                record = mapping.sf_to_canonical(entity, rec)
            except mapping.MappingError:
                continue
            out[i] = Done(result_of(pending[i], "conflict", record=record, new_version=mapping.version_of(rec),
                                    modified_at=mapping.modified_at_of(rec), error=err))
