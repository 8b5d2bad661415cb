"""Everything one emulator instance holds, shared by the API, $batch and the admin API."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from services.emulators.graph.config import GraphEmulatorConfig
from services.emulators.graph.delta import DeltaTokens
from services.emulators.graph.faults import Counters, Faults
from services.emulators.graph.ledger import WriteLedger
from services.emulators.graph.store import Store
from services.emulators.graph.tokens import IssuedTokens


@dataclass
class UploadSession:
    mailbox: str
    message_id: str
    name: str
    size: int
    content_type: str
    expires: str
    data: bytearray = field(default_factory=bytearray)


class EmulatorState:
    def __init__(self, config: GraphEmulatorConfig) -> None:
        self.config = config
        self.store = Store()
        for mb in config.mailboxes:
            self.store.add_mailbox(mb)
        self.tokens = IssuedTokens(config.token_lifetime_s)
        self.delta_tokens = DeltaTokens(config.delta_token_capacity)
        self.faults = Faults()
        self.counters = Counters()
        self.ledger = WriteLedger()
        self.inflight: dict[tuple[str, str], int] = {}
        self.uploads: dict[str, UploadSession] = {}
        self.background: set[asyncio.Task[Any]] = set()
        self.http: aiohttp.ClientSession | None = None
        from services.emulators.graph.subscriptions import SubscriptionManager

        self.subscriptions = SubscriptionManager(self)
        self.store.listeners.append(self.subscriptions.on_change)

    def spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    async def client(self) -> aiohttp.ClientSession:
        if self.http is None or self.http.closed:
            self.http = aiohttp.ClientSession()
        return self.http

    async def close(self) -> None:
        for t in list(self.background):
            t.cancel()
        if self.background:
            await asyncio.gather(*self.background, return_exceptions=True)
        if self.http is not None:
            await self.http.close()

    def reset(self) -> None:
        """Back to a fresh instance with the configured mailboxes (tokens stay valid)."""
        self.store.mailboxes.clear()
        for mb in self.config.mailboxes:
            self.store.add_mailbox(mb)
        self.delta_tokens.evict_all()
        self.faults = Faults()
        self.counters = Counters()
        self.ledger = WriteLedger()
        self.uploads.clear()
        self.subscriptions.clear()


STATE_KEY: web.AppKey[EmulatorState] = web.AppKey("graph_emulator_state", EmulatorState)
