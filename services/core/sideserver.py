"""The side HTTP server every service runs: Prometheus `/metrics`, `/healthz`, `/readyz`.

Liveness means the event loop still turns (a stuck loop stops the heartbeat); readiness
means the service finished start-up (bus connected, partitions restored) and is not
draining. Kubernetes probes point at these.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client import REGISTRY as DEFAULT_REGISTRY


class Health:
    def __init__(self, stall_after_s: float = 30.0) -> None:
        self._ready = False
        self._reason = "starting"
        self._beat = time.monotonic()
        self._stall_after_s = stall_after_s
        self._checks: dict[str, Callable[[], bool]] = {}
        # Work that must finish before traffic is welcome, e.g. "reconciler/partition-3"
        # while its state is restored from exsf.state; a rebalance that adds partitions
        # adds entries again, so readiness drops until they are restored.
        self._pending: set[str] = set()

    def set_ready(self, ready: bool, reason: str = "") -> None:
        self._ready = ready
        self._reason = reason

    def add_check(self, name: str, check: Callable[[], bool]) -> None:
        """A readiness condition evaluated on every /readyz (e.g. 'bus connected')."""
        self._checks[name] = check

    def mark_pending(self, what: str) -> None:
        self._pending.add(what)

    def mark_done(self, what: str) -> None:
        self._pending.discard(what)

    def pending(self) -> list[str]:
        return sorted(self._pending)

    def beat(self) -> None:
        self._beat = time.monotonic()

    def live(self) -> tuple[bool, str]:
        age = time.monotonic() - self._beat
        return (age < self._stall_after_s, f"last heartbeat {age:.1f}s ago")

    def ready(self) -> tuple[bool, str]:
        if not self._ready:
            return False, self._reason or "not ready"
        if self._pending:
            return False, "restoring: " + ", ".join(self.pending())
        failing = [n for n, c in self._checks.items() if not c()]
        if failing:
            return False, "failing: " + ", ".join(failing)
        return True, "ok"


class SideServer:
    def __init__(
        self,
        health: Health,
        host: str = "0.0.0.0",
        port: int = 9000,
        registry: CollectorRegistry = DEFAULT_REGISTRY,
    ) -> None:
        self.health = health
        self.host = host
        self.port = port
        self.registry = registry
        self._runner: web.AppRunner | None = None
        self._beater: asyncio.Task[None] | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        return app

    async def start(self) -> int:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        if self.port == 0:
            sockets = getattr(site._server, "sockets", None) or []
            if sockets:
                self.port = sockets[0].getsockname()[1]
        self._beater = asyncio.create_task(self._beat_forever())
        return self.port

    async def stop(self) -> None:
        if self._beater:
            self._beater.cancel()
        if self._runner:
            await self._runner.cleanup()

    async def _beat_forever(self) -> None:
        while True:
            self.health.beat()
            await asyncio.sleep(1.0)

    async def _metrics(self, _: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, _: web.Request) -> web.Response:
        ok, why = self.health.live()
        return web.json_response({"status": "ok" if ok else "stalled", "detail": why}, status=200 if ok else 503)

    async def _readyz(self, _: web.Request) -> web.Response:
        ok, why = self.health.ready()
        body: dict[str, object] = {"status": "ready" if ok else "not-ready", "detail": why}
        if self.health.pending():
            body["pending"] = self.health.pending()
        return web.json_response(body, status=200 if ok else 503)
