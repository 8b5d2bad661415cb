"""The Graph emulator on a free loopback port and an ExchangeClient (real msgraph-sdk) on it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest

from services.connectors.exchange.client import ExchangeClient
from services.connectors.exchange.models import PreparedMailbox
from services.core.secrets import Secret
from services.core.tenants import GraphEndpoint
from services.emulators.graph.admin_client import GraphAdminClient
from services.emulators.graph.app import serve, state_of
from services.emulators.graph.config import GraphEmulatorConfig
from services.emulators.graph.state import EmulatorState

MAILBOX = "alice@contoso.test"
OTHER = "bob@contoso.test"


@dataclass
class Emu:
    url: str
    state: EmulatorState
    admin: GraphAdminClient

    def endpoint(self) -> GraphEndpoint:
        return GraphEndpoint(base_url=self.url + "/v1.0", authority=self.url,
                             azure_tenant_id=self.state.config.tenant_id, client_id="exsf-app")


@pytest.fixture
async def emu() -> AsyncIterator[Emu]:
    cfg = GraphEmulatorConfig(mailboxes=(MAILBOX, OTHER), client_id="exsf-app", client_secret="s3cret",
                              validation_timeout_s=5.0)
    runner, url = await serve(config=cfg)
    admin = GraphAdminClient(url)
    try:
        yield Emu(url, state_of(runner), admin)
    finally:
        await admin.close()
        await runner.cleanup()


def make_client(emu: Emu, **kwargs: object) -> ExchangeClient:
    opts: dict[str, object] = {"max_retries": 3, "retry_delay_s": 0.0, "page_size": 50}
    opts.update(kwargs)
    return ExchangeClient(emu.endpoint(), Secret("s3cret"), **opts)  # type: ignore[arg-type]


@pytest.fixture
async def client_factory(emu: Emu) -> AsyncIterator[Callable[..., ExchangeClient]]:
    made: list[ExchangeClient] = []

    def factory(**kwargs: object) -> ExchangeClient:
        c = make_client(emu, **kwargs)
        made.append(c)
        return c

    try:
        yield factory
    finally:
        for c in made:
            await c.close()


@pytest.fixture
async def client(emu: Emu) -> AsyncIterator[ExchangeClient]:
    c = make_client(emu)
    try:
        yield c
    finally:
        await c.close()


@pytest.fixture
async def prepared(client: ExchangeClient) -> PreparedMailbox:
    return await client.ensure_mailbox(MAILBOX)
