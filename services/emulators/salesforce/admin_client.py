"""A small async client for the emulator's /_admin API (tests, the demo, e2e scripts)."""

from __future__ import annotations

from typing import Any

import aiohttp


class SalesforceAdmin:
    def __init__(self, base_url: str, session: aiohttp.ClientSession | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self._session = session
        self._own = session is None

    async def close(self) -> None:
        if self._own and self._session is not None:
            await self._session.close()

    async def __aenter__(self) -> SalesforceAdmin:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        async with self._session.request(method, f"{self.base_url}/_admin{path}", json=body) as resp:
            answer = await resp.json(content_type=None)
            if resp.status >= 400:
                raise RuntimeError(f"admin {method} {path}: {resp.status} {answer}")
            return answer

    async def users(self) -> dict[str, str]:
        """username -> 005... id"""
        return {u["username"]: u["id"] for u in await self.call("GET", "/users")}

    async def create(self, sobject: str, fields: dict[str, Any], as_user: str | None = None) -> str:
        return str((await self.call("POST", f"/records/{sobject}", {"fields": fields, "as_user": as_user}))["id"])

    async def seed(self, sobject: str, records: list[dict[str, Any]], as_user: str | None = None) -> list[str]:
        return list((await self.call("POST", "/seed", {"sobject": sobject, "records": records,
                                                       "as_user": as_user}))["ids"])

    async def update(self, sobject: str, record_id: str, fields: dict[str, Any], as_user: str | None = None
                     ) -> dict[str, Any]:
        return dict(await self.call("PATCH", f"/records/{sobject}/{record_id}", {"fields": fields,
                                                                                 "as_user": as_user}))

    async def delete(self, sobject: str, record_id: str) -> None:
        await self.call("DELETE", f"/records/{sobject}/{record_id}")

    async def undelete(self, sobject: str, record_id: str) -> dict[str, Any]:
        return dict(await self.call("POST", f"/records/{sobject}/{record_id}/undelete"))

    async def record(self, sobject: str, record_id: str) -> dict[str, Any]:
        return dict(await self.call("GET", f"/records/{sobject}/{record_id}"))

    async def records(self, sobject: str) -> list[dict[str, Any]]:
        return list(await self.call("GET", f"/records/{sobject}"))

    async def faults(self, **counts: int) -> dict[str, int]:
        """request_limit=N, unavailable=N, drop_long_polls=N: the next N such requests fail."""
        return dict(await self.call("POST", "/faults", dict(counts)))

    async def expire_tokens(self, username: str | None = None, refresh_tokens: bool = False) -> int:
        return int((await self.call("POST", "/expire_tokens", {"username": username,
                                                               "refresh_tokens": refresh_tokens}))["expired"])

    async def expire_sessions(self) -> int:
        return int((await self.call("POST", "/expire_sessions"))["expired"])

    async def refresh_token(self, username: str) -> str:
        return str((await self.call("POST", "/refresh_tokens", {"username": username}))["refresh_token"])

    async def advance_clock(self, seconds: float) -> None:
        await self.call("POST", "/clock", {"advance_s": seconds})

    async def gap(self, sobject: str, record_id: str, change_type: str = "GAP_UPDATE") -> int:
        return int((await self.call("POST", "/cdc/gap", {"sobject": sobject, "id": record_id,
                                                         "change_type": change_type}))["replay_id"])

    async def overflow(self, sobject: str) -> int:
        return int((await self.call("POST", "/cdc/overflow", {"sobject": sobject}))["replay_id"])

    async def prune_events(self, upto_replay_id: int | None = None) -> int:
        return int((await self.call("POST", "/cdc/prune", {"upto_replay_id": upto_replay_id}))["pruned"])

    async def events(self) -> list[dict[str, Any]]:
        return list(await self.call("GET", "/cdc/events"))

    async def counters(self) -> dict[str, Any]:
        return dict(await self.call("GET", "/counters"))

    async def ledger(self) -> dict[str, Any]:
        """The applied-writes ledger (ledger.py): inserts per external id, repeated updates."""
        return dict(await self.call("GET", "/ledger"))

    async def writes(self) -> list[dict[str, Any]]:
        """The latest REST writes: method, kind, path and Sforce-Call-Options client."""
        return list(await self.call("GET", "/writes"))

    async def reset(self) -> None:
        await self.call("POST", "/reset")
