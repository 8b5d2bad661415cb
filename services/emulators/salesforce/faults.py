"""Injected faults and the request counters tests and the demo read back."""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Faults:
    # Each number is "the next N requests of that kind fail"; taking one decrements it.
    request_limit: int = 0
    unavailable: int = 0
    drop_long_polls: int = 0

    def take(self, name: str) -> bool:
        n = getattr(self, name)
        if n > 0:
            setattr(self, name, n - 1)
            return True
        return False


@dataclass
class Counters:
    rest_calls: int = 0
    rest_by_kind: Counter[str] = field(default_factory=Counter)
    collections_calls: int = 0
    token_requests: Counter[str] = field(default_factory=Counter)
    cometd_handshakes: int = 0
    cometd_connects: int = 0
    cometd_subscribes: int = 0
    long_polls_dropped: int = 0
    # Sforce-Call-Options client ids seen on writes, with how many writes each made.
    write_clients: Counter[str] = field(default_factory=Counter)
    # The latest writes: {"method", "kind", "path", "client"}, oldest first.
    recent_writes: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=1000))

    def snapshot(self) -> dict[str, Any]:
        return {
            "rest_calls": self.rest_calls,
            "rest_by_kind": dict(self.rest_by_kind),
            "collections_calls": self.collections_calls,
            "token_requests": dict(self.token_requests),
            "token_requests_total": sum(self.token_requests.values()),
            "cometd_handshakes": self.cometd_handshakes,
            "cometd_connects": self.cometd_connects,
            "cometd_subscribes": self.cometd_subscribes,
            "long_polls_dropped": self.long_polls_dropped,
            "write_clients": dict(self.write_clients),
        }
