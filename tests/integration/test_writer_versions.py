"""Conditional writes: a stale expected version is a `conflict` (with the fresh record), a
missing item is `gone`, and commands for one link in one batch reach the target in order."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from services.connectors.exchange.mapping import version_of
from services.core.bus.base import Bus
from services.core.envelopes import CommandContext
from tests.integration.writer_support import ALICE, CONTACT, World, command, make_world


@pytest.fixture
async def world(bus: Bus, topic_prefix: str) -> AsyncIterator[World]:
    async with make_world(bus, topic_prefix) as w:
        yield w


async def test_graph_conflict_gone_and_order(world: World) -> None:
    w = world
    await w.start_writer()
    create = command("contact", "exchange", "V-1", CONTACT)
    await w.send(create)
    (created,) = await w.results_for(1)
    assert created.status == "applied" and created.target_id and created.new_version
    cid, v1 = created.target_id, created.new_version
    record = dict(CONTACT)

    # Someone edits the contact in Outlook: our version is stale now.
    item = await w.graph_admin.update_item(ALICE, cid, {"jobTitle": "CEO"})
    stale = command("contact", "exchange", "V-1", {"job_title": "CFO"}, action="update", target_id=cid,
                    expected_version=v1, context=CommandContext(record={**record, "job_title": "CFO"}))
    await w.send(stale)
    conflict = (await w.results_for(2))[-1]
    assert conflict.status == "conflict"
    assert conflict.record is not None and conflict.record["job_title"] == "CEO"
    assert conflict.new_version == version_of(item)
    assert w.graph.store.mailbox(ALICE).items[cid].data["jobTitle"] == "CEO"

    # With the fresh version the update applies; then an update and a delete of the same
    # link in one batch are applied in that order.
    ok = command("contact", "exchange", "V-1", {"job_title": "CFO"}, action="update", target_id=cid,
                 expected_version=conflict.new_version,
                 context=CommandContext(record={**record, "job_title": "CFO"}))
    await w.send(ok)
    applied = (await w.results_for(3))[-1]
    assert applied.status == "applied" and applied.record is not None and applied.record["job_title"] == "CFO"
    assert applied.new_version and applied.new_version != conflict.new_version
    upd = command("contact", "exchange", "V-1", {"department": "Sales"}, action="update", target_id=cid,
                  expected_version=applied.new_version,
                  context=CommandContext(record={**record, "department": "Sales"}))
    dele = command("contact", "exchange", "V-1", {}, action="delete", target_id=cid)
    await w.send(upd, dele)
    rs = await w.results_for(5)
    assert [(r.command_id, r.status) for r in rs[3:]] == [(upd.command_id, "applied"), (dele.command_id, "applied")]
    assert cid not in w.graph.store.mailbox(ALICE).items

    # Now it is gone: another delete and an update say so.
    again = command("contact", "exchange", "V-1", {"x": 1}, action="delete", target_id=cid)
    late = command("contact", "exchange", "V-2", {"job_title": "CTO"}, action="update", target_id=cid,
                   context=CommandContext(record=record))
    await w.send(again, late)
    rs = await w.results_for(7)
    assert {r.command_id: r.status for r in rs[5:]} == {again.command_id: "gone", late.command_id: "gone"}


async def test_salesforce_conflict_and_gone(world: World) -> None:
    w = world
    await w.start_writer()
    cid = await w.sf_admin.create("Contact", {"FirstName": "Ann", "LastName": "Lee", "Title": "CTO"}, as_user=ALICE)
    current = await w.sf_admin.record("Contact", cid)
    record = {"given_name": "Ann", "family_name": "Lee", "job_title": "CTO"}

    stale = command("contact", "salesforce", "S-1", {"job_title": "CFO"}, action="update", target_id=cid,
                    context=CommandContext(record={**record, "job_title": "CFO"},
                                           expected_modified_at="2020-01-01T00:00:00Z"))
    fresh = command("contact", "salesforce", "S-2", {"job_title": "COO"}, action="update", target_id=cid,
                    context=CommandContext(record={**record, "job_title": "COO"},
                                           expected_modified_at=current["LastModifiedDate"]))
    await w.send(stale)
    conflict = (await w.results_for(1))[-1]
    assert conflict.status == "conflict"
    assert conflict.record is not None and conflict.record["job_title"] == "CTO" and conflict.new_version
    await w.send(fresh)
    ok = (await w.results_for(2))[-1]
    assert ok.status == "applied", ok.error
    assert (await w.sf_admin.record("Contact", cid))["Title"] == "COO"

    # Unconditional updates go through collections; a deleted record is gone either way.
    plain = command("contact", "salesforce", "S-3", {"department": "Sales"}, action="update", target_id=cid,
                    context=CommandContext(record=record))
    await w.send(plain)
    assert (await w.results_for(3))[-1].status == "applied"
    await w.sf_admin.delete("Contact", cid)
    dele = command("contact", "salesforce", "S-1", {}, action="delete", target_id=cid)
    upd = command("contact", "salesforce", "S-3", {"department": "Ops"}, action="update", target_id=cid,
                  context=CommandContext(record=record))
    cond = command("contact", "salesforce", "S-2", {"department": "HR"}, action="update", target_id=cid,
                   context=CommandContext(record=record, expected_modified_at=current["LastModifiedDate"]))
    await w.send(dele, upd, cond)
    rs = await w.results_for(6)
    assert {r.command_id: r.status for r in rs[3:]} == {dele.command_id: "gone", upd.command_id: "gone",
                                                         cond.command_id: "gone"}, [r.error for r in rs[3:]]


async def test_graph_list_properties_keep_their_other_entries(world: World) -> None:
    w = world
    await w.start_writer()
    await w.send(command("contact", "exchange", "M-1", CONTACT))
    (created,) = await w.results_for(1)
    cid = created.target_id
    assert cid
    item = await w.graph_admin.update_item(ALICE, cid, {"emailAddresses": [
        {"name": "Ann", "address": "ann@example.test"}, {"name": "Ann (home)", "address": "ann@home.test"}]})
    record = {**CONTACT, "email": "ann@new.test"}
    upd = command("contact", "exchange", "M-1", {"email": "ann@new.test"}, action="update", target_id=cid,
                  expected_version=version_of(item), context=CommandContext(record=record))
    await w.send(upd)
    r = (await w.results_for(2))[-1]
    assert r.status == "applied", r.error
    addresses = [e["address"] for e in w.graph.store.mailbox(ALICE).items[cid].data["emailAddresses"]]
    assert addresses == ["ann@new.test", "ann@home.test"]

    # A stale version is seen on the read already: conflict, and no PATCH is sent.
    patches = (await w.graph_admin.counters(ALICE))["by_method"].get("PATCH", 0)
    stale = command("contact", "exchange", "M-1", {"email": "ann@newer.test"}, action="update", target_id=cid,
                    expected_version=version_of(item),
                    context=CommandContext(record={**CONTACT, "email": "ann@newer.test"}))
    await w.send(stale)
    c = (await w.results_for(3))[-1]
    assert c.status == "conflict" and c.record is not None and c.record["email"] == "ann@new.test"
    assert c.new_version == r.new_version
    assert (await w.graph_admin.counters(ALICE))["by_method"].get("PATCH", 0) == patches
