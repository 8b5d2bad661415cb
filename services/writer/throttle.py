"""Concurrency limits, throttling and backoff.

- `Gate`: at most N concurrent requests per key (Graph: per tenant and mailbox, N = 4 as
  Outlook allows per app and mailbox; Salesforce: per org). When the server throttles a
  key, `block` closes the gate for its Retry-After, so the other requests queued for that
  mailbox wait too instead of drawing more 429s.
- `classify`: a connector error -> throttled (pause the partition for Retry-After),
  transient (bounded in-process retries with jittered exponential backoff) or final.
- `backoff_delay`: the jittered exponential delay for transient retries.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager

from services.core.errors import ConnectorError, TransientError
from services.writer.config import WriterSettings

THROTTLE_STATUSES = frozenset({429, 503})
THROTTLE_CODES = frozenset({"REQUEST_LIMIT_EXCEEDED", "SERVER_UNAVAILABLE"})


class Gate:
    def __init__(self, concurrency: int) -> None:
        self.concurrency = concurrency
        self._sems: dict[Hashable, asyncio.Semaphore] = {}
        self._blocked_until: dict[Hashable, float] = {}

    @asynccontextmanager
    async def slot(self, key: Hashable) -> AsyncIterator[None]:
        sem = self._sems.get(key)
        if sem is None:
            sem = self._sems[key] = asyncio.Semaphore(self.concurrency)
        async with sem:
            # Re-check after every wake-up: another request may have been throttled meanwhile.
            while True:
                wait = self._blocked_until.get(key, 0.0) - time.monotonic()
                if wait <= 0:
                    break
                await asyncio.sleep(wait)
            yield

    def block(self, key: Hashable, seconds: float) -> None:
        until = time.monotonic() + max(0.0, seconds)
        if until > self._blocked_until.get(key, 0.0):
            self._blocked_until[key] = until


def is_throttle(err: BaseException) -> bool:
    if not isinstance(err, TransientError):
        return False
    return err.status in THROTTLE_STATUSES or (err.code or "").upper() in THROTTLE_CODES


def throttle_delay(err: ConnectorError, settings: WriterSettings) -> float:
    """Retry-After when the server gave one, else the configured pause for the kind."""
    ra = err.retry_after if isinstance(err, TransientError) else None
    if ra is not None and ra > 0:
        return float(ra)
    if (err.code or "").upper() == "REQUEST_LIMIT_EXCEEDED":
        return settings.request_limit_backoff_s
    return settings.throttle_default_s


def backoff_delay(attempt: int, settings: WriterSettings) -> float:
    """Attempt 0, 1, 2... -> base * 2^attempt capped at max, with jitter in [50%, 100%]
    so that many writers retrying together spread out."""
    ceiling = min(settings.backoff_max_s, settings.backoff_base_s * (2**attempt))
    return ceiling * random.uniform(0.5, 1.0)
