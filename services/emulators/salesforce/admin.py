"""/_admin: seed data, act as a Salesforce UI user, inject faults, read counters and the
ledger of applied writes (ledger.py), reset.

No authentication (a local test peer). UI edits go through the same store code path as the
API, with no API origin, so CDC fires with an empty changeOrigin like a real UI edit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from services.emulators.salesforce.errors import SfError
from services.emulators.salesforce.gate import json_response
from services.emulators.salesforce.rest import run_query, sobject_or_404
from services.emulators.salesforce.store import WriteContext

if TYPE_CHECKING:
    from services.emulators.salesforce.app import SalesforceEmulator


class AdminApi:
    def __init__(self, emu: SalesforceEmulator) -> None:
        self.emu = emu

    def routes(self) -> list[web.RouteDef]:
        a = "/_admin"
        h = self._guard
        return [
            web.post(a + "/reset", h(self.reset)),
            web.get(a + "/users", h(self.users)),
            web.post(a + "/users", h(self.add_user)),
            web.post(a + "/refresh_tokens", h(self.refresh_token)),
            web.post(a + "/seed", h(self.seed)),
            web.get(a + "/records/{sobject}", h(self.list_records)),
            web.post(a + "/records/{sobject}", h(self.create)),
            web.get(a + "/records/{sobject}/{id}", h(self.read)),
            web.patch(a + "/records/{sobject}/{id}", h(self.update)),
            web.delete(a + "/records/{sobject}/{id}", h(self.delete)),
            web.post(a + "/records/{sobject}/{id}/undelete", h(self.undelete)),
            web.post(a + "/query", h(self.query)),
            web.post(a + "/faults", h(self.faults)),
            web.post(a + "/expire_tokens", h(self.expire_tokens)),
            web.post(a + "/expire_sessions", h(self.expire_sessions)),
            web.post(a + "/clock", h(self.clock)),
            web.post(a + "/cdc/gap", h(self.gap)),
            web.post(a + "/cdc/overflow", h(self.overflow)),
            web.post(a + "/cdc/prune", h(self.prune)),
            web.get(a + "/cdc/events", h(self.events)),
            web.get(a + "/counters", h(self.counters)),
            web.get(a + "/writes", h(self.writes)),
            web.get(a + "/ledger", h(self.ledger)),
        ]

    def _guard(self, fn: Any) -> Any:
        async def run(request: web.Request) -> web.StreamResponse:
            try:
                resp: web.StreamResponse = await fn(request)
                return resp
            except SfError as exc:
                return json_response(exc.rest_body(), exc.status)
        return run

    @staticmethod
    async def _body(request: web.Request) -> dict[str, Any]:
        raw = await request.read()
        if not raw:
            return {}
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise SfError(400, "JSON_PARSER_ERROR", "invalid JSON") from None
        if not isinstance(body, dict):
            raise SfError(400, "JSON_PARSER_ERROR", "expected a JSON object")
        return body

    def _ctx(self, body: dict[str, Any]) -> WriteContext:
        org = self.emu.org
        name = body.get("as_user")
        user = org.user(name) if name else next(iter(org.users.values()), None)
        if user is None:
            raise SfError(400, "INVALID_USER", f"unknown user {name!r}")
        return WriteContext(user.id, api=None, api_version=org.api_version)

    async def reset(self, request: web.Request) -> web.Response:
        self.emu.reset()
        return json_response({"ok": True})

    async def users(self, request: web.Request) -> web.Response:
        return json_response([{"username": u.username, "id": u.id, "name": u.name}
                              for u in self.emu.org.users.values()])

    async def add_user(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        u = self.emu.org.add_user(str(body["username"]), str(body.get("password") or
                                                               self.emu.config.default_password))
        return json_response({"username": u.username, "id": u.id}, 201)

    async def refresh_token(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        user = self.emu.org.user(str(body.get("username", "")))
        if user is None:
            raise SfError(404, "NOT_FOUND", "unknown user")
        return json_response({"refresh_token": self.emu.tokens.issue_refresh(user)})

    async def seed(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        d = sobject_or_404(str(body.get("sobject", "")))
        org = self.emu.org
        with org.transaction(self._ctx(body)) as tx:
            created = [org.create(tx, d.name, dict(r)).id for r in body.get("records", [])]
        return json_response({"ids": created}, 201)

    async def list_records(self, request: web.Request) -> web.Response:
        d = sobject_or_404(request.match_info["sobject"])
        org = self.emu.org
        return json_response([org.render(r) for r in org.of_type(d.name)])

    async def create(self, request: web.Request) -> web.Response:
        d = sobject_or_404(request.match_info["sobject"])
        body = await self._body(request)
        org = self.emu.org
        with org.transaction(self._ctx(body)) as tx:
            rec = org.create(tx, d.name, dict(body.get("fields", {})))
        return json_response({"id": rec.id}, 201)

    async def read(self, request: web.Request) -> web.Response:
        d = sobject_or_404(request.match_info["sobject"])
        org = self.emu.org
        return json_response(org.render(org.get(d.name, request.match_info["id"], include_deleted=True)))

    async def update(self, request: web.Request) -> web.Response:
        d = sobject_or_404(request.match_info["sobject"])
        body = await self._body(request)
        org = self.emu.org
        with org.transaction(self._ctx(body)) as tx:
            rec = org.update(tx, d.name, request.match_info["id"], dict(body.get("fields", {})))
        return json_response(org.render(rec))

    async def delete(self, request: web.Request) -> web.Response:
        d = sobject_or_404(request.match_info["sobject"])
        body = await self._body(request)
        org = self.emu.org
        with org.transaction(self._ctx(body)) as tx:
            org.delete(tx, d.name, request.match_info["id"])
        return json_response({"ok": True})

    async def undelete(self, request: web.Request) -> web.Response:
        d = sobject_or_404(request.match_info["sobject"])
        body = await self._body(request)
        org = self.emu.org
        with org.transaction(self._ctx(body)) as tx:
            rec = org.undelete(tx, d.name, request.match_info["id"])
        return json_response(org.render(rec))

    async def query(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        rows = run_query(self.emu.org, str(body.get("q", "")), include_deleted=bool(body.get("all", True)))
        return json_response({"totalSize": len(rows), "records": rows})

    async def faults(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        f = self.emu.faults
        for name in ("request_limit", "unavailable", "drop_long_polls"):
            if name in body:
                setattr(f, name, int(body[name]))
        return json_response({"request_limit": f.request_limit, "unavailable": f.unavailable,
                              "drop_long_polls": f.drop_long_polls})

    async def expire_tokens(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        uid = None
        if body.get("username"):
            user = self.emu.org.user(str(body["username"]))
            if user is None:
                raise SfError(404, "NOT_FOUND", "unknown user")
            uid = user.id
        n = self.emu.tokens.expire(uid, refresh_tokens=bool(body.get("refresh_tokens", False)))
        return json_response({"expired": n})

    async def expire_sessions(self, request: web.Request) -> web.Response:
        return json_response({"expired": self.emu.cometd.expire_sessions()})

    async def clock(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        self.emu.org.clock_offset_ms += int(float(body.get("advance_s", 0)) * 1000)
        return json_response({"offset_ms": self.emu.org.clock_offset_ms})

    async def gap(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        d = sobject_or_404(str(body.get("sobject", "")))
        change_type = str(body.get("change_type", "GAP_UPDATE"))
        if change_type not in ("GAP_CREATE", "GAP_UPDATE", "GAP_DELETE", "GAP_UNDELETE"):
            raise SfError(400, "INVALID_TYPE", f"unknown gap type {change_type}")
        ids = body.get("ids") or [body.get("id")]
        ev = self.emu.bus.publish_gap(d.name, [str(i) for i in ids], change_type, self._ctx(body).user_id)
        return json_response({"replay_id": ev.replay_id})

    async def overflow(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        d = sobject_or_404(str(body.get("sobject", "")))
        ev = self.emu.bus.publish_gap(d.name, [], "GAP_OVERFLOW", self._ctx(body).user_id)
        return json_response({"replay_id": ev.replay_id})

    async def prune(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        upto = body.get("upto_replay_id")
        bus = self.emu.bus
        n = bus.prune(lambda ev: upto is None or ev.replay_id <= int(upto))
        if upto is None:
            # Everything so far left the retention window, even ids no event was stored under.
            bus.pruned_upto = bus.last_replay_id
        return json_response({"pruned": n, "pruned_upto": bus.pruned_upto})

    async def events(self, request: web.Request) -> web.Response:
        return json_response([{"replay_id": ev.replay_id, "entity": ev.entity, "payload": ev.payload}
                              for ev in self.emu.bus.events])

    async def writes(self, request: web.Request) -> web.Response:
        return json_response(list(self.emu.counters.recent_writes))

    async def counters(self, request: web.Request) -> web.Response:
        return json_response(self.emu.counters.snapshot())

    async def ledger(self, request: web.Request) -> web.Response:
        return json_response(self.emu.ledger.snapshot())
