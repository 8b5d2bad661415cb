"""Durable replay ids for the Streaming API.

`ReplayStore` is the pluggable durable part (the ingest service backs it with its Kafka
cursors; tests use `MemoryReplayStore`). `DurableReplayStorage` is the aiosfstream-ng
extension that puts the right replay id on every `/meta/subscribe`, including the batched
re-subscribes the client sends on its own after a re-handshake (reference C10, C12).

Which id: the last one this process delivered (so a re-subscribe neither skips nor repeats),
else an explicit start id, else the store's, else the default (-1 new events / -2 all).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from aiosfstream_ng import ReplayMarker, ReplayMarkerStorage

NEW_EVENTS = -1
ALL_EVENTS = -2


class ReplayStore(Protocol):
    async def get(self, channel: str) -> int | None: ...

    async def set(self, channel: str, replay_id: int) -> None: ...


class MemoryReplayStore:
    def __init__(self, initial: Mapping[str, int] | None = None) -> None:
        self.ids: dict[str, int] = dict(initial or {})

    async def get(self, channel: str) -> int | None:
        return self.ids.get(channel)

    async def set(self, channel: str, replay_id: int) -> None:
        self.ids[channel] = replay_id


class DurableReplayStorage(ReplayMarkerStorage):
    def __init__(self, store: ReplayStore | None, *, start: int | Mapping[str, int] | None = None,
                 default: int = NEW_EVENTS) -> None:
        super().__init__()
        self.store = store
        self.start = start
        self.default = default
        self.delivered: dict[str, int] = {}

    def _start_for(self, channel: str) -> int | None:
        if isinstance(self.start, Mapping):
            return self.start.get(channel)
        return self.start

    async def get_replay_id(self, subscription: str) -> int | None:
        if subscription in self.delivered:
            return self.delivered[subscription]
        start = self._start_for(subscription)
        if start is not None:
            return start
        if self.store is not None:
            stored = await self.store.get(subscription)
            if stored is not None:
                return stored
        return self.default

    async def get_replay_marker(self, subscription: str) -> ReplayMarker | None:
        rid = self.delivered.get(subscription)
        return ReplayMarker(date="", replay_id=rid) if rid is not None else None

    async def set_replay_marker(self, subscription: str, replay_marker: ReplayMarker) -> None:
        self.delivered[subscription] = replay_marker.replay_id

    def is_new(self, channel: str, replay_id: int) -> bool:
        """False for an event at or before the last delivered one (a replay after re-subscribe)."""
        last = self.delivered.get(channel)
        return last is None or replay_id > last

    def mark_delivered(self, channel: str, replay_id: int) -> None:
        self.delivered[channel] = replay_id
