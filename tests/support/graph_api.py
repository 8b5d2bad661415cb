"""A Graph API client for tests and benchmarks: an app token against the emulator's token
endpoint, one retry on 401 (token refresh), and paging through @odata.nextLink."""

from __future__ import annotations

from typing import Any

import aiohttp


class GraphApi:
    """Reads and writes through the Graph API itself (an app token), as any client would."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.session = aiohttp.ClientSession()
        self._token: str | None = None
        self.requests = 0  # Graph API calls this reader made (the emulator counts them too)

    async def close(self) -> None:
        await self.session.close()

    async def _auth(self) -> str:
        if self._token is None:
            form = {"grant_type": "client_credentials", "client_id": "x", "client_secret": "x",
                    "scope": "https://graph.microsoft.com/.default"}
            async with self.session.post(f"{self.root}/t/oauth2/v2.0/token", data=form) as r:
                r.raise_for_status()
                self._token = str((await r.json())["access_token"])
        return self._token

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        url = path if path.startswith("http") else f"{self.root}/v1.0{path}"
        for _ in range(3):
            headers = {"Authorization": f"Bearer {await self._auth()}"}
            self.requests += 1
            async with self.session.request(method, url, json=body, headers=headers) as r:
                if r.status == 401:
                    self._token = None
                    continue
                r.raise_for_status()
                return await r.json() if r.content_length != 0 and r.status != 204 else None
        raise RuntimeError(f"{method} {path}: 401 after token refresh")

    async def all(self, path: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        url: str | None = path + ("&" if "?" in path else "?") + "$top=500"
        while url:
            page = await self.call("GET", url)
            out.extend(page.get("value", []))
            url = page.get("@odata.nextLink")
        return out
