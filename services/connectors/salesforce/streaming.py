"""Change Data Capture over the Streaming API with aiosfstream-ng, hardened for long runs.

`CdcStream` yields decoded change events one by one (`messages()`) or in small batches
(`batches()`), and survives what a long-running subscriber meets:

* login host: aiosfstream-ng posts tokens to a module-constant login.salesforce.com URL
  (reference C1). `_Authenticator` overrides `_token_url` and delegates the token request
  to our `SalesforceAuth`, so My Domain, sandboxes and the emulator work and REST and
  streaming share one cached token.
* reconnect path: aiocometd-ng 0.5.6 `Client._wait_connection_timeout` still passes
  `loop=` to `asyncio.wait_for` (TypeError on Python >= 3.10), which turns any dropped
  long-poll into an immediate `TransportTimeoutError`. `_StreamingClient` re-implements that
  one method without `loop=`. Should the transport still give up, the stream reopens a fresh
  client from the last delivered replay id.
* `403::Unknown client`: the library re-handshakes and re-subscribes by itself (C9, C10);
  `DurableReplayStorage` puts the last delivered replay id on those subscribes, and replayed
  duplicates (already delivered ids) are dropped, so nothing is lost or repeated.
* invalid replay id (`400::The replayId ... was invalid`): raised as `CursorExpired`, whether
  it comes from our subscribe or from the library's silent re-subscribe. No `replay_fallback`
  is configured, on purpose: falling back to -1/-2 would hide the gap (C14); the caller does a
  SOQL catch-up (see catchup.py) and restarts the stream.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiocometd_ng.constants import TransportState
from aiocometd_ng.extensions import Extension
from aiocometd_ng.typing import Headers, JsonObject, Payload
from aiosfstream_ng import Client, ReplayMarkerStoragePolicy
from aiosfstream_ng.auth import AuthenticatorBase
from aiosfstream_ng.exceptions import AiosfstreamException, AuthenticationError, ServerError

from services.connectors.salesforce.auth import SalesforceAuth
from services.connectors.salesforce.replay import NEW_EVENTS, DurableReplayStorage, ReplayStore
from services.core.errors import CursorExpired, PermanentError, TransientError

log = structlog.get_logger(__name__)

ALL_CHANGE_EVENTS = "/data/ChangeEvents"


def entity_channel(sobject: str) -> str:
    return f"/data/{sobject}ChangeEvent"


@dataclass(frozen=True, slots=True)
class CdcMessage:
    channel: str
    replay_id: int
    header: dict[str, Any]
    # Record fields of the event (no header). UPDATE: only changed fields, nulls included.
    payload: dict[str, Any] = field(default_factory=dict)

    @property
    def entity(self) -> str:
        return str(self.header.get("entityName", ""))

    @property
    def change_type(self) -> str:
        return str(self.header.get("changeType", ""))

    @property
    def record_ids(self) -> list[str]:
        return list(self.header.get("recordIds") or [])

    @property
    def change_origin(self) -> str:
        return str(self.header.get("changeOrigin") or "")

    @property
    def commit_timestamp(self) -> int:
        return int(self.header.get("commitTimestamp") or 0)

    @property
    def changed_fields(self) -> list[str]:
        return list(self.header.get("changedFields") or [])

    @property
    def is_gap(self) -> bool:
        """GAP_CREATE/UPDATE/DELETE/UNDELETE: header only, re-read the records (catchup.reread)."""
        return self.change_type.startswith("GAP_") and self.change_type != "GAP_OVERFLOW"

    @property
    def is_overflow(self) -> bool:
        """GAP_OVERFLOW: header only, no ids; run a SOQL catch-up for the entity."""
        return self.change_type == "GAP_OVERFLOW"

    def from_client(self, client_id: str) -> bool:
        """Was this change made through the API with `Sforce-Call-Options: client=<client_id>`?"""
        return f";client={client_id}" in self.change_origin


def decode(raw: JsonObject) -> CdcMessage:
    data = raw["data"]
    payload = dict(data.get("payload") or {})
    header = payload.pop("ChangeEventHeader", {}) or {}
    return CdcMessage(str(raw["channel"]), int(data["event"]["replayId"]), dict(header), payload)


class _Authenticator(AuthenticatorBase):
    """aiosfstream-ng authenticator backed by `SalesforceAuth` (any login host, any flow)."""

    def __init__(self, auth: SalesforceAuth) -> None:
        super().__init__()
        self._auth = auth
        self._calls = 0

    @property
    def _token_url(self) -> str:
        return self._auth.token_url

    async def _authenticate(self) -> tuple[int, JsonObject]:
        # Called on open (a cached token will do) and whenever the server answers 401/403
        # (C9), when only a fresh token helps.
        self._calls += 1
        token = await (self._auth.token() if self._calls == 1 else self._auth.refresh(self._auth.cached))
        return 200, {
            "access_token": token.access_token.reveal(),
            "token_type": token.token_type,
            "instance_url": token.instance_url,
            "id": token.identity_url,
            "issued_at": token.issued_at,
        }

    def __repr__(self) -> str:
        return f"_Authenticator(token_url={self._token_url!r})"


class _StreamingClient(Client):
    async def _wait_connection_timeout(self, timeout: int | float) -> None:
        # Same as aiocometd-ng 0.5.6 minus the `loop=` argument that Python >= 3.10 rejects.
        assert self._transport is not None
        while True:
            await self._transport.wait_for_state(TransportState.CONNECTING)
            try:
                await asyncio.wait_for(self._transport.wait_for_state(TransportState.CONNECTED), timeout)
            except TimeoutError:
                break


class _SubscribeWatch(Extension):
    """Sees every incoming payload, including the replies to the library's own re-subscribes,
    which it otherwise drops silently (C10)."""

    def __init__(self) -> None:
        self.expired = asyncio.Event()
        self.error: str = ""

    async def outgoing(self, payload: Payload, headers: Headers) -> None:
        return None

    async def incoming(self, payload: Payload, headers: Headers | None = None) -> None:
        for m in payload:
            err = str(m.get("error") or "")
            if m.get("channel") == "/meta/subscribe" and not m.get("successful", True) and is_replay_error(err):
                self.error = f"{m.get('subscription')}: {err}"
                self.expired.set()


def is_replay_error(error: str) -> bool:
    return error.startswith("400") and "replayId" in error


class StreamClosed(Exception):
    """`next()` was waiting (or called) after `close()`: the iterators just end."""


class CdcStream:
    def __init__(
        self,
        auth: SalesforceAuth,
        channels: Sequence[str] = (ALL_CHANGE_EVENTS,),
        *,
        store: ReplayStore | None = None,
        start: int | Mapping[str, int] | None = None,
        default_replay: int = NEW_EVENTS,
        auto_commit: bool = True,
        connection_timeout_s: float = 150.0,
        max_pending: int = 100,
        reopen_backoff_s: float = 1.0,
        max_reopen_failures: int = 8,
    ) -> None:
        """`start`: an explicit replay id (one for all channels or per channel) that wins over
        the store; -1 new events, -2 everything retained. With `auto_commit`, each message's
        replay id is written to `store` as it is handed out; otherwise call `commit()`.
        `connection_timeout_s` must exceed the server's long-poll time (110 s * 1.2)."""
        self.auth = auth
        self.channels = tuple(channels)
        self.store = store
        self.storage = DurableReplayStorage(store, start=start, default=default_replay)
        self.auto_commit = auto_commit
        self.connection_timeout_s = connection_timeout_s
        self.max_pending = max_pending
        self.reopen_backoff_s = reopen_backoff_s
        self.max_reopen_failures = max_reopen_failures
        self._client: _StreamingClient | None = None
        self._watch = _SubscribeWatch()
        self._closed = False
        self._close_event = asyncio.Event()
        self.opens = 0
        self.reopens = 0
        self.duplicates_dropped = 0

    async def __aenter__(self) -> CdcStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self) -> None:
        """Handshake and subscribe now (otherwise the first message() call does it)."""
        self._closed = False
        self._close_event.clear()
        if self._client is None:
            await self._open()

    async def _open(self) -> None:
        _install_connect_cancel_filter(asyncio.get_running_loop())
        self._watch = _SubscribeWatch()
        client = _StreamingClient(
            _Authenticator(self.auth),
            replay=self.storage,
            replay_storage_policy=ReplayMarkerStoragePolicy.MANUAL,
            connection_timeout=self.connection_timeout_s,
            max_pending_count=self.max_pending,
        )
        assert client.extensions is not None
        client.extensions.append(self._watch)
        self.opens += 1
        try:
            await client.open()
            for ch in self.channels:
                await client.subscribe(ch)
        except ServerError as exc:
            await _quiet_close(client)
            error = exc.error or ""
            if is_replay_error(error):
                raise CursorExpired(f"salesforce replay id no longer valid: {exc.error_message}",
                                    code="INVALID_REPLAY_ID") from None
            if exc.error_code == 400 or (exc.error_code == 403 and "Unknown client" not in error):
                # An unknown channel or a missing CDC permission: reconnecting will not help.
                raise PermanentError(f"salesforce streaming refused: {error}", code=str(exc.error_code)) from None
            raise
        except BaseException:
            await _quiet_close(client)
            raise
        self._client = client
        log.info("salesforce_stream_open", channels=list(self.channels), opens=self.opens)

    async def close(self) -> None:
        self._closed = True
        self._close_event.set()
        await self._drop_client()

    async def _drop_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await _quiet_close(client)

    async def _receive(self, client: _StreamingClient) -> JsonObject:
        recv = asyncio.ensure_future(client.receive())
        expired = asyncio.ensure_future(self._watch.expired.wait())
        closed = asyncio.ensure_future(self._close_event.wait())
        try:
            done, _ = await asyncio.wait({recv, expired, closed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (recv, expired, closed):
                if not t.done():
                    t.cancel()
        if recv in done:
            return recv.result()
        if closed in done:
            raise StreamClosed()
        raise CursorExpired(f"salesforce replay id no longer valid: {self._watch.error}", code="INVALID_REPLAY_ID")

    async def _next_raw(self) -> JsonObject:
        failures = 0
        while True:
            if self._closed:
                raise StreamClosed()
            try:
                if self._client is None:
                    await self._open()
                assert self._client is not None
                return await self._receive(self._client)
            except CursorExpired:
                await self._drop_client()
                raise
            except AuthenticationError:
                await self._drop_client()
                raise
            except (AiosfstreamException, TransientError) as exc:
                if self._closed:
                    raise StreamClosed() from None
                # Lost connection, server-closed session, network failure on open: reopen
                # from the last delivered replay id.
                await self._drop_client()
                failures += 1
                if failures > self.max_reopen_failures:
                    raise TransientError(f"salesforce streaming keeps failing: {type(exc).__name__}") from None
                self.reopens += 1
                delay = min(30.0, self.reopen_backoff_s * 2 ** (failures - 1))
                log.warning("salesforce_stream_reopen", error=type(exc).__name__, detail=str(exc)[:200],
                            failures=failures, delay_s=delay)
                await asyncio.sleep(delay)

    async def next(self) -> CdcMessage:
        """The next change event not delivered before."""
        while True:
            raw = await self._next_raw()
            try:
                msg = decode(raw)
            except (KeyError, TypeError, ValueError):
                # Not a change event (no data.event.replayId): nothing to resume from, skip it.
                log.warning("salesforce_stream_unexpected_message", channel=raw.get("channel"))
                continue
            if not self.storage.is_new(msg.channel, msg.replay_id):
                self.duplicates_dropped += 1
                continue
            self.storage.mark_delivered(msg.channel, msg.replay_id)
            if self.auto_commit:
                await self.commit(msg)
            return msg

    async def commit(self, msg: CdcMessage) -> None:
        """Make `msg` the durable resume point of its channel."""
        if self.store is not None:
            await self.store.set(msg.channel, msg.replay_id)

    async def messages(self) -> AsyncIterator[CdcMessage]:
        while True:
            try:
                msg = await self.next()
            except StreamClosed:
                return
            yield msg

    async def batches(self, max_size: int = 100) -> AsyncIterator[list[CdcMessage]]:
        """Waits for one event, then adds whatever else already arrived (up to `max_size`)."""
        while True:
            try:
                batch = [await self.next()]
            except StreamClosed:
                return
            while len(batch) < max_size and self._client is not None and self._client.has_pending_messages:
                try:
                    batch.append(await self.next())
                except StreamClosed:
                    yield batch
                    return
            yield batch

    @property
    def pending(self) -> int:
        return self._client.pending_count if self._client is not None else 0


async def _quiet_close(client: Client) -> None:
    try:
        await client.close()
    except Exception as exc:  # closing a broken session must not mask the real error
        log.debug("salesforce_stream_close_failed", error=type(exc).__name__)


def _is_connect_done_cancel(context: dict[str, object]) -> bool:
    """aiocometd-ng's `TransportBase._connect_done` is a done-callback on its long-poll
    connect task. Its `except Exception` misses CancelledError (a BaseException since Python
    3.8), so every disconnect, which cancels the in-flight long poll by design
    (`_stop_connect_task`), makes asyncio log "Exception in callback ... CancelledError" at
    ERROR with a traceback. Nothing is lost: the task was cancelled on purpose."""
    handle = context.get("handle")
    callback = getattr(handle, "_callback", None)
    name = getattr(callback, "__qualname__", "")
    return isinstance(context.get("exception"), asyncio.CancelledError) and name == "TransportBase._connect_done"


def _install_connect_cancel_filter(loop: asyncio.AbstractEventLoop) -> None:
    """Swallow exactly that callback error on this loop; everything else still reaches the
    handler that was there before (or asyncio's default one)."""
    previous = loop.get_exception_handler()
    if getattr(previous, "_exsf_cometd_filter", False):
        return

    def handler(lp: asyncio.AbstractEventLoop, context: dict[str, object]) -> None:
        if _is_connect_done_cancel(context):
            log.debug("salesforce_stream_connect_cancelled")
            return
        if previous is not None:
            previous(lp, context)
        else:
            lp.default_exception_handler(context)

    handler._exsf_cometd_filter = True  # type: ignore[attr-defined]
    loop.set_exception_handler(handler)
