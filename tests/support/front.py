"""A tiny round-robin HTTP front for tests: what a k8s Service does to Graph's POSTs.

Each request is forwarded, method, path, query, headers and body unchanged, to the next
backend port on 127.0.0.1 in turn; the backend's status and body are returned. A backend
that refuses the connection (a killed pod) is skipped for that request, as kube-proxy stops
sending to a pod that is not ready; if all refuse, the front answers 502.

Usage:

    async with RoundRobinFront([8081, 8082]) as url:   # url = "http://127.0.0.1:<port>"
        ...  # give Graph (the emulator) f"{url}/notifications" as notificationUrl

or `front = RoundRobinFront(ports); await front.start(); front.url; await front.stop()`.
`front.ports` may be replaced while running (pods restarted on new ports); `front.hits`
counts requests per backend port, so a test can show the POSTs really were spread.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from types import TracebackType

import aiohttp
from aiohttp import web

_HOP = {"host", "content-length", "transfer-encoding", "connection"}


class RoundRobinFront:
    def __init__(self, ports: Sequence[int], *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.ports: list[int] = list(ports)
        self.host = host
        self.port = port
        self.hits: Counter[int] = Counter()
        self._next = 0
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        if self._runner is None:
            raise RuntimeError("RoundRobinFront is not started")
        return f"http://{self.host}:{self.port}"

    async def start(self) -> str:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        server = site._server
        if self.port == 0 and server is not None:
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> str:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def _forward(self, request: web.Request) -> web.Response:
        assert self._session is not None
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        ports = list(self.ports)
        # Take the turn before awaiting: concurrent POSTs (Graph sends several at once) must
        # not all read the same turn and land on one backend.
        start = self._next
        self._next += 1
        for i in range(len(ports)):
            port = ports[(start + i) % len(ports)]
            try:
                async with self._session.request(
                    request.method, f"http://127.0.0.1:{port}{request.rel_url}", data=body, headers=headers
                ) as resp:
                    payload = await resp.read()
                    self.hits[port] += 1
                    ctype = resp.headers.get("Content-Type")
                    return web.Response(
                        status=resp.status, body=payload, headers={"Content-Type": ctype} if ctype else None
                    )
            except aiohttp.ClientConnectionError:
                continue
        return web.Response(status=502, text="no backend answered")
