"""The writer makes creates idempotent: a command delivered many times, or re-read by a
fresh writer after a transaction that never committed, leaves one item on each side."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from services.connectors.exchange.models import link_id_of
from services.core.bus.base import Bus, Producer
from services.core.envelopes import CommandContext
from tests.integration.writer_support import (
    ALICE,
    CONTACT,
    EVENT,
    TASK,
    World,
    command,
    make_world,
)
from tests.support.waiting import eventually


@pytest.fixture
async def world(bus: Bus, topic_prefix: str) -> AsyncIterator[World]:
    async with make_world(bus, topic_prefix) as w:
        yield w


def _graph_with_link(w: World, kind: str, link_id: str) -> list[Any]:
    return [it for it in w.graph_items(ALICE, kind) if link_id_of(it.render() | {
        "singleValueExtendedProperties": [{"id": v[0], "value": v[1]} for v in it.ext.values()]}) == link_id]


async def test_same_create_five_times_leaves_one_item_per_side(world: World) -> None:
    w = world
    cmds = [
        command("contact", "exchange", "L-contact", CONTACT),
        command("event", "exchange", "L-event", EVENT),
        command("task", "exchange", "L-task", TASK),
        command("contact", "salesforce", "L-sf", CONTACT, context=CommandContext(owner_id=w.sf_ids[ALICE])),
    ]
    await w.start_writer()
    # Twice in one go (one batch: the copy is answered from the first), then three more
    # deliveries one after another.
    await w.send(*cmds, *cmds)
    await w.results_for(8)
    for n in range(3):
        await w.send(*cmds)
        await w.results_for(8 + 4 * (n + 1))
    for c in cmds:
        rs = w.result_of(c.command_id)
        assert len(rs) == 5
        assert {r.status for r in rs} == {"applied"}, [r.error for r in rs]
        assert len({r.target_id for r in rs}) == 1 and rs[0].target_id
    assert len(_graph_with_link(w, "contact", "L-contact")) == 1
    assert len(_graph_with_link(w, "event", "L-event")) == 1
    assert len(_graph_with_link(w, "task", "L-task")) == 1
    sf = [r for r in await w.sf_records("Contact") if r.get("exsf_Link_Id__c") == "L-sf"]
    assert len(sf) == 1 and sf[0]["OwnerId"] == w.sf_ids[ALICE] and sf[0]["LastName"] == "Lee"
    # Graph results carry the written item; placement as designed.
    contact_result = w.result_of(cmds[0].command_id)[0]
    assert contact_result.record is not None and contact_result.record["email"] == "ann@example.test"
    assert contact_result.new_version
    contact = _graph_with_link(w, "contact", "L-contact")[0]
    assert w.graph_container(ALICE, contact.container).data.get("displayName") == "Salesforce Contacts"
    task = _graph_with_link(w, "task", "L-task")[0]
    assert w.graph_container(ALICE, task.container).data.get("displayName") == "Salesforce Tasks"
    event = _graph_with_link(w, "event", "L-event")[0]
    assert "Salesforce" in event.data.get("categories", []) and not event.data.get("attendees")


class _FailingCommits(Producer):
    """A transactional producer whose commits always fail: the writer's API calls happen,
    its results never become visible - a writer dying between the two."""

    def __init__(self, inner: Producer) -> None:
        self.inner = inner

    async def start(self) -> None:
        await self.inner.start()

    async def stop(self) -> None:
        await self.inner.stop()

    async def send(self, *a: Any, **k: Any) -> None:
        await self.inner.send(*a, **k)

    async def send_and_wait(self, *a: Any, **k: Any) -> Any:
        return await self.inner.send_and_wait(*a, **k)

    async def begin_transaction(self) -> None:
        await self.inner.begin_transaction()

    async def commit_transaction(self) -> None:
        self.failures = getattr(self, "failures", 0) + 1
        await self.inner.abort_transaction()
        raise RuntimeError("simulated crash before the commit")

    async def abort_transaction(self) -> None:
        await self.inner.abort_transaction()

    async def send_offsets_to_transaction(self, offsets: Any, group_id: str) -> None:
        await self.inner.send_offsets_to_transaction(offsets, group_id)


class _CrashingBus(Bus):
    def __init__(self, inner: Bus) -> None:
        self.inner = inner
        self.name = inner.name
        self.producers: list[_FailingCommits] = []

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def create_topics(self, specs: Any) -> list[str]:
        return await self.inner.create_topics(specs)

    async def partitions_for(self, topic: str) -> int:
        return await self.inner.partitions_for(topic)

    def producer(self, *, transactional_id: str | None = None) -> Producer:
        p = self.inner.producer(transactional_id=transactional_id)
        if transactional_id is None:
            return p
        fp = _FailingCommits(p)
        self.producers.append(fp)
        return fp

    def consumer(self, topics: Any, **kwargs: Any) -> Any:
        return self.inner.consumer(topics, **kwargs)

    async def end_offsets(self, tps: Any) -> Any:
        return await self.inner.end_offsets(tps)

    async def offsets_for_times(self, topic: str, timestamp_ms: int) -> Any:
        return await self.inner.offsets_for_times(topic, timestamp_ms)


async def test_writer_dying_before_its_commit_leaves_one_item(world: World) -> None:
    w = world
    cmds = [
        command("contact", "exchange", "K-contact", CONTACT),
        command("event", "exchange", "K-event", EVENT),
        command("task", "exchange", "K-task", TASK),
        command("contact", "salesforce", "K-sf", CONTACT, context=CommandContext(owner_id=w.sf_ids[ALICE])),
    ]
    crashing = _CrashingBus(w.bus)
    doomed = await w.start_writer(bus=crashing)
    await w.send(*cmds)

    async def written() -> bool:
        return (len(_graph_with_link(w, "contact", "K-contact")) == 1
                and len(_graph_with_link(w, "event", "K-event")) == 1
                and len(_graph_with_link(w, "task", "K-task")) == 1
                and any(r.get("exsf_Link_Id__c") == "K-sf" for r in await w.sf_records("Contact")))

    await eventually(written, "the doomed writer's API writes")
    await eventually(lambda: _failed_commits(crashing), "a failed commit")
    await w.stop_writer(doomed)
    await w.pull()
    assert not w.results, "nothing was committed"

    # A fresh writer (no memory of the doomed one) re-reads the same commands: they were
    # in the log when it took the partitions, so it looks them up instead of creating.
    before = await w.graph_admin.counters(ALICE)
    await w.start_writer()
    await w.results_for(4)
    after = await w.graph_admin.counters(ALICE)
    assert after["batch_calls"] == before["batch_calls"], "found by link id: no create sent"
    # 4 GETs to prepare the mailbox, then one lookup per create.
    assert after["by_method"].get("GET", 0) >= before["by_method"].get("GET", 0) + 4 + 3
    assert {r.status for r in w.results} == {"applied"}, [r.error for r in w.results]
    assert len(_graph_with_link(w, "contact", "K-contact")) == 1
    assert len(_graph_with_link(w, "event", "K-event")) == 1
    assert len(_graph_with_link(w, "task", "K-task")) == 1
    assert len([r for r in await w.sf_records("Contact") if r.get("exsf_Link_Id__c") == "K-sf"]) == 1
    by_link = {r.link_id: r.target_id for r in w.results}
    assert by_link["K-contact"] == _graph_with_link(w, "contact", "K-contact")[0].id


async def _failed_commits(bus: _CrashingBus) -> bool:
    return any(getattr(p, "failures", 0) > 0 for p in bus.producers)
