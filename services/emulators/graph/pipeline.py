"""One request's way through the emulator: route, mailbox check, counters, injected
faults, the per-(app, mailbox) concurrency limit, then the handler. Top-level requests
and `$batch` sub-requests both come through here."""

from __future__ import annotations

import asyncio

from services.emulators.graph.faults import GLOBAL
from services.emulators.graph.wire import Ctx, GraphError, Resp, Router


def _throttled(retry_after: int, code: str, message: str) -> GraphError:
    return GraphError(429, code, message, {"Retry-After": str(max(1, int(retry_after)))})


async def execute(router: Router, ctx: Ctx) -> Resp:
    state = ctx.state
    try:
        handler, params = router.resolve(ctx.method, ctx.segments)
        ctx.params = params
        mailbox = GLOBAL
        if "user" in params:
            mailbox = state.store.mailbox(params["user"]).address.lower()
        state.counters.request(mailbox, ctx.method, ctx.app_id, ctx.path,
                               is_retry=ctx.header("retry-attempt") is not None)
        retry_after = state.faults.take_throttle(mailbox)
        if retry_after is not None:
            state.counters.rejected(mailbox, ctx.app_id, 429, retry_after, ctx.method, ctx.path)
            raise _throttled(retry_after, "TooManyRequests", "Too many requests.")
        unavailable, ra = state.faults.take_unavailable(mailbox)
        if unavailable:
            state.counters.rejected(mailbox, ctx.app_id, 503, ra, ctx.method, ctx.path)
            raise GraphError(503, "ServiceUnavailable", "The service is temporarily unavailable.",
                             {"Retry-After": str(ra)} if ra is not None else {})
        limit = state.config.concurrency_limit
        key = (ctx.app_id, mailbox)
        if limit is not None and mailbox != GLOBAL and state.inflight.get(key, 0) >= limit:
            ra = state.config.concurrency_retry_after_s
            state.counters.rejected(mailbox, ctx.app_id, 429, ra, ctx.method, ctx.path)
            raise _throttled(ra, "ApplicationThrottled", "Application is over its MailboxConcurrency limit.")
        state.inflight[key] = state.inflight.get(key, 0) + 1
        try:
            # A slow response holds its concurrency slot, as a slow mailbox would.
            if state.faults.delay_ms > 0:
                await asyncio.sleep(state.faults.delay_ms / 1000)
            return await handler(ctx)
        finally:
            state.inflight[key] -= 1
    except GraphError as exc:
        return exc.to_resp()
