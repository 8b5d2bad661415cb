"""OAuth 2.0 token acquisition against `SalesforceEndpoint.login_url` (production, sandbox,
My Domain or the emulator): username-password, client-credentials or refresh-token flow.

The token and instance URL are cached; `refresh()` is single-flight so that many requests
failing with 401 at once cause one token request. Secrets stay inside `Secret` and are
never logged or put into exceptions.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Literal

import aiohttp
import structlog

from services.core.errors import AuthError, TransientError
from services.core.secrets import Secret, resolve_secret
from services.core.tenants import SalesforceEndpoint

log = structlog.get_logger(__name__)

Flow = Literal["password", "client_credentials", "refresh_token"]
TOKEN_PATH = "/services/oauth2/token"


@dataclass(frozen=True, slots=True)
class Token:
    access_token: Secret
    instance_url: str
    token_type: str
    identity_url: str
    issued_at: str

    @property
    def user_id(self) -> str:
        """The 005... id at the end of the identity URL."""
        return self.identity_url.rstrip("/").rsplit("/", 1)[-1]

    @property
    def org_id(self) -> str:
        return self.identity_url.rstrip("/").rsplit("/", 2)[-2]

    def authorization(self) -> str:
        return f"{self.token_type or 'Bearer'} {self.access_token.reveal()}"


def token_url(login_url: str) -> str:
    return login_url.rstrip("/") + TOKEN_PATH


class SalesforceAuth:
    def __init__(
        self,
        endpoint: SalesforceEndpoint,
        *,
        client_secret: Secret | None = None,
        password: Secret | None = None,
        refresh_token: Secret | None = None,
        flow: Flow | None = None,
        session: aiohttp.ClientSession | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        self.endpoint = endpoint
        self._client_secret = client_secret
        self._password = password
        self._refresh_token = refresh_token
        self.flow: Flow = flow or ("refresh_token" if refresh_token else "password" if password else
                                   "client_credentials")
        self._session = session
        self._own_session = session is None
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._token: Token | None = None
        self._lock = asyncio.Lock()
        self.token_requests = 0

    @classmethod
    def from_endpoint(cls, endpoint: SalesforceEndpoint, *, session: aiohttp.ClientSession | None = None,
                      refresh_token_ref: str | None = None) -> SalesforceAuth:
        """Resolve the endpoint's secret references (env:/file:) now."""
        return cls(
            endpoint,
            client_secret=resolve_secret(endpoint.client_secret_ref) if endpoint.client_secret_ref else None,
            password=resolve_secret(endpoint.password_ref) if endpoint.password_ref else None,
            refresh_token=resolve_secret(refresh_token_ref) if refresh_token_ref else None,
            session=session,
        )

    @property
    def token_url(self) -> str:
        return token_url(self.endpoint.login_url)

    @property
    def cached(self) -> Token | None:
        return self._token

    async def token(self) -> Token:
        if self._token is None:
            return await self.refresh(None)
        return self._token

    async def refresh(self, stale: Token | None) -> Token:
        """Get a new token, unless another task already replaced `stale` meanwhile."""
        async with self._lock:
            if self._token is not None and self._token is not stale:
                return self._token
            self._token = await self._request()
            return self._token

    def form(self) -> dict[str, str]:
        """The token request's form fields (secrets revealed: only for the wire)."""
        ep = self.endpoint
        data = {"grant_type": self.flow, "client_id": ep.client_id}
        if self._client_secret is not None:
            data["client_secret"] = self._client_secret.reveal()
        if self.flow == "password":
            data["username"] = ep.username
            data["password"] = self._password.reveal() if self._password else ""
        elif self.flow == "refresh_token":
            data["refresh_token"] = self._refresh_token.reveal() if self._refresh_token else ""
        return data

    async def _request(self) -> Token:
        session = self._session
        if session is None or session.closed:
            session = self._session = aiohttp.ClientSession()
            self._own_session = True
        self.token_requests += 1
        try:
            async with session.post(self.token_url, data=self.form(), timeout=self._timeout) as resp:
                status = resp.status
                try:
                    body = await resp.json(content_type=None)
                except ValueError:
                    body = {}
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise TransientError(f"salesforce token request failed: {type(exc).__name__}") from None
        if status >= 500 or status == 429:
            raise TransientError(f"salesforce token endpoint answered {status}", status=status)
        if status != 200 or not isinstance(body, dict) or "access_token" not in body:
            code = body.get("error") if isinstance(body, dict) else None
            desc = body.get("error_description") if isinstance(body, dict) else None
            log.warning("salesforce_token_rejected", status=status, error=code, flow=self.flow,
                        login_url=self.endpoint.login_url)
            raise AuthError(f"salesforce token request rejected: {code or status} ({desc or 'no description'})",
                            status=status, code=str(code) if code else None)
        token = Token(
            access_token=Secret(str(body["access_token"])),
            instance_url=str(body["instance_url"]).rstrip("/"),
            token_type=str(body.get("token_type") or "Bearer"),
            identity_url=str(body.get("id", "")),
            issued_at=str(body.get("issued_at", "")),
        )
        log.info("salesforce_token_acquired", flow=self.flow, instance_url=token.instance_url)
        return token

    async def close(self) -> None:
        if self._own_session and self._session is not None and not self._session.closed:
            await self._session.close()
