"""The Salesforce emulator on a free localhost port, plus a raw HTTP session and a token."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from services.emulators.salesforce import EMULATOR, SalesforceEmulator, SalesforceEmulatorConfig, serve
from services.emulators.salesforce.admin_client import SalesforceAdmin

USERS = ("alice@contoso.test", "bob@contoso.test:bobs-pw")


@dataclass
class Sf:
    base: str
    emulator: SalesforceEmulator
    http: aiohttp.ClientSession
    admin: SalesforceAdmin
    token: str

    @property
    def api(self) -> str:
        return f"{self.base}/services/data/v60.0"

    def headers(self, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", **extra}

    async def call(self, method: str, path: str, body: Any = None, **headers: str) -> tuple[int, Any, Any]:
        async with self.http.request(method, self.api + path, json=body, headers=self.headers(**headers)) as r:
            text = await r.read()
            import orjson

            return r.status, (orjson.loads(text) if text else None), r.headers


async def login(http: aiohttp.ClientSession, base: str, username: str = "alice@contoso.test",
                password: str = "password") -> dict[str, Any]:
    form = {"grant_type": "password", "client_id": "cid", "client_secret": "cs", "username": username,
            "password": password}
    async with http.post(base + "/services/oauth2/token", data=form) as r:
        body: dict[str, Any] = await r.json()
        body["_status"] = r.status
        return body


@pytest.fixture
def config() -> SalesforceEmulatorConfig:
    return SalesforceEmulatorConfig(long_poll_timeout_s=1.0)


@pytest.fixture
async def sf(config: SalesforceEmulatorConfig) -> AsyncIterator[Sf]:
    runner, base = await serve(users=USERS, config=config)
    http = aiohttp.ClientSession()
    admin = SalesforceAdmin(base, http)
    try:
        token = (await login(http, base))["access_token"]
        yield Sf(base, runner.app[EMULATOR], http, admin, token)
    finally:
        await http.close()
        await runner.cleanup()
