"""Batching by the emulators' counters: 1,000 Salesforce creates in at most 6 REST calls
(sObject Collections, 200 a call) and 100 Graph creates in at most 6 `$batch` calls (20 a
call), with no lookups in steady state. Embedded bus: the point is the API call count."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.core.bus.embedded import EmbeddedBus
from services.core.envelopes import Command, CommandContext, encode
from services.core.topics import tenant_key
from tests.integration.writer_support import ALICE, BOB, CONTACT, World, command, make_world


@pytest.fixture
async def world(tmp_path: Path, topic_prefix: str) -> AsyncIterator[World]:
    bus = EmbeddedBus(tmp_path / "bus.sqlite", poll_interval_s=0.02)
    await bus.start()
    try:
        async with make_world(bus, topic_prefix) as w:
            yield w
    finally:
        await bus.stop()


async def _send_at_once(w: World, cmds: list[Command]) -> None:
    """One transaction: the writer sees them all at once, as a backlog."""
    p = w.bus.producer(transactional_id=f"{w.prefix}test-producer")
    await p.start()
    try:
        async with p.transaction():
            for c in cmds:
                await p.send(w.topics.commands_for(c.target), encode(c), key=tenant_key(c.tenant_id))
    finally:
        await p.stop()


async def test_thousand_salesforce_creates_take_at_most_six_calls(world: World) -> None:
    w = world
    await w.start_writer()
    before = await w.sf_admin.counters()
    owners = [w.sf_ids[ALICE], w.sf_ids[BOB]]
    cmds = [command("contact", "salesforce", f"B-{n}", {**CONTACT, "family_name": f"F{n}"},
                    user=(ALICE, BOB)[n % 2], context=CommandContext(owner_id=owners[n % 2])) for n in range(1000)]
    await _send_at_once(w, cmds)
    rs = await w.results_for(1000)
    assert {r.status for r in rs} == {"applied"}
    after = await w.sf_admin.counters()
    assert after["rest_calls"] - before["rest_calls"] <= 6
    records = await w.sf_records("Contact")
    assert len(records) == 1000 and len({r["exsf_Link_Id__c"] for r in records}) == 1000
    assert Counter(r["OwnerId"] for r in records) == {owners[0]: 500, owners[1]: 500}


async def test_hundred_graph_creates_take_at_most_six_batch_calls(world: World) -> None:
    w = world
    await w.start_writer()
    await w.send(command("contact", "exchange", "warm-up", CONTACT))  # prepares the mailbox
    await w.results_for(1)
    before = await w.graph_admin.counters(ALICE)
    # Slow responses make the five $batch calls overlap: Outlook's limit of 4 concurrent
    # requests per mailbox (enforced by the emulator with 429s) must never be hit.
    await w.graph_admin.faults(delay_ms=20)
    cmds = [command("contact", "exchange", f"G-{n}", {**CONTACT, "given_name": f"N{n}"}) for n in range(100)]
    await _send_at_once(w, cmds)
    rs = await w.results_for(101)
    assert {r.status for r in rs} == {"applied"}, [r.error for r in rs if r.error]
    after = await w.graph_admin.counters(ALICE)
    assert after["batch_calls"] - before["batch_calls"] <= 6
    assert after["throttled"] == 0
    # Steady state: no lookups, every request went into a $batch.
    assert after["by_method"].get("GET", 0) == before["by_method"].get("GET", 0)
    assert len(w.graph_items(ALICE, "contact")) == 101
