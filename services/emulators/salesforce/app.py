"""The emulator as one aiohttp application, plus `serve` (tests) and `run_forever` (CLI)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Sequence

import structlog
from aiohttp import web

from services.emulators.salesforce.admin import AdminApi
from services.emulators.salesforce.cdc import ChangeEventBus
from services.emulators.salesforce.cometd import CometdServer
from services.emulators.salesforce.composite import CollectionsApi
from services.emulators.salesforce.config import SalesforceEmulatorConfig
from services.emulators.salesforce.faults import Counters, Faults
from services.emulators.salesforce.gate import RestGate
from services.emulators.salesforce.ledger import WriteLedger
from services.emulators.salesforce.oauth import TokenEndpoint, TokenStore
from services.emulators.salesforce.rest import RestApi
from services.emulators.salesforce.store import Org

log = structlog.get_logger(__name__)


class SalesforceEmulator:
    """All state of one emulated org. `reset()` rebuilds the data in place; user ids stay the
    same because ids come from a deterministic sequence, and issued tokens stay valid."""

    def __init__(self, users: Sequence[str], config: SalesforceEmulatorConfig | None = None) -> None:
        self.config = config or SalesforceEmulatorConfig()
        self.user_specs = list(users)
        self.faults = Faults()
        self.counters = Counters()
        self.ledger = WriteLedger()
        self.org = self._new_org()
        self.tokens = TokenStore(self.org, self.config.session_timeout_s)
        self.bus = ChangeEventBus(self.org, self.config.retention_s)
        self.gate = RestGate(self.org, self.tokens, self.faults, self.counters, self.config)
        self.cometd = CometdServer(self.bus, self.tokens, self.faults, self.counters, self.config)
        self.token_endpoint = TokenEndpoint(self.org, self.tokens, self.config, self.counters)

    def _new_org(self) -> Org:
        org = Org(self.user_specs, default_password=self.config.default_password,
                  api_version=self.config.api_version)
        org.listeners.append(self.ledger.on_changes)
        org.on_upsert_existing = self.ledger.upsert_existing
        return org

    def reset(self) -> None:
        self.cometd.expire_sessions()
        self.ledger = WriteLedger()
        org = self._new_org()
        self.org = org
        self.tokens.org = org
        self.token_endpoint.org = org
        self.gate.org = org
        self.faults.__init__()  # type: ignore[misc]
        self.counters.__init__()  # type: ignore[misc]
        bus = ChangeEventBus(org, self.config.retention_s)
        bus.listeners = self.bus.listeners
        self.bus = bus
        self.cometd.bus = bus

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app[EMULATOR] = self
        app.router.add_post("/services/oauth2/token", self.token_endpoint.handle)
        app.router.add_post("/cometd/{version}", self.cometd.handle)
        app.router.add_routes(CollectionsApi(self.gate).routes())
        app.router.add_routes(RestApi(self.gate).routes())
        app.router.add_routes(AdminApi(self).routes())
        return app


EMULATOR: web.AppKey[SalesforceEmulator] = web.AppKey("emulator", SalesforceEmulator)


def create_app(users: Sequence[str], config: SalesforceEmulatorConfig | None = None) -> web.Application:
    return SalesforceEmulator(users, config).app()


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


async def serve(host: str = "localhost", port: int = 0, users: Sequence[str] = ("alice@contoso.test",),
                config: SalesforceEmulatorConfig | None = None) -> tuple[web.AppRunner, str]:
    """Start the emulator; returns the runner (call `await runner.cleanup()`) and its base URL.
    `runner.app[EMULATOR]` is the `SalesforceEmulator`. Serve on a host name, not an IP:
    aiohttp's cookie jar ignores cookies from IP hosts (reference C15)."""
    app = create_app(users, config)
    # Held long-polls would otherwise keep cleanup() waiting for up to 60 s.
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    if port == 0:
        port = _free_port("127.0.0.1")
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError:
        # "localhost" may resolve to ::1 too, where the port can be taken; IPv4 alone is enough.
        await web.TCPSite(runner, "127.0.0.1", port).start()
    base_url = f"http://{host}:{port}"
    log.info("salesforce_emulator_started", base_url=base_url, users=list(users))
    return runner, base_url


async def run_forever(host: str = "localhost", port: int = 8082, users: Sequence[str] = ("alice@contoso.test",),
                      config: SalesforceEmulatorConfig | None = None) -> None:
    runner, _ = await serve(host, port, users, config)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
