"""What every REST call shares: authentication, faults, counters, limit header, error bodies."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
import structlog
from aiohttp import web

from services.emulators.salesforce.config import SalesforceEmulatorConfig
from services.emulators.salesforce.errors import SfError
from services.emulators.salesforce.faults import Counters, Faults
from services.emulators.salesforce.oauth import TokenStore
from services.emulators.salesforce.store import Org, WriteContext

log = structlog.get_logger(__name__)

WRITE_METHODS = frozenset({"POST", "PATCH", "PUT", "DELETE"})


@dataclass
class Call:
    request: web.Request
    ctx: WriteContext
    version: str

    async def json(self) -> Any:
        raw = await self.request.read()
        if not raw:
            return {}
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise SfError(400, "JSON_PARSER_ERROR", "Unexpected character in request body") from None


Handler = Callable[[Call], Awaitable[web.StreamResponse]]


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


def call_client(header: str | None) -> str | None:
    """`Sforce-Call-Options: client=exsf, defaultNamespace=ns` -> "exsf"."""
    for part in (header or "").split(","):
        k, _, v = part.strip().partition("=")
        if k.strip().lower() == "client" and v.strip():
            return v.strip()
    return None


class RestGate:
    def __init__(self, org: Org, tokens: TokenStore, faults: Faults, counters: Counters,
                 config: SalesforceEmulatorConfig) -> None:
        self.org, self.tokens, self.faults, self.counters, self.config = org, tokens, faults, counters, config

    def wrap(self, kind: str, handler: Handler, *, collections: bool = False
             ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def run(request: web.Request) -> web.StreamResponse:
            resp = await self._run(kind, handler, request, collections)
            resp.headers["Sforce-Limit-Info"] = f"api-usage={self.counters.rest_calls}/{self.config.daily_api_limit}"
            return resp

        return run

    async def _run(self, kind: str, handler: Handler, request: web.Request, collections: bool
                   ) -> web.StreamResponse:
        user = self.tokens.validate(request.headers.get("Authorization"))
        if user is None:
            return json_response(SfError(401, "INVALID_SESSION_ID", "Session expired or invalid").rest_body(), 401)
        self.counters.rest_calls += 1
        self.counters.rest_by_kind[kind] += 1
        if collections:
            self.counters.collections_calls += 1
        if self.faults.take("request_limit") or self.counters.rest_calls > self.config.daily_api_limit:
            return json_response(SfError(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.").rest_body(),
                                 403)
        if self.faults.take("unavailable"):
            return json_response(
                SfError(503, "SERVER_UNAVAILABLE", "Server temporarily unavailable, try again later").rest_body(), 503)
        client = call_client(request.headers.get("Sforce-Call-Options"))
        if request.method in WRITE_METHODS:
            self.counters.write_clients[client or ""] += 1
            self.counters.recent_writes.append(
                {"method": request.method, "kind": kind, "path": request.path, "client": client})
        version = request.match_info.get("version", self.config.api_version)
        ctx = WriteContext(user.id, "rest", version, client)
        try:
            resp = await handler(Call(request, ctx, version))
        except SfError as exc:
            log.debug("sf_emulator_rest", kind=kind, method=request.method, status=exc.status, code=exc.code)
            return json_response(exc.rest_body(), exc.status)
        log.debug("sf_emulator_rest", kind=kind, method=request.method, status=resp.status)
        return resp
