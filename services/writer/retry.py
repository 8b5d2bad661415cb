"""The appliers' bounded retry loop for transient errors (other than throttling).

An attempt function gets the still-pending commands and the attempt number and returns an
outcome per command: Done / Later are final for this delivery, Transient asks for another
attempt after a jittered exponential backoff. After `max_attempts` a command is `failed`
(and dead-lettered) with the last reason. Attempts after the first tell the applier that
a create may already have landed (the earlier attempt's answer was lost), so it looks the
item up before creating it again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from services.core.envelopes import Command
from services.core.errors import (
    AuthError,
    ConnectorError,
    NotFoundError,
    PermanentError,
    PreconditionFailed,
    TransientError,
)
from services.writer.config import WriterSettings
from services.writer.outcome import Done, Later, Outcome, Transient, failed, gone, result_of
from services.writer.throttle import backoff_delay, is_throttle, throttle_delay

Attempt = Callable[[dict[int, Command], int], Awaitable[dict[int, Outcome | Transient]]]


async def with_retries(
    pending: dict[int, Command],
    attempt: Attempt,
    settings: WriterSettings,
    *,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> dict[int, Outcome]:
    out: dict[int, Outcome] = {}
    reasons: dict[int, str] = {}
    n = 0
    while pending:
        got = await attempt(pending, n)
        again: dict[int, Command] = {}
        for i, cmd in pending.items():
            o = got.get(i) or Transient("no answer for the request")
            if isinstance(o, Transient):
                again[i] = cmd
                reasons[i] = o.reason
            else:
                out[i] = o
        n += 1
        if again and n >= settings.max_attempts:
            for i, cmd in again.items():
                out[i] = failed(cmd, f"transient errors persisted after {n} attempts: {reasons[i]}")
            break
        if again:
            await sleep(backoff_delay(n - 1, settings))
        pending = again
    return out


def classify(cmd: Command, err: BaseException, settings: WriterSettings) -> Outcome | Transient:
    """A connector error for one command -> its outcome. 412 is a conflict and 404 on
    update/delete means gone; the caller adds the fresh record to conflicts if it can."""
    if is_throttle(err):
        assert isinstance(err, ConnectorError)
        return Later(throttle_delay(err, settings), str(err))
    if isinstance(err, TransientError):
        return Transient(str(err))
    if isinstance(err, PreconditionFailed):
        return Done(result_of(cmd, "conflict", error=str(err)))
    if isinstance(err, NotFoundError) and cmd.action != "create":
        return gone(cmd, str(err))
    if isinstance(err, AuthError | PermanentError | NotFoundError | ConnectorError):
        return failed(cmd, str(err))
    return failed(cmd, f"{type(err).__name__}: {err}")
