"""Polling helpers for integration tests: wait for a condition with a generous bound.

The bound is a safety net for a slow shared machine, never a performance assertion."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from services.core.bus.base import Bus, Consumer, Message

WAIT_S = float(
    __import__("os").environ.get("EXSF_TEST_WAIT_S", "60")
)  # an upper bound for a slow shared machine, not a performance claim


async def eventually(check: Callable[[], Awaitable[bool]], what: str, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for: {what}")
        await asyncio.sleep(0.05)


async def collect(consumer: Consumer, n: int, timeout: float = WAIT_S) -> list[Message]:
    out: list[Message] = []
    deadline = time.monotonic() + timeout
    while len(out) < n:
        if time.monotonic() > deadline:
            raise AssertionError(f"got {len(out)} of {n} messages")
        for msgs in (await consumer.getmany(timeout_ms=200)).values():
            out.extend(msgs)
    return out


async def topics_visible(bus: Bus, *topics: str, partitions: int) -> None:
    """Wait until every topic reports `partitions` partitions (Kafka creates them
    asynchronously; the embedded bus at once)."""

    async def check() -> bool:
        try:
            return all([await bus.partitions_for(t) == partitions for t in topics])
        except Exception:
            return False

    await eventually(check, f"topics {', '.join(topics)} with {partitions} partitions")
