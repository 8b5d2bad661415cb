"""REST resources under /services/data/vNN.0: sObject rows, upsert by external id, blobs,
describe, limits, and SOQL query/queryAll with nextRecordsUrl paging."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from typing import Any

from aiohttp import web

from services.emulators.salesforce import ids, soql, timefmt
from services.emulators.salesforce.errors import SfError, not_found
from services.emulators.salesforce.gate import Call, RestGate, json_response
from services.emulators.salesforce.schema import FieldDef, SObjectDef, sobject
from services.emulators.salesforce.store import Org, Rec

_locators = itertools.count(1)


def sobject_or_404(name: str) -> SObjectDef:
    d = sobject(name)
    if d is None:
        raise SfError(404, "NOT_FOUND", "The requested resource does not exist")
    return d


class RestApi:
    def __init__(self, gate: RestGate) -> None:
        self.gate = gate
        self._cursors: dict[str, list[dict[str, Any]]] = {}

    @property
    def org(self) -> Org:
        return self.gate.org

    def routes(self) -> list[web.RouteDef]:
        w = self.gate.wrap
        base = "/services/data/v{version}"
        return [
            web.get("/services/data", self.versions),
            web.get("/services/data/", self.versions),
            web.get(base + "/limits", w("limits", self.limits)),
            web.get(base + "/sobjects/{sobject}/describe", w("describe", self.describe)),
            web.post(base + "/sobjects/{sobject}", w("create", self.create)),
            web.get(base + "/sobjects/{sobject}/updated", w("get_updated", self.updated)),
            web.get(base + "/sobjects/{sobject}/updated/", w("get_updated", self.updated)),
            web.get(base + "/sobjects/{sobject}/deleted", w("get_deleted", self.deleted)),
            web.get(base + "/sobjects/{sobject}/deleted/", w("get_deleted", self.deleted)),
            web.get(base + "/sobjects/{sobject}/{id}", w("read", self.read)),
            web.patch(base + "/sobjects/{sobject}/{id}", w("update", self.update)),
            web.delete(base + "/sobjects/{sobject}/{id}", w("delete", self.delete)),
            web.get(base + "/sobjects/{sobject}/{a}/{b}", w("read", self.read_ext_or_blob)),
            web.patch(base + "/sobjects/{sobject}/{a}/{b}", w("upsert", self.upsert)),
            web.delete(base + "/sobjects/{sobject}/{a}/{b}", w("delete", self.delete_ext)),
            web.get(base + "/query", w("query", self.query)),
            web.get(base + "/queryAll", w("query", self.query_all)),
            web.get(base + "/query/{locator}", w("query_more", self.query_more)),
            web.get(base + "/queryAll/{locator}", w("query_more", self.query_more)),
        ]

    async def versions(self, request: web.Request) -> web.Response:
        v = self.gate.config.api_version
        return json_response([{"label": "exsf emulator", "url": f"/services/data/v{v}", "version": v}])

    async def limits(self, call: Call) -> web.Response:
        c = self.gate.counters
        mx = self.gate.config.daily_api_limit
        return json_response({"DailyApiRequests": {"Max": mx, "Remaining": max(0, mx - c.rest_calls)}})

    async def describe(self, call: Call) -> web.Response:
        d = sobject_or_404(call.request.match_info["sobject"])
        fields = [
            {"name": f.name, "type": f.type, "createable": f.createable, "updateable": f.updateable,
             "nillable": not f.required, "externalId": f.external_id, "length": f.max_length or 0,
             "picklistValues": [{"value": v, "active": True} for v in f.picklist]}
            for f in d.fields.values()
        ]
        return json_response({"name": d.name, "fields": fields})

    async def create(self, call: Call) -> web.Response:
        d = sobject_or_404(call.request.match_info["sobject"])
        body = await call.json()
        if not isinstance(body, dict):
            raise SfError(400, "JSON_PARSER_ERROR", "Expected a JSON object")
        if "Id" in body:
            raise SfError(400, "INVALID_FIELD_FOR_INSERT_UPDATE", "cannot specify Id in an insert call", ["Id"])
        with self.org.transaction(call.ctx) as tx:
            rec = self.org.create(tx, d.name, body)
        return json_response({"id": rec.id, "success": True, "errors": []}, 201)

    def _fields_param(self, call: Call) -> list[str] | None:
        raw = call.request.query.get("fields")
        return [f.strip() for f in raw.split(",") if f.strip()] if raw else None

    def _render(self, d: SObjectDef, rec: Rec, fields: list[str] | None) -> dict[str, Any]:
        for f in fields or []:
            if d.field(f) is None:
                raise SfError(400, "INVALID_FIELD", f"No such column '{f}' on entity '{d.name}'.")
        return self.org.render(rec, fields)

    async def read(self, call: Call) -> web.Response:
        d = sobject_or_404(call.request.match_info["sobject"])
        rec = self.org.get(d.name, call.request.match_info["id"])
        return json_response(self._render(d, rec, self._fields_param(call)))

    async def update(self, call: Call) -> web.Response:
        d = sobject_or_404(call.request.match_info["sobject"])
        body = await call.json()
        if not isinstance(body, dict):
            raise SfError(400, "JSON_PARSER_ERROR", "Expected a JSON object")
        since = _if_unmodified_since(call.request)
        with self.org.transaction(call.ctx) as tx:
            self.org.update(tx, d.name, call.request.match_info["id"], body, since)
        return web.Response(status=204)

    async def delete(self, call: Call) -> web.Response:
        d = sobject_or_404(call.request.match_info["sobject"])
        with self.org.transaction(call.ctx) as tx:
            self.org.delete(tx, d.name, call.request.match_info["id"])
        return web.Response(status=204)

    def _by_ext(self, d: SObjectDef, field_name: str, value: str) -> Rec | None:
        f = d.field(field_name)
        if f is None or not (f.external_id or f.name == "Id"):
            raise SfError(404, "NOT_FOUND", f"Provided external ID field does not exist or is not accessible: "
                          f"{field_name}")
        if f.name == "Id":
            if not ids.is_valid(value):
                raise SfError(400, "MALFORMED_ID", f"Id in upsert is not valid: {value}", ["Id"])
            rec = self.org.records.get(ids.to18(value))
            return rec if rec is not None and rec.sobject == d.name and not rec.deleted else None
        return self.org.by_external_id(d.name, f.name, value)

    async def read_ext_or_blob(self, call: Call) -> web.StreamResponse:
        d = sobject_or_404(call.request.match_info["sobject"])
        a, b = call.request.match_info["a"], call.request.match_info["b"]
        blob_field = d.field(b)
        if ids.is_valid(a) and blob_field is not None and blob_field.type == "base64":
            data = self.org.blobs.get(self.org.get(d.name, a).id)
            if data is None:
                raise not_found()
            ctype = self.org.get(d.name, a).fields.get("ContentType") or "application/octet-stream"
            return web.Response(body=data, content_type=ctype)
        found = self._by_ext(d, a, b)
        if found is None:
            raise not_found()
        return json_response(self._render(d, found, self._fields_param(call)))

    async def upsert(self, call: Call) -> web.Response:
        d = sobject_or_404(call.request.match_info["sobject"])
        field_name, value = call.request.match_info["a"], call.request.match_info["b"]
        body = await call.json()
        if not isinstance(body, dict):
            raise SfError(400, "JSON_PARSER_ERROR", "Expected a JSON object")
        rec = self._by_ext(d, field_name, value)
        f = d.field(field_name)
        assert f is not None
        body = {k: v for k, v in body.items() if k not in ("attributes", "Id")}
        if f.name in body and body.pop(f.name) != value:
            raise SfError(400, "INVALID_FIELD", f"The value of {f.name} in the body does not match the URL", [f.name])
        update_only = call.request.query.get("updateOnly", "").lower() == "true"
        with self.org.transaction(call.ctx) as tx:
            if rec is not None:
                self.org.update(tx, d.name, rec.id, body)
                if self.org.on_upsert_existing is not None and f.name != "Id":
                    self.org.on_upsert_existing(d.name, f.name, value)
                return json_response({"id": rec.id, "success": True, "errors": [], "created": False}, 200)
            if f.name == "Id" or update_only:
                raise not_found()
            new = self.org.create(tx, d.name, {**body, f.name: value})
        return json_response({"id": new.id, "success": True, "errors": [], "created": True}, 201)

    async def delete_ext(self, call: Call) -> web.Response:
        d = sobject_or_404(call.request.match_info["sobject"])
        rec = self._by_ext(d, call.request.match_info["a"], call.request.match_info["b"])
        if rec is None:
            raise not_found()
        with self.org.transaction(call.ctx) as tx:
            self.org.delete(tx, d.name, rec.id)
        return web.Response(status=204)

    # --- replication: getUpdated / getDeleted ----------------------------------------------

    def _window(self, call: Call, max_days: int) -> tuple[int, int]:
        q = call.request.query
        try:
            start = timefmt.parse_datetime(q["start"])
            end = timefmt.parse_datetime(q["end"])
        except (KeyError, ValueError):
            raise SfError(400, "INVALID_REPLICATION_DATE", "start and end must be valid date-times") from None
        now = self.org.now_ms()
        if end <= start or start < now - max_days * 86_400_000:
            raise SfError(400, "INVALID_REPLICATION_DATE",
                          f"start must be before end and within the last {max_days} days")
        return start, min(end, now)

    async def updated(self, call: Call) -> web.Response:
        d = sobject_or_404(call.request.match_info["sobject"])
        start, end = self._window(call, 30)
        hits = [r.id for r in self.org.of_type(d.name) if not r.deleted and start <= r.modstamp_ms <= end]
        return json_response({"ids": hits, "latestDateCovered": timefmt.rest(end)})

    async def deleted(self, call: Call) -> web.Response:
        d = sobject_or_404(call.request.match_info["sobject"])
        start, end = self._window(call, 15)
        hits = [{"id": r.id, "deletedDate": r.fields["SystemModstamp"]} for r in self.org.of_type(d.name)
                if r.deleted and start <= r.modstamp_ms <= end]
        earliest = timefmt.rest(self.org.now_ms() - 15 * 86_400_000)
        return json_response({"deletedRecords": hits, "earliestDateAvailable": earliest,
                              "latestDateCovered": timefmt.rest(end)})

    # --- SOQL ------------------------------------------------------------------------------

    async def query(self, call: Call) -> web.Response:
        return self._query(call, include_deleted=False)

    async def query_all(self, call: Call) -> web.Response:
        return self._query(call, include_deleted=True)

    def _query(self, call: Call, *, include_deleted: bool) -> web.Response:
        text = call.request.query.get("q")
        if not text:
            raise SfError(400, "MALFORMED_QUERY", "A query string has to be specified")
        count = count_query(self.org, text, include_deleted=include_deleted)
        if count is not None:
            return json_response({"totalSize": count, "done": True, "records": []})
        rows = run_query(self.org, text, include_deleted=include_deleted)
        return self._page(call, rows, str(next(_locators)), 0)

    def _batch_size(self, call: Call) -> int:
        cfg = self.gate.config
        opts = call.request.headers.get("Sforce-Query-Options", "")
        for part in opts.split(","):
            k, _, v = part.strip().partition("=")
            if k.strip().lower() == "batchsize" and v.strip().isdigit():
                return max(cfg.query_min_batch, min(2000, int(v)))
        return cfg.query_default_batch

    def _page(self, call: Call, rows: list[dict[str, Any]], cursor: str, offset: int) -> web.Response:
        size = self._batch_size(call)
        page = rows[offset : offset + size]
        body: dict[str, Any] = {"totalSize": len(rows), "done": offset + size >= len(rows), "records": page}
        if not body["done"]:
            self._cursors[cursor] = rows
            body["nextRecordsUrl"] = f"/services/data/v{call.version}/query/01gDn0000{int(cursor):06d}-{offset + size}"
        else:
            self._cursors.pop(cursor, None)
        return json_response(body)

    async def query_more(self, call: Call) -> web.Response:
        locator = call.request.match_info["locator"]
        head, _, off = locator.rpartition("-")
        cursor = head[len("01gDn0000"):].lstrip("0") or "0"
        rows = self._cursors.get(cursor)
        if rows is None or not off.isdigit():
            raise SfError(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
        return self._page(call, rows, cursor, int(off))


def run_query(org: Org, text: str, *, include_deleted: bool) -> list[dict[str, Any]]:
    q = soql.parse(text)
    rows = _matching(org, q, include_deleted)
    names = [f.name for f in q.fields]
    return [org.render(r, names) for r in rows]


def count_query(org: Org, text: str, *, include_deleted: bool) -> int | None:
    """The count for `SELECT COUNT() ...`, None for other queries."""
    q = soql.parse(text)
    return len(_matching(org, q, include_deleted)) if q.count_only else None


def _matching(org: Org, q: soql.Query, include_deleted: bool) -> list[Rec]:
    rows = [r for r in org.of_type(q.sobject.name) if include_deleted or not r.deleted]
    if q.where is not None:
        where = q.where
        rows = [r for r in rows if where(_getter(org, r))]
    if q.order:
        rows = soql.apply_order(rows, q.order, lambda r, f: org.value(r, f))
    rows = rows[q.offset :]
    if q.limit is not None:
        rows = rows[: q.limit]
    return rows


def _getter(org: Org, rec: Rec) -> Callable[[FieldDef], Any]:
    return lambda f: org.value(rec, f)


def _if_unmodified_since(request: web.Request) -> int | None:
    raw = request.headers.get("If-Unmodified-Since")
    if not raw:
        return None
    try:
        return int(parsedate_to_datetime(raw).timestamp())
    except (TypeError, ValueError):
        raise SfError(400, "INVALID_HEADER_TYPE", "If-Unmodified-Since: invalid date format") from None
