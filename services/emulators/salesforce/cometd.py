"""Streaming API: Bayeux 1.0 long-polling at /cometd/{version}, with the replay extension.

Behaviour the real clients depend on (reference §0): the reply is always a JSON array; the
first connect after a handshake answers at once, later ones are held until an event arrives
or the long-poll timeout passes; every message of a batched request is processed and
answered in one array; a forgotten client gets `403::Unknown client` + handshake advice.
"""

from __future__ import annotations

import asyncio
import secrets
import string
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import orjson
import structlog
from aiohttp import web

from services.emulators.salesforce.cdc import ChangeEventBus, StoredEvent, cdc_channels
from services.emulators.salesforce.config import SalesforceEmulatorConfig
from services.emulators.salesforce.faults import Counters, Faults
from services.emulators.salesforce.oauth import TokenStore

log = structlog.get_logger(__name__)

MAX_BODY = 32_768
_ALPHABET = string.ascii_lowercase + string.digits


def invalid_replay_error(replay_id: object) -> str:
    return (f"400::The replayId {replay_id} you provided was invalid.  Please provide a valid ID, -2 to replay "
            "all events, or -1 to replay only new events.")


@dataclass
class _Client:
    id: str
    user_id: str
    subscriptions: set[str] = field(default_factory=set)
    queue: deque[dict[str, Any]] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    connected_once: bool = False
    last_seen: float = field(default_factory=time.monotonic)
    holding: int = 0
    connect_gen: int = 0
    gone: bool = False


class _Drop(Exception):
    """Close this long-poll's connection without answering (injected fault)."""


class CometdServer:
    def __init__(self, bus: ChangeEventBus, tokens: TokenStore, faults: Faults, counters: Counters,
                 config: SalesforceEmulatorConfig) -> None:
        self.bus, self.tokens, self.faults, self.counters, self.config = bus, tokens, faults, counters, config
        self.clients: dict[str, _Client] = {}
        self.channels = cdc_channels()
        bus.listeners.append(self._deliver)

    # --- admin hooks -----------------------------------------------------------------------

    def expire_sessions(self) -> int:
        """Forget every client, as Salesforce does after a server-side session loss."""
        n = len(self.clients)
        for c in self.clients.values():
            c.gone = True
            c.wake.set()
        self.clients.clear()
        return n

    # --- delivery --------------------------------------------------------------------------

    def _deliver(self, ev: StoredEvent) -> None:
        for c in self.clients.values():
            for ch in ev.channels():
                if ch in c.subscriptions:
                    c.queue.append(ev.message(ch))
                    c.wake.set()

    def _sweep(self) -> None:
        now = time.monotonic()
        for cid in [cid for cid, c in self.clients.items()
                    if c.holding == 0 and now - c.last_seen > self.config.client_timeout_s]:
            self.clients.pop(cid).gone = True

    # --- HTTP ------------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        if len(raw) > MAX_BODY:
            return web.Response(status=413, text="Maximum Request Size Exceeded")
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return web.Response(status=400, text="invalid JSON")
        messages: list[dict[str, Any]] = body if isinstance(body, list) else [body]
        self._sweep()
        auth = request.headers.get("Authorization")
        user = self.tokens.validate(auth)
        if user is None:
            return self._json([self._auth_failure(m, auth is None) for m in messages])
        try:
            replies = await self._process(messages, user.id, request)
        except _Drop:
            if request.transport is not None:
                request.transport.close()
            return web.Response(status=500)
        resp = self._json(replies)
        if not request.cookies.get("BAYEUX_BROWSER"):
            resp.set_cookie("BAYEUX_BROWSER", secrets.token_hex(8), path="/cometd/")
        return resp

    @staticmethod
    def _json(payload: list[dict[str, Any]]) -> web.Response:
        return web.Response(body=orjson.dumps(payload), content_type="application/json")

    @staticmethod
    def _auth_failure(m: dict[str, Any], missing: bool) -> dict[str, Any]:
        reply = _base_reply(m)
        reply["successful"] = False
        if missing:
            reply["error"] = "401::Request requires authentication"
        elif m.get("channel") == "/meta/handshake":
            reply["error"] = "403::Handshake denied"
            reply["ext"] = {"sfdc": {"failureReason": "401::Authentication invalid"}}
        else:
            reply["error"] = "401::Authentication invalid"
        reply["advice"] = {"reconnect": "none", "interval": 0}
        return reply

    async def _process(self, messages: list[dict[str, Any]], user_id: str, request: web.Request
                       ) -> list[dict[str, Any]]:
        replies: list[dict[str, Any] | None] = [None] * len(messages)
        connects: list[int] = []
        for i, m in enumerate(messages):
            ch = m.get("channel")
            if ch == "/meta/connect":
                # Answer connects last, so events replayed by subscribes in the same batch ride along.
                connects.append(i)
            elif ch == "/meta/handshake":
                replies[i] = self._handshake(m, user_id)
            elif ch == "/meta/subscribe":
                replies[i] = self._subscribe(m)
            elif ch == "/meta/unsubscribe":
                replies[i] = self._unsubscribe(m)
            elif ch == "/meta/disconnect":
                replies[i] = self._disconnect(m)
            else:
                r = _base_reply(m)
                r.update(successful=False, error=f"403:{ch}:Publish not allowed")
                replies[i] = r
        events: list[dict[str, Any]] = []
        for i in connects:
            replies[i], evs = await self._connect(messages[i])
            events.extend(evs)
        return [r for r in replies if r is not None] + events

    def _advice(self) -> dict[str, Any]:
        return {"reconnect": "retry", "interval": 0, "timeout": int(self.config.long_poll_timeout_s * 1000)}

    def _handshake(self, m: dict[str, Any], user_id: str) -> dict[str, Any]:
        self.counters.cometd_handshakes += 1
        cid = "".join(secrets.choice(_ALPHABET) for _ in range(26))
        self.clients[cid] = _Client(cid, user_id)
        r = _base_reply(m)
        r.update(
            successful=True, version="1.0", minimumVersion="1.0", clientId=cid,
            supportedConnectionTypes=["long-polling"], ext={"replay": True, "payload.format": True},
            reestablish=False, advice=self._advice(),
        )
        return r

    def _unknown(self, m: dict[str, Any]) -> dict[str, Any]:
        r = _base_reply(m)
        r.update(successful=False, error="403::Unknown client", advice={"reconnect": "handshake", "interval": 0})
        if "subscription" in m:
            r["subscription"] = m["subscription"]
        return r

    def _client(self, m: dict[str, Any]) -> _Client | None:
        c = self.clients.get(str(m.get("clientId")))
        if c is not None:
            c.last_seen = time.monotonic()
        return c

    def _subscribe(self, m: dict[str, Any]) -> dict[str, Any]:
        self.counters.cometd_subscribes += 1
        c = self._client(m)
        if c is None:
            return self._unknown(m)
        sub = str(m.get("subscription"))
        r = _base_reply(m)
        r["subscription"] = sub
        if sub not in self.channels:
            r.update(successful=False,
                     error=f"400::The channel you requested to subscribe to does not exist {{{sub}}}")
            return r
        replay = (m.get("ext") or {}).get("replay") or {}
        replay_id = replay.get(sub, -1)
        if not isinstance(replay_id, int) or isinstance(replay_id, bool):
            r.update(successful=False, error=invalid_replay_error(replay_id))
            return r
        if replay_id == -2:
            backlog = self.bus.retained(sub, 0)
        elif replay_id == -1:
            backlog = []
        elif self.bus.valid_replay_id(replay_id):
            backlog = self.bus.retained(sub, replay_id)
        else:
            r.update(successful=False, error=invalid_replay_error(replay_id))
            return r
        c.subscriptions.add(sub)
        c.queue.extend(ev.message(sub) for ev in backlog)
        if backlog:
            c.wake.set()
        r["successful"] = True
        return r

    def _unsubscribe(self, m: dict[str, Any]) -> dict[str, Any]:
        c = self._client(m)
        if c is None:
            return self._unknown(m)
        sub = str(m.get("subscription"))
        c.subscriptions.discard(sub)
        c.queue = deque(e for e in c.queue if e["channel"] != sub)
        r = _base_reply(m)
        r.update(successful=True, subscription=sub)
        return r

    def _disconnect(self, m: dict[str, Any]) -> dict[str, Any]:
        c = self.clients.pop(str(m.get("clientId")), None)
        if c is not None:
            c.gone = True
            c.wake.set()
        r = _base_reply(m)
        r["successful"] = True
        return r

    async def _connect(self, m: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        self.counters.cometd_connects += 1
        c = self._client(m)
        if c is None:
            return self._unknown(m), []
        if c.connected_once and self.faults.take("drop_long_polls"):
            self.counters.long_polls_dropped += 1
            raise _Drop()
        if c.connected_once and not c.queue:
            c.connect_gen += 1
            gen = c.connect_gen
            # A newer connect from the same client releases the one held before it (Bayeux).
            c.wake.set()
            c.holding += 1
            deadline = time.monotonic() + self.config.long_poll_timeout_s
            try:
                while not c.queue and not c.gone and gen == c.connect_gen:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    c.wake.clear()
                    try:
                        await asyncio.wait_for(c.wake.wait(), remaining)
                    except TimeoutError:
                        break
            finally:
                c.holding -= 1
                c.last_seen = time.monotonic()
            if c.gone:
                return self._unknown(m), []
        c.connected_once = True
        r = _base_reply(m)
        r.update(successful=True, advice=self._advice())
        events = list(c.queue)
        c.queue.clear()
        return r, events


def _base_reply(m: dict[str, Any]) -> dict[str, Any]:
    r: dict[str, Any] = {"channel": m.get("channel")}
    if "id" in m:
        r["id"] = m["id"]
    if "clientId" in m:
        r["clientId"] = m["clientId"]
    return r
