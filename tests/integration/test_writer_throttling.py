"""Throttling slows the writer down without losing or duplicating anything: a 429 storm and
a 503 burst on Graph (Retry-After respected, per the emulator's throttle log) and
REQUEST_LIMIT_EXCEEDED on Salesforce (the partition pauses and resumes)."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator

import pytest

from services.connectors.exchange.models import link_id_of
from services.core.bus.base import Bus
from services.core.envelopes import CommandContext
from tests.integration.writer_support import ALICE, CONTACT, EVENT, World, command, make_world


@pytest.fixture
async def world(bus: Bus, topic_prefix: str) -> AsyncIterator[World]:
    async with make_world(bus, topic_prefix) as w:
        yield w


def _links(w: World, kind: str) -> Counter[str]:
    out: Counter[str] = Counter()
    for it in w.graph_items(ALICE, kind):
        props = [{"id": pid, "value": v} for pid, v in it.ext.values()]
        link = link_id_of({"singleValueExtendedProperties": props})
        if link:
            out[link] += 1
    return out


async def _warm_up(w: World) -> None:
    """Prepare the mailbox (folders, list) before faults start."""
    await w.send(command("contact", "exchange", "warm-up", CONTACT))
    await w.results_for(1)


def _assert_retry_after_respected(log: list[dict[str, object]]) -> None:
    assert log, "the emulator throttled nothing"
    for rec in log:
        ra, waited = rec["retry_after"], rec["waited_s"]
        if ra is None:
            continue
        assert waited is not None, f"throttled request never retried: {rec}"
        assert float(waited) >= float(ra) * 0.95, f"retried after {waited}s, Retry-After was {ra}s: {rec}"  # type: ignore[arg-type]


async def test_graph_429_storm_and_503_burst(world: World) -> None:
    w = world
    writer = await w.start_writer()
    await _warm_up(w)
    # More 429s than the client's own retries absorb: the partition must pause.
    await w.graph_admin.faults(throttle={"count": 25, "retry_after": 1, "mailbox": ALICE})
    contacts = [command("contact", "exchange", f"T-c{n}", {**CONTACT, "given_name": f"N{n}"}) for n in range(10)]
    await w.send(*contacts)
    await w.results_for(11)
    await w.graph_admin.faults(unavailable={"count": 6, "retry_after": 1, "mailbox": ALICE})
    events = [command("event", "exchange", f"T-e{n}", {**EVENT, "subject": f"S{n}"}) for n in range(5)]
    await w.send(*events)
    rs = await w.results_for(16)
    assert {r.status for r in rs} == {"applied"}, [r.error for r in rs if r.status != "applied"]
    assert len({r.command_id for r in rs}) == 16
    c_links, e_links = _links(w, "contact"), _links(w, "event")
    assert all(c_links[c.link_id] == 1 for c in contacts), c_links
    assert all(e_links[e.link_id] == 1 for e in events), e_links
    counters = await w.graph_admin.counters(ALICE)
    assert counters["throttled"] >= 25 and counters["unavailable"] >= 6
    _assert_retry_after_respected(counters["throttle_log"])
    # The client's own retries could not absorb either fault: the partition was paused.
    assert writer.handler.backoffs >= 2


async def test_salesforce_request_limit_exceeded_backs_off(world: World) -> None:
    w = world
    writer = await w.start_writer()
    await w.sf_admin.faults(request_limit=3)
    owner = CommandContext(owner_id=w.sf_ids[ALICE])
    cmds = [command("contact", "salesforce", f"R-{n}", {**CONTACT, "family_name": f"F{n}"}, context=owner)
            for n in range(20)]
    await w.send(*cmds)
    rs = await w.results_for(20)
    assert {r.status for r in rs} == {"applied"}, [r.error for r in rs]
    links = Counter(r.get("exsf_Link_Id__c") for r in await w.sf_records("Contact"))
    assert all(links[c.link_id] == 1 for c in cmds)
    counters = await w.sf_admin.counters()
    # 3 refused calls, then the one upsert that went through.
    assert counters["collections_calls"] == 4
    assert writer.handler.backoffs == 3
