"""The Graph emulator on a free loopback port, with a raw HTTP session holding a token."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from services.emulators.graph.admin_client import GraphAdminClient
from services.emulators.graph.app import serve, state_of
from services.emulators.graph.config import GraphEmulatorConfig
from services.emulators.graph.state import EmulatorState

MAILBOX = "alice@contoso.test"


@dataclass
class Raw:
    url: str
    state: EmulatorState
    http: aiohttp.ClientSession
    token: str
    admin: GraphAdminClient

    @property
    def api(self) -> str:
        return self.url + "/v1.0"

    @property
    def user(self) -> str:
        return f"{self.api}/users/{MAILBOX}"

    def auth(self, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", **extra}

    async def call(self, method: str, url: str, body: Any = None, **headers: str) -> tuple[int, Any, Any]:
        async with self.http.request(method, url, json=body, headers=self.auth(**headers)) as r:
            text = await r.text()
            import json

            return r.status, (json.loads(text) if text else None), r.headers


async def fetch_token(http: aiohttp.ClientSession, url: str, tenant: str = "t") -> str:
    async with http.post(f"{url}/{tenant}/oauth2/v2.0/token",
                         data={"grant_type": "client_credentials", "client_id": "app", "client_secret": "x",
                               "scope": "https://graph.microsoft.com/.default"}) as r:
        assert r.status == 200
        return str((await r.json())["access_token"])


@pytest.fixture
def token_for() -> Callable[[Raw], Awaitable[str]]:
    async def fetch(r: Raw) -> str:
        return await fetch_token(r.http, r.url)

    return fetch


@pytest.fixture
async def raw() -> AsyncIterator[Raw]:
    runner, url = await serve(config=GraphEmulatorConfig(mailboxes=(MAILBOX,), validation_timeout_s=2.0))
    http = aiohttp.ClientSession()
    admin = GraphAdminClient(url, http)
    try:
        yield Raw(url, state_of(runner), http, await fetch_token(http, url), admin)
    finally:
        await http.close()
        await runner.cleanup()
