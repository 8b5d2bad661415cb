"""OAuth 2.0 token endpoint (password, refresh_token, client_credentials) and token checks."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

import orjson
from aiohttp import web

from services.emulators.salesforce.config import SalesforceEmulatorConfig
from services.emulators.salesforce.faults import Counters
from services.emulators.salesforce.store import Org, SfUser


@dataclass
class _Token:
    user_id: str
    issued_ms: int
    valid: bool = True


class TokenStore:
    def __init__(self, org: Org, session_timeout_s: float | None = None) -> None:
        self.org = org
        self.session_timeout_s = session_timeout_s
        self._access: dict[str, _Token] = {}
        self._refresh: dict[str, str] = {}

    def issue(self, user: SfUser) -> tuple[str, int]:
        token = f"{self.org.org_id[:15]}!AQ{secrets.token_urlsafe(60).replace('-', '.').replace('_', '.')}"
        issued = int(time.time() * 1000)
        self._access[token] = _Token(user.id, issued)
        return token, issued

    def issue_refresh(self, user: SfUser) -> str:
        token = "5Aep" + secrets.token_urlsafe(64).replace("-", ".").replace("_", ".")
        self._refresh[token] = user.id
        return token

    def refresh_user(self, refresh_token: str) -> SfUser | None:
        uid = self._refresh.get(refresh_token)
        return self.org.user_by_id(uid) if uid else None

    def validate(self, authorization: str | None) -> SfUser | None:
        if not authorization:
            return None
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() not in ("bearer", "oauth"):
            return None
        t = self._access.get(token.strip())
        if t is None or not t.valid:
            return None
        if self.session_timeout_s is not None and time.time() * 1000 - t.issued_ms > self.session_timeout_s * 1000:
            t.valid = False
            return None
        return self.org.user_by_id(t.user_id)

    def expire(self, user_id: str | None = None, *, refresh_tokens: bool = False) -> int:
        n = 0
        for t in self._access.values():
            if t.valid and (user_id is None or t.user_id[:15] == user_id[:15]):
                t.valid = False
                n += 1
        if refresh_tokens:
            for k in [k for k, v in self._refresh.items() if user_id is None or v[:15] == user_id[:15]]:
                del self._refresh[k]
        return n


def _error(code: str, description: str, status: int = 400) -> web.Response:
    return web.Response(status=status, body=orjson.dumps({"error": code, "error_description": description}),
                        content_type="application/json")


class TokenEndpoint:
    def __init__(self, org: Org, tokens: TokenStore, config: SalesforceEmulatorConfig, counters: Counters) -> None:
        self.org, self.tokens, self.config, self.counters = org, tokens, config, counters

    async def handle(self, request: web.Request) -> web.Response:
        form = await request.post()
        grant = str(form.get("grant_type", ""))
        self.counters.token_requests[grant or "none"] += 1
        client_id = str(form.get("client_id", ""))
        client_secret = str(form.get("client_secret", ""))
        if grant not in ("password", "refresh_token", "client_credentials"):
            return _error("unsupported_grant_type", "grant type not supported")
        if not client_id or (self.config.client_id and client_id != self.config.client_id):
            return _error("invalid_client_id", "client identifier invalid")
        secret_needed = grant != "refresh_token" or client_secret
        if secret_needed and self.config.client_secret and client_secret != self.config.client_secret:
            return _error("invalid_client", "invalid client credentials")
        user: SfUser | None
        if grant == "password":
            user = self.org.user(str(form.get("username", "")))
            if user is None or not hmac.compare_digest(user.password, str(form.get("password", ""))):
                return _error("invalid_grant", "authentication failure")
        elif grant == "refresh_token":
            user = self.tokens.refresh_user(str(form.get("refresh_token", "")))
            if user is None:
                return _error("invalid_grant", "expired access/refresh token")
        else:
            if not client_secret:
                return _error("invalid_client", "invalid client credentials")
            # A connected app's client-credentials flow runs as its "Run As" user: the first user here.
            user = next(iter(self.org.users.values()), None)
            if user is None:
                return _error("invalid_grant", "no client credentials user enabled")
        token, issued = self.tokens.issue(user)
        base = f"{request.scheme}://{request.host}"
        identity = f"{base}/id/{self.org.org_id}/{user.id}"
        signature = base64.b64encode(
            hmac.new(self.org.org_id.encode(), f"{identity}{issued}".encode(), hashlib.sha256).digest()
        ).decode()
        body = {
            "access_token": token,
            "instance_url": base,
            "id": identity,
            "token_type": "Bearer",
            "issued_at": str(issued),
            "signature": signature,
        }
        return web.Response(body=orjson.dumps(body), content_type="application/json")
