"""Faults injected through the admin API, and the per-mailbox request counters that let
tests check a client's behaviour (e.g. that it waited Retry-After after a 429)."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

GLOBAL = "_global"


@dataclass
class Faults:
    throttle_remaining: int = 0
    throttle_retry_after: int = 1
    throttle_mailbox: str | None = None  # None: any mailbox
    unavailable_remaining: int = 0
    unavailable_retry_after: int | None = None
    unavailable_mailbox: str | None = None
    delay_ms: int = 0
    drop_notifications: int = 0  # next N notification POSTs are dropped; -1 drops all
    delta_gone_code: str = "SyncStateNotFound"

    def take_throttle(self, mailbox: str) -> int | None:
        if self.throttle_remaining > 0 and _scope_matches(self.throttle_mailbox, mailbox):
            self.throttle_remaining -= 1
            return max(1, int(self.throttle_retry_after))
        return None

    def take_unavailable(self, mailbox: str) -> tuple[bool, int | None]:
        if self.unavailable_remaining > 0 and _scope_matches(self.unavailable_mailbox, mailbox):
            self.unavailable_remaining -= 1
            ra = self.unavailable_retry_after
            return True, (max(1, int(ra)) if ra is not None else None)
        return False, None

    def take_drop_notification(self) -> bool:
        if self.drop_notifications == -1:
            return True
        if self.drop_notifications > 0:
            self.drop_notifications -= 1
            return True
        return False


def _scope_matches(scope: str | None, mailbox: str) -> bool:
    return scope is None or scope.lower() == mailbox.lower()


@dataclass
class ThrottleRecord:
    client: str
    mailbox: str
    status: int
    retry_after: int | None
    throttled_at: float
    next_request_at: float | None = None
    request: str = ""

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["waited_s"] = None if self.next_request_at is None else self.next_request_at - self.throttled_at
        return d


@dataclass
class MailboxCounters:
    total: int = 0
    by_method: Counter[str] = field(default_factory=Counter)
    throttled: int = 0  # 429s sent
    unavailable: int = 0  # 503s sent
    batch_calls: int = 0
    throttle_log: list[ThrottleRecord] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "by_method": dict(self.by_method),
            "throttled": self.throttled,
            "unavailable": self.unavailable,
            "batch_calls": self.batch_calls,
            "throttle_log": [r.as_dict() for r in self.throttle_log],
        }


class Counters:
    def __init__(self) -> None:
        self.by_mailbox: dict[str, MailboxCounters] = {}
        # (client, mailbox, request line) -> the last 429/503 sent for it, waiting for the retry.
        # Keyed by request line too, so concurrent requests of one app don't pass for retries.
        self._pending: dict[tuple[str, str, str], list[ThrottleRecord]] = {}

    def of(self, mailbox: str) -> MailboxCounters:
        return self.by_mailbox.setdefault(mailbox.lower(), MailboxCounters())

    def request(self, mailbox: str, method: str, client: str, path: str = "", *, is_retry: bool = False) -> None:
        c = self.of(mailbox)
        c.total += 1
        c.by_method[method.upper()] += 1
        # A retry marked as such (kiota sends Retry-Attempt) settles the oldest open record, even
        # one an unmarked request had provisionally settled: an identical request sent
        # concurrently must not pass for an early retry. Unmarked requests settle provisionally.
        waiting = self._pending.get((client, mailbox.lower(), f"{method.upper()} {path}"))
        if not waiting:
            return
        now = time.monotonic()
        if is_retry:
            waiting.pop(0).next_request_at = now
            return
        first_open = next((r for r in waiting if r.next_request_at is None), None)
        if first_open is not None:
            first_open.next_request_at = now

    def rejected(self, mailbox: str, client: str, status: int, retry_after: int | None, method: str = "",
                 path: str = "") -> None:
        c = self.of(mailbox)
        if status == 429:
            c.throttled += 1
        else:
            c.unavailable += 1
        rec = ThrottleRecord(client, mailbox.lower(), status, retry_after, time.monotonic(),
                             request=f"{method.upper()} {path}")
        c.throttle_log.append(rec)
        self._pending.setdefault((client, mailbox.lower(), f"{method.upper()} {path}"), []).append(rec)

    def batch(self, mailboxes: set[str]) -> None:
        for mb in mailboxes | {GLOBAL}:
            self.of(mb).batch_calls += 1

    def snapshot(self, mailbox: str | None = None) -> dict[str, Any]:
        if mailbox is not None:
            return self.of(mailbox).as_dict()
        return {k: v.as_dict() for k, v in self.by_mailbox.items()}
