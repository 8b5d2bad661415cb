"""Throttling, outages, token expiry and $batch, client against emulator."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from services.connectors.exchange.client import ExchangeClient
from services.connectors.exchange.models import LINK_PROPERTY_ID, BatchRequest, PreparedMailbox, link_id_of
from services.core.errors import AuthError, PermanentError, TransientError
from services.core.secrets import Secret

MAILBOX = "alice@contoso.test"
Emu = Any


async def test_429_retry_after_is_honoured(emu: Emu, client: ExchangeClient, prepared: PreparedMailbox) -> None:
    c = await client.create_contact(MAILBOX, prepared.contact_folder_id, {"givenName": "T"}, "l-1")
    await emu.admin.faults(throttle={"count": 2, "retry_after": 1, "mailbox": MAILBOX})
    got = await client.get_contact(MAILBOX, c["id"])
    assert got["id"] == c["id"]
    counters = await emu.admin.counters(MAILBOX)
    assert counters["throttled"] == 2
    log = counters["throttle_log"]
    assert len(log) == 2
    for rec in log:
        assert rec["status"] == 429 and rec["retry_after"] == 1
        assert rec["waited_s"] is not None and rec["waited_s"] >= rec["retry_after"]


async def test_429_after_retries_exhausted_is_transient_with_retry_after(
    emu: Emu, client_factory: Callable[..., ExchangeClient]
) -> None:
    client = client_factory(max_retries=1)
    prepared = await client.ensure_mailbox(MAILBOX)
    await emu.admin.faults(throttle={"count": 5, "retry_after": 1})
    with pytest.raises(TransientError) as exc:
        await client.get_task(MAILBOX, prepared.todo_list_id, "whatever")
    assert exc.value.status == 429 and exc.value.retry_after == 1
    counters = await emu.admin.counters(MAILBOX)
    assert counters["throttled"] == 2  # the first try and kiota's one retry
    await emu.admin.faults(throttle={"count": 0})


async def test_503_burst_is_recovered(emu: Emu, client: ExchangeClient, prepared: PreparedMailbox) -> None:
    await emu.admin.faults(unavailable={"count": 2, "retry_after": 1})
    created = await client.create_task(MAILBOX, prepared.todo_list_id, {"title": "after outage"}, "t-1")
    assert created["title"] == "after outage"
    counters = await emu.admin.counters(MAILBOX)
    assert counters["unavailable"] == 2
    assert all(r["waited_s"] >= 1 for r in counters["throttle_log"])
    tasks = emu.state.store.mailbox(MAILBOX).items_in(prepared.todo_list_id)
    assert len(tasks) == 1  # a 503 before processing must not leave a duplicate


async def test_concurrency_limit_throttles_and_client_recovers(
    emu: Emu, client: ExchangeClient, prepared: PreparedMailbox
) -> None:
    c = await client.create_contact(MAILBOX, prepared.contact_folder_id, {"givenName": "Busy"}, "l-b")
    await emu.admin.faults(delay_ms=800)
    results = await asyncio.gather(*(client.get_contact(MAILBOX, c["id"]) for _ in range(6)))
    assert {r["id"] for r in results} == {c["id"]}
    counters = await emu.admin.counters(MAILBOX)
    assert counters["throttled"] >= 2  # 6 at once against a limit of 4
    assert all(r["waited_s"] >= 1 for r in counters["throttle_log"]), counters["throttle_log"]


async def test_expired_token_is_refetched(emu: Emu, client: ExchangeClient, prepared: PreparedMailbox) -> None:
    before = client.credential.fetch_count
    assert before >= 1
    await emu.admin.expire_tokens()
    c = await client.create_contact(MAILBOX, prepared.contact_folder_id, {"givenName": "Again"}, "l-2")
    assert c["givenName"] == "Again"
    assert client.credential.fetch_count == before + 1


async def test_wrong_secret_is_auth_error(emu: Emu) -> None:
    client = ExchangeClient(emu.endpoint(), Secret("wrong"))
    try:
        with pytest.raises(AuthError) as exc:
            await client.ensure_mailbox(MAILBOX)
        assert "wrong" not in str(exc.value)
    finally:
        await client.close()


async def test_batch_of_20_creates_and_21_rejected(
    emu: Emu, client: ExchangeClient, prepared: PreparedMailbox
) -> None:
    reqs = [client.contact_create_request(f"r{n}", MAILBOX, prepared.contact_folder_id, {"givenName": f"B{n}"},
                                          f"lb-{n}") for n in range(20)]
    responses = await client.batch(reqs)
    assert [r.id for r in responses] == [r.id for r in reqs]
    assert all(r.status == 201 for r in responses)
    stored = emu.state.store.mailbox(MAILBOX).items_in(prepared.contact_folder_id)
    assert len(stored) == 20
    assert {it.ext_value(LINK_PROPERTY_ID) for it in stored} == {f"lb-{n}" for n in range(20)}
    found = await client.find_by_link_id(MAILBOX, "contact", "lb-7", container_id=prepared.contact_folder_id)
    assert found is not None and found["id"] == responses[7].body["id"] and link_id_of(found) == "lb-7"
    assert (await emu.admin.counters(MAILBOX))["batch_calls"] == 1

    too_many = [*reqs, client.contact_create_request("r20", MAILBOX, prepared.contact_folder_id, {}, "x")]
    with pytest.raises(PermanentError):
        await client.batch(too_many)
    assert len(emu.state.store.mailbox(MAILBOX).items_in(prepared.contact_folder_id)) == 20


async def test_batch_mixed_results_dependencies_and_throttled_subrequest(
    emu: Emu, client: ExchangeClient, prepared: PreparedMailbox
) -> None:
    await emu.admin.faults(throttle={"count": 1, "retry_after": 1, "mailbox": MAILBOX})
    reqs = [
        client.event_create_request("a", MAILBOX, {"subject": "A", "start": {"dateTime": "2026-02-02T10:00:00",
                                                                               "timeZone": "UTC"},
                                                   "end": {"dateTime": "2026-02-02T11:00:00", "timeZone": "UTC"}},
                                    "ea"),
        client.task_create_request("b", MAILBOX, prepared.todo_list_id, {"title": "B"}, "tb"),
        BatchRequest("c", "GET", f"/users/{MAILBOX}/contacts/does-not-exist"),
        BatchRequest("d", "GET", f"/users/{MAILBOX}/todo/lists/{prepared.todo_list_id}/tasks", depends_on=["c"]),
    ]
    responses = {r.id: r for r in await client.batch(reqs)}
    assert responses["a"].status == 201  # throttled first, re-sent after Retry-After
    assert responses["a"].body["transactionId"] == "ea"
    assert responses["b"].status == 201
    assert responses["c"].status == 404
    assert responses["d"].status == 424
    err = client.batch_error(responses["c"])
    assert err is not None and err.status == 404
    assert client.batch_error(responses["a"]) is None
    counters = await emu.admin.counters(MAILBOX)
    assert counters["batch_calls"] == 2 and counters["throttled"] == 1
    events = [it for it in emu.state.store.mailbox(MAILBOX).items.values() if it.kind == "event"]
    assert len(events) == 1
