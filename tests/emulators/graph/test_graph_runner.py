"""The CLI entry points: `main_args` + `run_forever` serve until cancelled."""

from __future__ import annotations

import asyncio
import socket

import aiohttp

from services.emulators.graph.app import main_args, run_forever


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_run_forever_serves_until_cancelled() -> None:
    port = _free_port()
    args = main_args(port, ["zoe@contoso.test"])
    assert args["mailboxes"] == ("zoe@contoso.test",)
    task = asyncio.create_task(run_forever(**args))
    url = f"http://127.0.0.1:{port}"
    mailboxes: list[dict[str, str]] = []
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(200):
                try:
                    async with http.get(url + "/_admin/mailboxes") as r:
                        mailboxes = await r.json()
                        break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.02)
            assert [m["address"] for m in mailboxes] == ["zoe@contoso.test"]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    async with aiohttp.ClientSession() as http:
        try:
            async with http.get(url + "/_admin/mailboxes"):
                stopped = False
        except aiohttp.ClientConnectionError:
            stopped = True
    assert stopped
