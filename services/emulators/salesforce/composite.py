"""sObject Collections (/composite/sobjects): create, update, upsert, delete and read up to
200 records in one call, with per-record results in input order and allOrNone rollback."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from services.emulators.salesforce import ids
from services.emulators.salesforce.errors import SfError
from services.emulators.salesforce.gate import Call, RestGate, json_response
from services.emulators.salesforce.rest import sobject_or_404
from services.emulators.salesforce.store import Org, Transaction

_ROLLED_BACK = {
    "statusCode": "ALL_OR_NONE_OPERATION_ROLLED_BACK",
    "message": "Record rolled back because not all records were valid and the request was using AllOrNone header",
    "fields": [],
}

# One record's work: returns (id, created or None).
Op = Callable[[Transaction], tuple[str | None, bool | None]]


class CollectionsApi:
    def __init__(self, gate: RestGate) -> None:
        self.gate = gate

    @property
    def org(self) -> Org:
        return self.gate.org

    def routes(self) -> list[web.RouteDef]:
        w = self.gate.wrap
        base = "/services/data/v{version}/composite/sobjects"
        return [
            web.post(base, w("collections_create", self.create, collections=True)),
            web.patch(base, w("collections_update", self.update, collections=True)),
            web.delete(base, w("collections_delete", self.delete, collections=True)),
            web.get(base + "/{sobject}", w("collections_read", self.read, collections=True)),
            web.patch(base + "/{sobject}/{field}", w("collections_upsert", self.upsert, collections=True)),
        ]

    async def _body(self, call: Call) -> tuple[bool, list[dict[str, Any]]]:
        body = await call.json()
        if not isinstance(body, dict) or not isinstance(body.get("records"), list):
            raise SfError(400, "JSON_PARSER_ERROR", "Expected {\"allOrNone\": bool, \"records\": [...]}")
        records = body["records"]
        self._check_size(len(records))
        if not all(isinstance(r, dict) for r in records):
            raise SfError(400, "JSON_PARSER_ERROR", "Every record must be a JSON object")
        return bool(body.get("allOrNone", False)), records

    def _check_size(self, n: int) -> None:
        limit = self.gate.config.collection_limit
        if n > limit:
            raise SfError(400, "EXCEEDED_ID_LIMIT",
                          f"record limit reached. cannot submit more than {limit} records into this call")

    def _run(self, call: Call, all_or_none: bool, ops: list[Op], ids_hint: list[str | None]) -> web.Response:
        tx = Transaction(call.ctx)
        results: list[dict[str, Any]] = []
        failed = False
        for op, hint in zip(ops, ids_hint, strict=True):
            point = self.org.savepoint(tx)
            try:
                rid, created = op(tx)
            except SfError as exc:
                self.org.rollback_to(tx, point)
                failed = True
                r: dict[str, Any] = {"success": False, "errors": [exc.collection_error()]}
                if hint:
                    r["id"] = hint
                results.append(r)
                continue
            ok: dict[str, Any] = {"id": rid, "success": True, "errors": []}
            if created is not None:
                ok["created"] = created
            results.append(ok)
        if failed and all_or_none:
            self.org.rollback(tx)
            results = [
                r if not r["success"] else {"id": hint, "success": False, "errors": [dict(_ROLLED_BACK)]}
                for r, hint in zip(results, ids_hint, strict=True)
            ]
        else:
            self.org.commit(tx)
        return json_response(results)

    @staticmethod
    def _type(rec: dict[str, Any]) -> str:
        t = (rec.get("attributes") or {}).get("type")
        if not t:
            raise SfError(400, "INVALID_TYPE", "Must send a concrete entity type.")
        return str(sobject_or_404(t).name)

    async def create(self, call: Call) -> web.Response:
        all_or_none, records = await self._body(call)

        def op_for(rec: dict[str, Any]) -> Op:
            def op(tx: Transaction) -> tuple[str | None, bool | None]:
                if "Id" in rec:
                    raise SfError(400, "INVALID_FIELD_FOR_INSERT_UPDATE", "cannot specify Id in an insert call",
                                  ["Id"])
                return self.org.create(tx, self._type(rec), rec).id, None
            return op

        return self._run(call, all_or_none, [op_for(r) for r in records], [None] * len(records))

    async def update(self, call: Call) -> web.Response:
        all_or_none, records = await self._body(call)

        def op_for(rec: dict[str, Any]) -> Op:
            def op(tx: Transaction) -> tuple[str | None, bool | None]:
                rid = rec.get("Id")
                if not rid:
                    raise SfError(400, "MISSING_ARGUMENT", "Id not specified in an update call", ["Id"])
                if not ids.is_valid(rid):
                    raise SfError(400, "MALFORMED_ID", f"Record ID: id value of incorrect type: {rid}", ["Id"])
                return self.org.update(tx, self._type(rec), rid, rec).id, None
            return op

        hints = [r.get("Id") if isinstance(r.get("Id"), str) else None for r in records]
        return self._run(call, all_or_none, [op_for(r) for r in records], hints)

    async def upsert(self, call: Call) -> web.Response:
        d = sobject_or_404(call.request.match_info["sobject"])
        f = d.field(call.request.match_info["field"])
        if f is None or not f.external_id:
            raise SfError(404, "NOT_FOUND", "Provided external ID field does not exist or is not accessible: "
                          f"{call.request.match_info['field']}")
        all_or_none, records = await self._body(call)

        def op_for(rec: dict[str, Any]) -> Op:
            def op(tx: Transaction) -> tuple[str | None, bool | None]:
                if self._type(rec) != d.name:
                    raise SfError(400, "INVALID_TYPE", f"This upsert call accepts only {d.name} records")
                value = rec.get(f.name)
                if value in (None, ""):
                    raise SfError(400, "MISSING_ARGUMENT", f"{f.name} not specified", [f.name])
                existing = self.org.by_external_id(d.name, f.name, str(value))
                body = {k: v for k, v in rec.items() if k not in ("attributes", "Id")}
                if existing is not None:
                    body.pop(f.name, None)
                    rid = self.org.update(tx, d.name, existing.id, body).id
                    if self.org.on_upsert_existing is not None:
                        self.org.on_upsert_existing(d.name, f.name, str(value))
                    return rid, False
                return self.org.create(tx, d.name, body).id, True
            return op

        return self._run(call, all_or_none, [op_for(r) for r in records], [None] * len(records))

    async def delete(self, call: Call) -> web.Response:
        raw = call.request.query.get("ids", "")
        id_list = [i.strip() for i in raw.split(",") if i.strip()]
        if not id_list:
            raise SfError(400, "MISSING_ARGUMENT", "ids parameter is required")
        self._check_size(len(id_list))
        all_or_none = call.request.query.get("allOrNone", "false").lower() == "true"

        def op_for(rid: str) -> Op:
            def op(tx: Transaction) -> tuple[str | None, bool | None]:
                if not ids.is_valid(rid):
                    raise SfError(400, "MALFORMED_ID", f"malformed id {rid}", ["Id"])
                rec = self.org.records.get(ids.to18(rid))
                if rec is None:
                    raise SfError(404, "INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id")
                if rec.deleted:
                    raise SfError(404, "ENTITY_IS_DELETED", "entity is deleted")
                return self.org.delete(tx, rec.sobject, rec.id).id, None
            return op

        return self._run(call, all_or_none, [op_for(i) for i in id_list], list(id_list))

    async def read(self, call: Call) -> web.Response:
        d = sobject_or_404(call.request.match_info["sobject"])
        id_list = [i.strip() for i in call.request.query.get("ids", "").split(",") if i.strip()]
        self._check_size(len(id_list))
        raw_fields = call.request.query.get("fields")
        fields = [f.strip() for f in raw_fields.split(",")] if raw_fields else None
        for f in fields or []:
            if d.field(f) is None:
                raise SfError(400, "INVALID_FIELD", f"No such column '{f}' on entity '{d.name}'.")
        out: list[dict[str, Any] | None] = []
        for rid in id_list:
            rec = self.org.records.get(ids.to18(rid)) if ids.is_valid(rid) else None
            out.append(self.org.render(rec, fields) if rec and rec.sobject == d.name and not rec.deleted else None)
        return json_response(out)
