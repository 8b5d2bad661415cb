"""Salesforce emulator over real HTTP, and our connector clients pointed at it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from services.connectors.salesforce.auth import SalesforceAuth
from services.connectors.salesforce.rest import SalesforceRest
from services.core.secrets import Secret
from services.core.tenants import SalesforceEndpoint
from services.emulators.salesforce import EMULATOR, SalesforceEmulator, SalesforceEmulatorConfig, serve
from services.emulators.salesforce.admin_client import SalesforceAdmin

USERS = ("alice@contoso.test", "bob@contoso.test")


@dataclass
class Org:
    base_url: str
    emulator: SalesforceEmulator
    admin: SalesforceAdmin
    user_ids: dict[str, str]

    def endpoint(self, username: str = USERS[0]) -> SalesforceEndpoint:
        return SalesforceEndpoint(login_url=self.base_url, client_id="exsf-test", username=username)

    def auth(self, username: str = USERS[0]) -> SalesforceAuth:
        return SalesforceAuth(self.endpoint(username), client_secret=Secret("s3cret"), password=Secret("password"))


@pytest.fixture
def emulator_config() -> SalesforceEmulatorConfig:
    # Short long-polls keep streaming tests quick; everything else is Salesforce's default.
    return SalesforceEmulatorConfig(long_poll_timeout_s=1.0)


@pytest.fixture
async def org(emulator_config: SalesforceEmulatorConfig) -> AsyncIterator[Org]:
    runner, base_url = await serve(users=USERS, config=emulator_config)
    admin = SalesforceAdmin(base_url)
    try:
        yield Org(base_url, runner.app[EMULATOR], admin, await admin.users())
    finally:
        await admin.close()
        await runner.cleanup()


@pytest.fixture
async def rest(org: Org) -> AsyncIterator[SalesforceRest]:
    auth = org.auth()
    client = SalesforceRest(auth)
    try:
        yield client
    finally:
        await client.close()
        await auth.close()
