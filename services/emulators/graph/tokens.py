"""The OAuth2 client-credentials token endpoint and the set of tokens it issued."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from aiohttp import web

from services.emulators.graph.ids import new_token


@dataclass
class IssuedTokens:
    lifetime_s: int
    _tokens: dict[str, tuple[str, float]] = field(default_factory=dict)  # token -> (app id, expires at)
    issued: int = 0

    def issue(self, app_id: str) -> str:
        token = "eyJ0eXAiOiJKV1QifQ." + new_token()
        self._tokens[token] = (app_id, time.time() + self.lifetime_s)
        self.issued += 1
        return token

    def app_of(self, authorization: str | None) -> str | None:
        if not authorization or not authorization.lower().startswith("bearer "):
            return None
        hit = self._tokens.get(authorization[7:].strip())
        if hit is None or hit[1] < time.time():
            return None
        return hit[0]

    def expire_all(self) -> int:
        n = len(self._tokens)
        self._tokens.clear()
        return n


def _aad_error(status: int, error: str, description: str) -> web.Response:
    body = {"error": error, "error_description": description, "error_codes": [7000215],
            "timestamp": time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime()),
            "trace_id": "emulator", "correlation_id": "emulator"}
    return web.json_response(body, status=status)


async def token_endpoint(request: web.Request) -> web.Response:
    from services.emulators.graph.state import STATE_KEY

    state = request.app[STATE_KEY]
    form = await request.post()
    if form.get("grant_type") != "client_credentials":
        return _aad_error(400, "unsupported_grant_type", "AADSTS70003: only client_credentials is supported.")
    client_id = str(form.get("client_id") or "")
    secret = str(form.get("client_secret") or "")
    if not client_id or not secret:
        return _aad_error(400, "invalid_request", "AADSTS900144: client_id and client_secret are required.")
    cfg = state.config
    if (cfg.client_id and client_id != cfg.client_id) or (cfg.client_secret and secret != cfg.client_secret):
        return _aad_error(401, "invalid_client", "AADSTS7000215: Invalid client secret provided.")
    if request.match_info.get("tenant", "") not in (cfg.tenant_id, "common", "organizations") and cfg.client_id:
        return _aad_error(400, "invalid_tenant", "AADSTS90002: Tenant not found.")
    token = state.tokens.issue(client_id)
    life = state.tokens.lifetime_s
    return web.json_response({"token_type": "Bearer", "expires_in": life, "ext_expires_in": life,
                              "access_token": token})
