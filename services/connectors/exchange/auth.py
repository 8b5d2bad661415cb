"""OAuth2 client-credentials credential for Graph, usable by kiota's
AzureIdentityAuthenticationProvider. It posts to `{authority}/{tenant}/oauth2/v2.0/token`,
so it works against Entra ID and the local emulator (http on loopback) alike, and caches
the token until shortly before it expires (kiota asks for a token on every request).

azure-identity's ClientSecretCredential insists on an https authority; this class does
not, which is why exsf carries its own. The secret is only ever read from a `Secret` and
is never logged; error messages carry AAD's error code, not the request.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import structlog
from azure.core.credentials import AccessToken
from azure.core.credentials_async import AsyncTokenCredential

from services.core.errors import AuthError, TransientError
from services.core.secrets import Secret
from services.core.tenants import GraphEndpoint

log = structlog.get_logger(__name__)

GRAPH_SCOPE = "https://graph.microsoft.com/.default"


class ClientSecretTokenCredential(AsyncTokenCredential):
    def __init__(
        self,
        endpoint: GraphEndpoint,
        secret: Secret,
        *,
        refresh_margin_s: float = 300.0,
        timeout_s: float = 30.0,
    ) -> None:
        if not endpoint.azure_tenant_id or not endpoint.client_id:
            raise ValueError("GraphEndpoint needs azure_tenant_id and client_id")
        self._token_url = f"{endpoint.authority.rstrip('/')}/{endpoint.azure_tenant_id}/oauth2/v2.0/token"
        self._client_id = endpoint.client_id
        self._secret = secret
        self._refresh_margin_s = refresh_margin_s
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._cache: dict[str, AccessToken] = {}
        self._lock = asyncio.Lock()
        self._session: aiohttp.ClientSession | None = None
        self.fetch_count = 0  # tokens fetched so far (observability and tests)

    def invalidate(self) -> None:
        """Forget cached tokens, e.g. after the API answered 401 with one of them."""
        self._cache.clear()

    def _fresh(self, scope: str) -> AccessToken | None:
        tok = self._cache.get(scope)
        if tok is None:
            return None
        lifetime_left = tok.expires_on - time.time()
        return tok if lifetime_left > self._refresh_margin_s else None

    async def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        scope = " ".join(scopes) or GRAPH_SCOPE
        tok = self._fresh(scope)
        if tok is not None and not claims:
            return tok
        async with self._lock:
            tok = self._fresh(scope)
            if tok is not None and not claims:
                return tok
            tok = await self._fetch(scope)
            self._cache[scope] = tok
            return tok

    async def _fetch(self, scope: str) -> AccessToken:
        form = {
            "grant_type": "client_credentials",
            "client_id": self._client_id,
            "client_secret": self._secret.reveal(),
            "scope": scope,
        }
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        try:
            async with self._session.post(self._token_url, data=form) as resp:
                try:
                    body = await resp.json(content_type=None)
                except ValueError:
                    body = {}
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise TransientError(f"token endpoint unreachable: {type(exc).__name__}") from None
        if status >= 500 or status == 429:
            raise TransientError(f"token endpoint answered HTTP {status}", status=status)
        if status != 200 or not isinstance(body, dict) or "access_token" not in body:
            code = body.get("error") if isinstance(body, dict) else None
            raise AuthError(f"token request rejected: HTTP {status} {code or ''}".strip(), status=status, code=code)
        expires_in = int(body.get("expires_in", 3599))
        # Refresh at most halfway through very short lifetimes, else `refresh_margin_s` early.
        self._refresh_margin_s = min(self._refresh_margin_s, expires_in / 2)
        self.fetch_count += 1
        log.debug("graph.token_fetched", client_id=self._client_id, expires_in=expires_in)
        return AccessToken(str(body["access_token"]), int(time.time()) + expires_in)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> ClientSecretTokenCredential:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
