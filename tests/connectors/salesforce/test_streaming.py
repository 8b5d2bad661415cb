"""aiosfstream-ng (through CdcStream) against the emulator's CometD endpoint over HTTP:
delivery, durable replay, re-handshake, invalid replay ids, dropped long-polls, gap events."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from services.connectors.salesforce.catchup import catch_up, reread
from services.connectors.salesforce.replay import ALL_EVENTS, MemoryReplayStore
from services.connectors.salesforce.rest import SalesforceRest
from services.connectors.salesforce.streaming import ALL_CHANGE_EVENTS, CdcMessage, CdcStream, entity_channel
from services.core.errors import CursorExpired, PermanentError
from services.emulators.salesforce.store import WriteContext
from tests.connectors.salesforce.conftest import USERS, Org
from tests.support.waiting import WAIT_S


async def take(stream: CdcStream, n: int) -> list[CdcMessage]:
    async def run() -> list[CdcMessage]:
        return [await stream.next() for _ in range(n)]

    return await asyncio.wait_for(run(), WAIT_S)


async def nothing_more(stream: CdcStream, wait_s: float = 1.5) -> bool:
    try:
        await asyncio.wait_for(stream.next(), wait_s)
    except TimeoutError:
        return True
    return False


@pytest.fixture
async def stream_factory(org: Org) -> AsyncIterator[object]:
    streams: list[CdcStream] = []
    auths = []

    def make(channels: tuple[str, ...] = (ALL_CHANGE_EVENTS,), **kw: object) -> CdcStream:
        auth = org.auth()
        auths.append(auth)
        kw.setdefault("connection_timeout_s", 10.0)
        kw.setdefault("reopen_backoff_s", 0.1)
        s = CdcStream(auth, channels, **kw)  # type: ignore[arg-type]
        streams.append(s)
        return s

    yield make
    for s in streams:
        await s.close()
    for a in auths:
        await a.close()


async def test_handshake_to_delivery_with_changed_fields_and_origin(org: Org, rest: SalesforceRest,
                                                                    stream_factory) -> None:
    stream = stream_factory()
    await stream.open()
    cid = await rest.create("Contact", {"FirstName": "Ann", "LastName": "Lee", "Email": "ann@x.test"})
    await rest.update("Contact", cid, {"Email": "new@x.test"})
    await org.admin.update("Contact", cid, {"Title": "Boss"})  # a UI edit: no API origin
    created, updated, ui = await take(stream, 3)

    assert created.channel == ALL_CHANGE_EVENTS
    assert (created.entity, created.change_type, created.record_ids) == ("Contact", "CREATE", [cid])
    assert created.payload["Name"] == {"FirstName": "Ann", "LastName": "Lee"}
    assert created.from_client("exsf")
    assert len(str(created.commit_timestamp)) == 13
    assert updated.change_type == "UPDATE" and updated.from_client("exsf")
    assert sorted(updated.changed_fields) == ["Email", "LastModifiedDate"]
    assert set(updated.payload) == {"Email", "LastModifiedDate"}
    assert ui.change_origin == "" and not ui.from_client("exsf")
    assert created.replay_id < updated.replay_id < ui.replay_id
    assert (await org.admin.counters())["cometd_handshakes"] == 1


async def test_entity_channel_gets_only_its_entity(org: Org, rest: SalesforceRest, stream_factory) -> None:
    stream = stream_factory((entity_channel("Task"),))
    await stream.open()
    await rest.create("Contact", {"LastName": "ignored"})
    tid = await rest.create("Task", {"Subject": "call back"})
    (msg,) = await take(stream, 1)
    assert msg.channel == "/data/TaskChangeEvent"  # the subscribed name, so replay markers match (C13)
    assert msg.record_ids == [tid] and msg.payload["Status"] == "Not Started"


async def test_replay_from_stored_id_after_reconnect(org: Org, rest: SalesforceRest, stream_factory) -> None:
    store = MemoryReplayStore()
    first = stream_factory(store=store)
    await first.open()
    ids = [r.id for r in await rest.create_many("Contact", [{"LastName": f"c{i}"} for i in range(3)])]
    got = await take(first, 3)
    assert [m.record_ids[0] for m in got] == ids
    assert store.ids == {ALL_CHANGE_EVENTS: got[-1].replay_id}
    await first.close()

    later = [r.id for r in await rest.create_many("Contact", [{"LastName": f"d{i}"} for i in range(2)])]
    second = stream_factory(store=store)
    again = await take(second, 2)
    assert [m.record_ids[0] for m in again] == later
    assert await nothing_more(second)


async def test_explicit_start_replays_everything_retained(rest: SalesforceRest, stream_factory) -> None:
    await rest.create("Contact", {"LastName": "old"})
    stream = stream_factory(start=ALL_EVENTS, store=MemoryReplayStore({ALL_CHANGE_EVENTS: 99}))
    (msg,) = await take(stream, 1)
    assert msg.payload["Name"] == {"LastName": "old"}


async def test_unknown_client_rehandshakes_and_resubscribes_from_last_delivered(
    org: Org, rest: SalesforceRest, stream_factory
) -> None:
    stream = stream_factory()
    await stream.open()
    await rest.create("Contact", {"LastName": "before"})
    (before,) = await take(stream, 1)
    # The server forgets the client and a change happens while nobody listens.
    org.emulator.cometd.expire_sessions()
    missed = await rest.create("Contact", {"LastName": "while-unknown"})
    after = await take(stream, 1)
    assert after[0].record_ids == [missed] and after[0].replay_id > before.replay_id
    tail = await rest.create("Contact", {"LastName": "after"})
    assert [m.record_ids for m in await take(stream, 1)] == [[tail]]
    assert await nothing_more(stream)
    counters = await org.admin.counters()
    assert counters["cometd_handshakes"] == 2  # the library's own re-handshake, not a reopen
    assert stream.opens == 1 and stream.reopens == 0


async def test_invalid_replay_id_raises_cursor_expired(org: Org, rest: SalesforceRest, stream_factory) -> None:
    await rest.create("Contact", {"LastName": "x"})
    await rest.create("Contact", {"LastName": "y"})
    first_id = (await org.admin.events())[0]["replay_id"]
    await org.admin.prune_events()  # both events leave the retention window
    stream = stream_factory(store=MemoryReplayStore({ALL_CHANGE_EVENTS: first_id}))
    with pytest.raises(CursorExpired) as exc:
        await asyncio.wait_for(stream.next(), WAIT_S)
    assert exc.value.code == "INVALID_REPLAY_ID"
    assert f"replayId {first_id} you provided was invalid" in str(exc.value)
    future = stream_factory(start=10_000)  # an id this org never issued
    with pytest.raises(CursorExpired):
        await asyncio.wait_for(future.next(), WAIT_S)


async def test_expired_replay_id_on_library_resubscribe_raises_cursor_expired(
    org: Org, rest: SalesforceRest, stream_factory
) -> None:
    stream = stream_factory()
    await stream.open()
    await rest.create("Contact", {"LastName": "seen"})
    await take(stream, 1)
    emu = org.emulator
    # Atomically: forget the client, change a record nobody receives, and let it leave retention.
    emu.cometd.expire_sessions()
    with emu.org.transaction(WriteContext(org.user_ids[USERS[0]], api=None)) as tx:
        emu.org.create(tx, "Contact", {"LastName": "lost"})
    emu.bus.prune(lambda ev: True)
    with pytest.raises(CursorExpired):
        await asyncio.wait_for(stream.next(), WAIT_S)


async def test_dropped_long_polls_are_recovered_without_reopening(
    org: Org, rest: SalesforceRest, stream_factory
) -> None:
    stream = stream_factory()
    await stream.open()
    await org.admin.faults(drop_long_polls=2)
    created = []
    for i in range(3):
        created.append(await rest.create("Task", {"Subject": f"t{i}"}))
        await asyncio.sleep(0.3)
    got = await take(stream, 3)
    assert [m.record_ids[0] for m in got] == created
    counters = await org.admin.counters()
    assert counters["long_polls_dropped"] == 2
    # The transport reconnected on its own: our _wait_connection_timeout fix held the line.
    assert counters["cometd_handshakes"] == 1 and stream.reopens == 0


async def test_expired_token_on_stream_is_renewed(org: Org, rest: SalesforceRest, stream_factory) -> None:
    stream = stream_factory()
    await stream.open()
    await org.admin.expire_tokens()
    cid = await rest.create("Contact", {"LastName": "after-expiry"})
    (msg,) = await take(stream, 1)
    assert msg.record_ids == [cid]


async def test_gap_and_overflow_events_carry_the_header_only(
    org: Org, rest: SalesforceRest, stream_factory
) -> None:
    owner = org.user_ids[USERS[0]]
    cid = await rest.create("Contact", {"LastName": "gappy"})
    since = (await rest.get("Contact", cid, ["SystemModstamp"]))["SystemModstamp"]
    stream = stream_factory((entity_channel("Contact"),))
    await stream.open()
    await org.admin.gap("Contact", cid, "GAP_UPDATE")
    await org.admin.overflow("Contact")
    gap, overflow = await take(stream, 2)
    assert gap.is_gap and gap.record_ids == [cid] and gap.payload == {}
    assert overflow.is_overflow and overflow.record_ids == [] and overflow.entity == "Contact"

    fresh = await reread(rest, "Contact", [cid, "003Dn0000000zzzIAA"], ["LastName"])
    assert fresh[cid] is not None and fresh[cid]["LastName"] == "gappy"
    assert fresh["003Dn0000000zzzIAA"] is None

    other = await rest.create("Contact", {"LastName": "other"})
    await rest.delete("Contact", other)
    rows = [r async for r in catch_up(rest, "Contact", since, [owner], ["LastName"])]
    assert [(r["Id"], r["IsDeleted"]) for r in rows] == [(cid, False), (other, True)]
    assert [r async for r in catch_up(rest, "Contact", since, [org.user_ids[USERS[1]]])] == []


async def test_batches_group_what_already_arrived(rest: SalesforceRest, stream_factory) -> None:
    stream = stream_factory()
    await stream.open()
    ids = [r.id for r in await rest.create_many("Task", [{"Subject": f"b{i}"} for i in range(5)])]
    seen: list[str] = []
    batches = 0
    async for batch in stream.batches(max_size=10):
        batches += 1
        seen.extend(m.record_ids[0] for m in batch)
        if len(seen) >= 5:
            break
    assert seen == ids and batches < 5
    # One collections call is one transaction: one key, increasing sequence numbers.


async def test_manual_commit_moves_the_store_only_when_told(rest: SalesforceRest, stream_factory) -> None:
    store = MemoryReplayStore()
    stream = stream_factory(store=store, auto_commit=False)
    await stream.open()
    await rest.create("Contact", {"LastName": "m"})
    (msg,) = await take(stream, 1)
    assert store.ids == {}
    await stream.commit(msg)
    assert store.ids == {ALL_CHANGE_EVENTS: msg.replay_id}


async def test_stream_shares_the_rest_token(org: Org, rest: SalesforceRest) -> None:
    await rest.create("Contact", {"LastName": "warm-up"})
    stream = CdcStream(rest.auth, connection_timeout_s=10.0)
    try:
        await stream.open()
        assert rest.auth.token_requests == 1  # the cached token served the handshake
        cid = await rest.create("Contact", {"LastName": "seen"})
        (msg,) = await take(stream, 1)
        assert msg.record_ids == [cid]
    finally:
        await stream.close()


async def test_close_ends_a_waiting_iterator(rest: SalesforceRest, stream_factory) -> None:
    stream = stream_factory()
    await stream.open()
    got: list[CdcMessage] = []

    async def consume() -> None:
        async for msg in stream.messages():
            got.append(msg)

    task = asyncio.create_task(consume())
    await rest.create("Contact", {"LastName": "one"})
    for _ in range(200):
        if got:
            break
        await asyncio.sleep(0.05)
    await stream.close()
    await asyncio.wait_for(task, WAIT_S)  # the iterator ended instead of reconnecting
    assert len(got) == 1 and stream.reopens == 0


async def test_unknown_channel_is_a_permanent_error(stream_factory) -> None:
    stream = stream_factory(("/data/NoSuchChangeEvent",))
    with pytest.raises(PermanentError) as exc:
        await stream.open()
    assert "does not exist" in str(exc.value) and stream.reopens == 0
