"""Commands -> Microsoft Graph, through ExchangeClient and `$batch` (20 sub-requests a call).

Placement: contacts go to the mailbox's "Salesforce Contacts" folder, tasks to its
"Salesforce Tasks" To Do list (ids from ensure_mailbox, cached per mailbox), events to the
user's calendar with category "Salesforce" and never with attendees (see
ExchangeClient.event_for_create). Creates carry the link id (extended property; events
also transactionId; tasks a linkedResource).

Idempotent creates: a create that *might be a retry* is looked up by link id first
(find_by_link_id) and answered from the item found. Which creates might be retries is
decided by the handler (see handler.py) and by the retry loop: any attempt after the
first, since the earlier attempt's answer may have been lost after the item was created.
An event create answered ErrorDuplicateTransactionId is the same situation, caught by Graph.

Updates and deletes send If-Match with the expected version (the changeKey): 412 is a
`conflict` (with the fresh item read back when that works), 404 is `gone`. A contact update
that rewrites a list property (emailAddresses, businessPhones, homePhones) first reads the
item (one `$batch` of GETs per 20; skipped when context.graph_item carries it) so that
the entries beyond the first survive.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from typing import Any
from urllib.parse import quote

import structlog

from services.connectors.exchange import mapping
from services.connectors.exchange.client import BATCH_LIMIT, IMMUTABLE_IDS, ExchangeClient
from services.connectors.exchange.errors_map import retry_after_of
from services.connectors.exchange.models import BatchRequest, BatchResponse, ItemKind, PreparedMailbox
from services.core.envelopes import Command
from services.core.errors import ConnectorError, NotFoundError, TransientError
from services.core.tenants import Tenant
from services.writer.config import WriterSettings
from services.writer.directory import TenantDirectory
from services.writer.grouping import Item
from services.writer.outcome import Done, Later, Outcome, Transient, applied, failed, result_of
from services.writer.retry import classify, with_retries
from services.writer.throttle import THROTTLE_STATUSES, is_throttle

log = structlog.get_logger(__name__)

KINDS: dict[str, ItemKind] = {"contact": "contact", "event": "event", "task": "task"}
JSON = "application/json"
MAX_TRACKED = 100_000


def _q(value: str) -> str:
    return quote(value, safe="")


def item_path(mailbox: str, kind: ItemKind, item_id: str, list_id: str | None) -> str:
    user = f"/users/{quote(mailbox, safe='@')}"
    if kind == "contact":
        return f"{user}/contacts/{_q(item_id)}"
    if kind == "event":
        return f"{user}/events/{_q(item_id)}"
    if kind == "task":
        if not list_id:
            raise ValueError("a task needs its To Do list id")
        return f"{user}/todo/lists/{_q(list_id)}/tasks/{_q(item_id)}"
    raise ValueError(f"no Graph path for {kind}")


# Graph list properties of which canonical records hold only the first entry: rewriting
# them needs the current item, or the other entries (second phone, other addresses) are lost.
LIST_BACKED: dict[str, frozenset[str]] = {"contact": frozenset({"email", "business_phone", "home_phone"})}


def needs_current(entity: str, cmd: Command) -> bool:
    return (bool(LIST_BACKED.get(entity, frozenset()) & set(cmd.fields))
            and cmd.context.graph_item is None and bool(cmd.target_id))


def applied_from_item(cmd: Command, entity: str, item: dict[str, Any]) -> Done:
    """The written item as the result: its canonical record and version."""
    try:
        record: dict[str, Any] | None = mapping.graph_to_canonical(entity, item)
    except mapping.MappingError:
        record = None  # the write happened; a record we cannot read back is not a failure
    return applied(
        cmd,
        target_id=str(item.get("id") or cmd.target_id or ""),
        record=record,
        new_version=mapping.version_of(item),
        modified_at=mapping.modified_at_of(item),
    )


class ExchangeApplier:
    def __init__(self, directory: TenantDirectory, settings: WriterSettings) -> None:
        self.directory = directory
        self.settings = settings
        # command_id -> how often Graph throttled it: its next request is marked as a retry
        # (Retry-Attempt, as kiota marks its own), bounded to the most recent commands.
        self._throttled: OrderedDict[str, int] = OrderedDict()

    async def apply(self, tenant: Tenant, user: str, entity: str, action: str, items: list[Item],
                    suspect: set[int]) -> dict[int, Outcome]:
        kind = KINDS.get(entity)
        if kind is None:
            return {it.index: failed(it.command, f"entity {entity!r} cannot be written to Exchange") for it in items}
        client = self.directory.exchange(tenant)
        key = (tenant.tenant_id, user.lower())

        async def attempt(pending: dict[int, Command], n: int) -> dict[int, Outcome | Transient]:
            try:
                prepared = await self.directory.prepared(tenant, user)
            except Exception as exc:
                self._note_throttle(key, exc)
                return {i: classify(c, exc, self.settings) for i, c in pending.items()}
            maybe_retry = set(pending) if n > 0 else suspect & set(pending)
            return await self._attempt(client, key, user, kind, entity, action, prepared, pending, maybe_retry)

        return await with_retries({it.index: it.command for it in items}, attempt, self.settings)

    # --- one attempt ------------------------------------------------------------------
    async def _attempt(self, client: ExchangeClient, key: tuple[str, str], user: str, kind: ItemKind, entity: str,
                       action: str, prepared: PreparedMailbox, pending: dict[int, Command],
                       maybe_retry: set[int]) -> dict[int, Outcome | Transient]:
        out: dict[int, Outcome | Transient] = {}
        if action == "create" and maybe_retry:
            out.update(await self._lookups(client, key, user, kind, entity, prepared,
                                           {i: pending[i] for i in maybe_retry}))
        currents: dict[int, dict[str, Any]] = {}
        if action == "update":
            need = {i: c for i, c in pending.items() if needs_current(entity, c)}
            if need:
                for i, got in (await self._read_current(client, key, user, kind, entity, prepared, need)).items():
                    if isinstance(got, dict):
                        currents[i] = got
                    else:
                        out[i] = got
        requests: dict[int, BatchRequest] = {}
        for i, cmd in pending.items():
            if i in out:
                continue
            try:
                requests[i] = self._request(i, cmd, user, kind, entity, action, prepared, currents.get(i))
            except (mapping.MappingError, ValueError) as exc:
                out[i] = failed(cmd, f"cannot build the Graph request: {exc}")
        for i, req in requests.items():
            tries = self._throttled.get(pending[i].command_id)
            if tries:
                req.headers["Retry-Attempt"] = str(tries)
        answers = await self._send(client, key, requests)
        conflicts: list[int] = []
        for i, answer in answers.items():
            cmd = pending[i]
            o = await self._interpret(client, key, user, kind, entity, prepared, cmd, answer)
            self._note_attempt(cmd, o)
            if isinstance(o, Done) and o.result.status == "conflict":
                conflicts.append(i)
            out[i] = o
        if conflicts:
            await self._fresh_for_conflicts(client, key, user, kind, entity, prepared, pending, conflicts, out)
        return out

    def _request(self, i: int, cmd: Command, user: str, kind: ItemKind, entity: str, action: str,
                 prepared: PreparedMailbox, current: dict[str, Any] | None = None) -> BatchRequest:
        rid = str(i)
        if action == "create":
            body = mapping.canonical_to_graph(entity, cmd.fields)
            if kind == "contact":
                req = ExchangeClient.contact_create_request(rid, user, prepared.contact_folder_id, body, cmd.link_id)
            elif kind == "event":
                req = ExchangeClient.event_create_request(rid, user, body, cmd.link_id)
            else:
                req = ExchangeClient.task_create_request(rid, user, prepared.todo_list_id, body, cmd.link_id)
            req.headers["Prefer"] = IMMUTABLE_IDS
            return req
        if not cmd.target_id:
            raise ValueError(f"{action} needs target_id")
        path = item_path(user, kind, cmd.target_id, self._list_id(cmd, prepared))
        headers = {"Prefer": IMMUTABLE_IDS}
        if cmd.expected_version:
            headers["If-Match"] = mapping.etag_of(cmd.expected_version)
        if action == "delete":
            return BatchRequest(rid, "DELETE", path, None, headers)
        if current is None:
            current = cmd.context.graph_item
        patch = mapping.canonical_patch_to_graph(entity, cmd.context.record or {}, cmd.fields, current=current)
        if kind == "event":
            patch.pop("attendees", None)  # an attendee change would send meeting updates
            patch.pop("transactionId", None)
        headers["Content-Type"] = JSON
        return BatchRequest(rid, "PATCH", path, patch, headers)

    @staticmethod
    def _list_id(cmd: Command, prepared: PreparedMailbox) -> str:
        # Tasks outside "Salesforce Tasks" (category "Salesforce" in another list) name their list.
        return cmd.context.list_id or prepared.todo_list_id

    async def _send(self, client: ExchangeClient, key: tuple[str, str],
                    requests: dict[int, BatchRequest]) -> dict[int, BatchResponse | Exception]:
        order = list(requests)
        parts = [order[s : s + BATCH_LIMIT] for s in range(0, len(order), BATCH_LIMIT)]

        async def one(part: list[int]) -> dict[int, BatchResponse | Exception]:
            try:
                async with self.directory.graph_gate.slot(key):
                    responses = await client.batch([requests[i] for i in part])
            except Exception as exc:
                self._note_throttle(key, exc)
                return dict.fromkeys(part, exc)
            got: dict[int, BatchResponse | Exception] = {}
            for i, resp in zip(part, responses, strict=True):
                if resp.status in THROTTLE_STATUSES:
                    self.directory.graph_gate.block(key, retry_after_of(resp.headers) or 0.0)
                got[i] = resp
            return got

        merged: dict[int, BatchResponse | Exception] = {}
        for got in await asyncio.gather(*(one(p) for p in parts)):
            merged.update(got)
        return merged

    def _note_attempt(self, cmd: Command, o: Outcome | Transient) -> None:
        if isinstance(o, Later):
            self._throttled[cmd.command_id] = self._throttled.pop(cmd.command_id, 0) + 1
            while len(self._throttled) > MAX_TRACKED:
                self._throttled.popitem(last=False)
        else:
            self._throttled.pop(cmd.command_id, None)

    def _note_throttle(self, key: tuple[str, str], exc: BaseException) -> None:
        if is_throttle(exc) and isinstance(exc, TransientError):
            self.directory.graph_gate.block(key, exc.retry_after or 0.0)

    async def _interpret(self, client: ExchangeClient, key: tuple[str, str], user: str, kind: ItemKind, entity: str,
                         prepared: PreparedMailbox, cmd: Command,
                         answer: BatchResponse | Exception) -> Outcome | Transient:
        if isinstance(answer, Exception):
            return classify(cmd, answer, self.settings)
        if answer.status == 0:
            return Transient("no sub-response in the $batch answer")
        err = ExchangeClient.batch_error(answer)
        if err is None:
            if cmd.action == "delete":
                return applied(cmd)
            body = answer.body if isinstance(answer.body, dict) else {}
            return applied_from_item(cmd, entity, body)
        if cmd.action == "create" and kind == "event" and (err.code or "").lower() == "errorduplicatetransactionid":
            # The event exists already (an earlier attempt landed): answer with it.
            found = await self._find(client, key, user, kind, prepared, cmd)
            if isinstance(found, dict):
                return applied_from_item(cmd, entity, found)
            return Transient("duplicate transactionId but the event was not found by link id")
        if cmd.action == "create" and isinstance(err, NotFoundError):
            # The folder or list is gone: prepare the mailbox again and retry.
            self.directory.forget_mailbox(key[0], user)
            return Transient(str(err))
        return classify(cmd, err, self.settings)

    async def _find(self, client: ExchangeClient, key: tuple[str, str], user: str, kind: ItemKind,
                    prepared: PreparedMailbox, cmd: Command) -> dict[str, Any] | Exception | None:
        container = prepared.contact_folder_id if kind == "contact" else (
            prepared.todo_list_id if kind == "task" else None)
        try:
            async with self.directory.graph_gate.slot(key):
                return await client.find_by_link_id(user, kind, cmd.link_id, container_id=container)
        except Exception as exc:
            self._note_throttle(key, exc)
            return exc

    async def _lookups(self, client: ExchangeClient, key: tuple[str, str], user: str, kind: ItemKind, entity: str,
                       prepared: PreparedMailbox, cmds: dict[int, Command]) -> dict[int, Outcome | Transient]:
        """Creates that might be retries: answer from the item carrying the link id, if any."""
        order = list(cmds)
        found = await asyncio.gather(*(self._find(client, key, user, kind, prepared, cmds[i]) for i in order))
        out: dict[int, Outcome | Transient] = {}
        for i, f in zip(order, found, strict=True):
            if isinstance(f, dict):
                log.info("writer.create_found_existing", entity=entity, link_id=cmds[i].link_id)
                out[i] = applied_from_item(cmds[i], entity, f)
            elif isinstance(f, Exception):
                # Unknown whether it exists: never create blindly.
                o = classify(cmds[i], f, self.settings)
                out[i] = o if not isinstance(o, Done) else Transient(f"lookup by link id failed: {f}")
        return out

    async def _read_current(self, client: ExchangeClient, key: tuple[str, str], user: str, kind: ItemKind,
                            entity: str, prepared: PreparedMailbox, cmds: dict[int, Command]
                            ) -> dict[int, dict[str, Any] | Outcome | Transient]:
        """The items behind updates that rewrite a list property, read in `$batch` GETs. A
        version that moved on already is a conflict (answered with the item just read, no
        PATCH sent); a missing item is gone."""
        reqs = {i: BatchRequest(str(i), "GET", item_path(user, kind, c.target_id or "", self._list_id(c, prepared)),
                                None, {"Prefer": IMMUTABLE_IDS}) for i, c in cmds.items() if c.target_id}
        out: dict[int, dict[str, Any] | Outcome | Transient] = {}
        for i, answer in (await self._send(client, key, reqs)).items():
            cmd = cmds[i]
            if isinstance(answer, Exception):
                out[i] = classify(cmd, answer, self.settings)
                continue
            err = ExchangeClient.batch_error(answer) if answer.status else None
            if answer.status == 0 or err is not None:
                out[i] = classify(cmd, err, self.settings) if err is not None else Transient("no sub-response")
                continue
            item = answer.body if isinstance(answer.body, dict) else {}
            version = mapping.version_of(item)
            if cmd.expected_version and version and version != mapping.version_of(
                    {"@odata.etag": mapping.etag_of(cmd.expected_version)}):
                try:
                    record: dict[str, Any] | None = mapping.graph_to_canonical(entity, item)
                except mapping.MappingError:
                    record = None
                out[i] = Done(result_of(cmd, "conflict", record=record, new_version=version,
                                        modified_at=mapping.modified_at_of(item),
                                        error="the item changed since the expected version"))
                continue
            out[i] = item
        return out

    async def _fresh_for_conflicts(self, client: ExchangeClient, key: tuple[str, str], user: str, kind: ItemKind,
                                   entity: str, prepared: PreparedMailbox, pending: dict[int, Command],
                                   conflicts: list[int], out: dict[int, Outcome | Transient]) -> None:
        async def fresh(i: int) -> None:
            cmd = pending[i]
            try:
                async with self.directory.graph_gate.slot(key):
                    item = await client.get_item(user, kind, cmd.target_id or "",
                                                 container_id=self._list_id(cmd, prepared) if kind == "task" else None)
                record = mapping.graph_to_canonical(entity, item)
            except (ConnectorError, mapping.MappingError) as exc:
                log.info("writer.conflict_read_failed", entity=entity, error=type(exc).__name__)
                return
            prev = out[i]
            err = prev.result.error if isinstance(prev, Done) else None
            out[i] = Done(result_of(cmd, "conflict", record=record, new_version=mapping.version_of(item),
                                    modified_at=mapping.modified_at_of(item), error=err))

        await asyncio.gather(*(fresh(i) for i in conflicts))
