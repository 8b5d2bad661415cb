"""Change Data Capture: turns committed `Change`s into CometD change events, keeps them per
retention window with increasing replay ids, and hands new ones to the CometD server."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from services.emulators.salesforce import timefmt
from services.emulators.salesforce.schema import SOBJECTS
from services.emulators.salesforce.store import Change, Org

ALL_CHANNEL = "/data/ChangeEvents"


def entity_channel(entity: str) -> str:
    return f"/data/{entity}ChangeEvent"


def cdc_channels() -> set[str]:
    return {ALL_CHANNEL} | {entity_channel(n) for n, d in SOBJECTS.items() if d.cdc}


@dataclass
class StoredEvent:
    replay_id: int
    stored_at: float
    entity: str
    payload: dict[str, Any]
    schema: str

    def channels(self) -> tuple[str, str]:
        return ALL_CHANNEL, entity_channel(self.entity)

    def message(self, channel: str) -> dict[str, Any]:
        # The channel must be the subscribed name (the client keys replay markers by it, C13).
        return {"channel": channel,
                "data": {"schema": self.schema, "payload": self.payload, "event": {"replayId": self.replay_id}}}


def _cdc_value(sobject: str, name: str, value: Any) -> Any:
    f = SOBJECTS[sobject].fields.get(name)
    if f is not None and f.type == "datetime" and isinstance(value, str):
        return timefmt.cdc(timefmt.parse_datetime(value))
    return value


def build_payload(ch: Change, commit_number: int) -> dict[str, Any]:
    d = SOBJECTS[ch.sobject]
    body: dict[str, Any] = {}
    changed: list[str] = []
    component_of = {flat: (nest, comp) for nest, comps in d.compounds.items() for comp, flat in comps.items()}
    for name, value in ch.values.items():
        v = _cdc_value(ch.sobject, name, value)
        if name in component_of:
            nest, comp = component_of[name]
            body.setdefault(nest, {})[comp] = v
            changed.append(f"{nest}.{comp}")
        else:
            body[name] = v
            changed.append(name)
    header = {
        "entityName": ch.sobject,
        "recordIds": [ch.record_id],
        "changeType": ch.change_type,
        "changeOrigin": ch.change_origin,
        "transactionKey": ch.transaction_key,
        "sequenceNumber": ch.sequence,
        "commitTimestamp": ch.commit_ms,
        "commitNumber": commit_number,
        "commitUser": ch.user_id,
        "changedFields": changed if ch.change_type == "UPDATE" else [],
    }
    return {"ChangeEventHeader": header, **body}


class ChangeEventBus:
    def __init__(self, org: Org, retention_s: float) -> None:
        self.org = org
        self.retention_s = retention_s
        self.events: list[StoredEvent] = []
        self.last_replay_id = 0
        # Replay ids at or below this were pruned: asking to replay after an earlier id loses events.
        self.pruned_upto = 0
        self.listeners: list[Callable[[StoredEvent], None]] = []
        self._schemas = {name: secrets.token_urlsafe(16) for name in SOBJECTS}
        org.listeners.append(self.on_changes)

    def now(self) -> float:
        return time.time() + self.org.clock_offset_ms / 1000

    def on_changes(self, changes: list[Change]) -> None:
        commit_number = self.org.next_commit_number()
        for ch in changes:
            self._publish(ch.sobject, build_payload(ch, commit_number))

    def _publish(self, entity: str, payload: dict[str, Any]) -> StoredEvent:
        self.prune_expired()
        # Replay ids increase per channel but are not contiguous: one counter feeds all channels.
        self.last_replay_id += 1
        ev = StoredEvent(self.last_replay_id, self.now(), entity, payload, self._schemas[entity])
        self.events.append(ev)
        for listener in self.listeners:
            listener(ev)
        return ev

    def publish_gap(self, entity: str, record_ids: list[str], change_type: str, user_id: str) -> StoredEvent:
        ms = self.org.now_ms()
        header = {
            "entityName": entity,
            "recordIds": record_ids,
            "changeType": change_type,
            "changeOrigin": "",
            "transactionKey": secrets.token_hex(16),
            "sequenceNumber": 1,
            "commitTimestamp": ms,
            "commitNumber": self.org.next_commit_number(),
            "commitUser": user_id,
            "changedFields": [],
        }
        if change_type == "GAP_OVERFLOW":
            header["recordIds"] = []
        return self._publish(entity, {"ChangeEventHeader": header})

    def prune_expired(self) -> None:
        # Events are stored in time order, so only the head can have expired.
        cutoff = self.now() - self.retention_s
        n = 0
        while n < len(self.events) and self.events[n].stored_at < cutoff:
            n += 1
        if n:
            self.pruned_upto = max(self.pruned_upto, self.events[n - 1].replay_id)
            del self.events[:n]

    def prune(self, predicate: Callable[[StoredEvent], bool]) -> int:
        gone = [ev for ev in self.events if predicate(ev)]
        if gone:
            self.pruned_upto = max(self.pruned_upto, max(ev.replay_id for ev in gone))
            self.events = [ev for ev in self.events if ev.replay_id > self.pruned_upto]
        return len(gone)

    def valid_replay_id(self, replay_id: int) -> bool:
        self.prune_expired()
        return self.pruned_upto <= replay_id <= self.last_replay_id

    def retained(self, channel: str, after: int) -> list[StoredEvent]:
        self.prune_expired()
        return [ev for ev in self.events if ev.replay_id > after and channel in ev.channels()]
