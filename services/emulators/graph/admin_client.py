"""A small client for the emulator's admin API, for tests, the demo and end-to-end runs."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import aiohttp


class GraphAdminClient:
    def __init__(self, root_url: str, session: aiohttp.ClientSession | None = None) -> None:
        self.root = root_url.rstrip("/") + "/_admin"
        self._session = session
        self._own = session is None

    async def _call(self, method: str, path: str, body: Any = None, params: dict[str, str] | None = None) -> Any:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        async with self._session.request(method, self.root + path, json=body, params=params) as r:
            data = await r.json(content_type=None)
            if r.status >= 400:
                raise RuntimeError(f"admin {method} {path}: HTTP {r.status} {data}")
            return data

    @staticmethod
    def _mb(mailbox: str) -> str:
        return "/mailboxes/" + quote(mailbox, safe="@")

    async def add_mailbox(self, address: str) -> dict[str, Any]:
        return await self._call("POST", "/mailboxes", {"address": address})

    async def containers(self, mailbox: str) -> list[dict[str, Any]]:
        return await self._call("GET", self._mb(mailbox) + "/containers")

    async def categories(self, mailbox: str) -> list[dict[str, Any]]:
        return await self._call("GET", self._mb(mailbox) + "/categories")

    async def create_item(self, mailbox: str, kind: str, data: dict[str, Any],
                          container: str | None = None) -> dict[str, Any]:
        """kind: contact | event | task | message; container: id, well-known name or displayName."""
        return await self._call("POST", self._mb(mailbox) + "/items",
                                {"kind": kind, "container": container, "data": data})

    async def get_item(self, mailbox: str, item_id: str) -> dict[str, Any]:
        return await self._call("GET", f"{self._mb(mailbox)}/items/{item_id}")

    async def update_item(self, mailbox: str, item_id: str, data: dict[str, Any]) -> dict[str, Any]:
        return await self._call("PATCH", f"{self._mb(mailbox)}/items/{item_id}", {"data": data})

    async def delete_item(self, mailbox: str, item_id: str) -> None:
        await self._call("DELETE", f"{self._mb(mailbox)}/items/{item_id}")

    async def move_item(self, mailbox: str, item_id: str, destination: str, *, keep_id: bool = False) -> dict[str, Any]:
        """keep_id: the id stays the same, as Outlook's immutable ids do (exsf asks for them)."""
        return await self._call("POST", f"{self._mb(mailbox)}/items/{item_id}/move",
                                {"destination": destination, "keepId": keep_id})

    async def add_attachment(self, mailbox: str, item_id: str, name: str, content_type: str,
                             content_base64: str) -> dict[str, Any]:
        return await self._call("POST", f"{self._mb(mailbox)}/items/{item_id}/attachments",
                                {"name": name, "contentType": content_type, "contentBase64": content_base64})

    async def faults(self, **settings: Any) -> dict[str, Any]:
        """throttle={count, retry_after, mailbox}, unavailable={count, retry_after, mailbox},
        delay_ms=, drop_notifications=, delta_gone_code=, concurrency_limit=."""
        return await self._call("POST", "/faults", settings)

    async def expire_tokens(self) -> dict[str, Any]:
        return await self._call("POST", "/tokens/expire")

    async def evict_delta_tokens(self) -> dict[str, Any]:
        return await self._call("POST", "/delta/evict")

    async def counters(self, mailbox: str | None = None) -> dict[str, Any]:
        return await self._call("GET", "/counters", params={"mailbox": mailbox} if mailbox else None)

    async def ledger(self) -> dict[str, Any]:
        """The applied-writes ledger (ledger.py): creates per link id, repeated updates."""
        return await self._call("GET", "/ledger")

    async def subscriptions(self) -> list[dict[str, Any]]:
        return await self._call("GET", "/subscriptions")

    async def lifecycle(self, subscription_id: str, event: str) -> dict[str, Any]:
        return await self._call("POST", f"/subscriptions/{subscription_id}/lifecycle", {"event": event})

    async def deliveries(self) -> list[dict[str, Any]]:
        return await self._call("GET", "/deliveries")

    async def reset(self) -> dict[str, Any]:
        return await self._call("POST", "/reset")

    async def close(self) -> None:
        if self._own and self._session is not None:
            await self._session.close()
