"""Tenant isolation: a command naming a user outside its tenant (or an unknown tenant, an
item another tenant's link holds, or a malformed command) is dead-lettered and reaches no
API; each tenant's writes use its own credentials; a tenant added while the writer runs
is picked up on first use."""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson
import pytest

from services.core.bus.base import Bus
from services.core.envelopes import CommandContext
from services.core.tenant_registry import TenantRegistry
from services.core.tenants import Tenant, User
from services.core.topics import shard_of
from services.reconciler.core.state import LinkRecord, SideState
from services.writer.service import WriterService
from tests.integration.writer_support import ALICE, CAROL, CONTACT, PARTITIONS, World, command, make_world
from tests.support.waiting import eventually


@pytest.fixture
async def world(bus: Bus, topic_prefix: str) -> AsyncIterator[World]:
    async with make_world(bus, topic_prefix) as w:
        yield w


async def test_foreign_or_unknown_users_are_refused_without_any_request(world: World) -> None:
    w = world
    await w.start_writer()
    graph_before = await w.graph_admin.counters()
    sf_before = await w.sf_admin.counters()
    foreign = command("contact", "exchange", "X-1", CONTACT, user=CAROL)  # carol belongs to fabrikam
    foreign_sf = command("contact", "salesforce", "X-2", CONTACT, user=CAROL,
                         context=CommandContext(owner_id=w.sf_ids[CAROL]))
    stranger = command("task", "exchange", "X-3", {"subject": "x"}, user="mallory@evil.test")
    nowhere = command("contact", "salesforce", "X-4", CONTACT, tenant_id="no-such-tenant")
    await w.send(foreign, foreign_sf, stranger, nowhere)
    await w.send_raw("exchange", b"{not json")
    await w.send_raw("salesforce", b'{"tenant_id": "contoso", "user": "a@b"}')
    rs = await w.results_for(4)

    async def dead() -> bool:
        await w.pull()
        return len(w.dead) >= 6

    await eventually(dead, "six dead letters")
    assert {r.command_id: r.status for r in rs} == {c.command_id: "failed" for c in (foreign, foreign_sf, stranger,
                                                                                       nowhere)}
    assert "not enrolled" in (w.result_of(foreign.command_id)[0].error or "")
    assert "unknown tenant" in (w.result_of(nowhere.command_id)[0].error or "")
    assert all(d["service"] == "writer" for d in w.dead)
    assert sum("malformed" in d["error"] for d in w.dead) == 2
    # Nothing of these commands reached either API (not even a token request).
    assert await w.graph_admin.counters() == graph_before
    sf_after = await w.sf_admin.counters()
    assert sf_after["rest_calls"] == sf_before["rest_calls"]
    assert sf_after["token_requests_total"] == sf_before["token_requests_total"]


async def test_each_tenant_writes_with_its_own_credentials_and_new_tenants_are_loaded(world: World) -> None:
    w = world
    writer = await w.start_writer()
    ours = command("contact", "salesforce", "I-1", CONTACT, context=CommandContext(owner_id=w.sf_ids[ALICE]))
    # No owner_id in the context: the owner is the enrolled user of the tenant config.
    theirs = command("contact", "salesforce", "I-2", CONTACT, user=CAROL, tenant_id="fabrikam")
    await w.send(ours, theirs)
    rs = await w.results_for(2)
    assert {r.status for r in rs} == {"applied"}, [r.error for r in rs]
    by_link = {r["exsf_Link_Id__c"]: r for r in await w.sf_records("Contact")}
    assert by_link["I-1"]["CreatedById"] == w.sf_ids[ALICE]
    assert by_link["I-2"]["CreatedById"] == w.sf_ids[CAROL]
    assert by_link["I-2"]["OwnerId"] == w.sf_ids[CAROL]
    graph_carol = await w.graph_admin.counters(CAROL)

    # A tenant enrolled after the writer started: the first command naming it reloads.
    dave = "dave@newco.test"
    await w.graph_admin.add_mailbox(dave)
    newco = Tenant("newco", (User(dave, "005000000000009AAA"),), graph=w.contoso.graph,
                   salesforce=w.contoso.salesforce)
    await TenantRegistry(w.bus, w.topics.tenants).put(newco)
    reloads = writer.directory.reloads
    new = command("contact", "exchange", "I-3", CONTACT, user=dave, tenant_id="newco")
    await w.send(new)
    rs = await w.results_for(3)
    assert rs[-1].status == "applied", rs[-1].error
    assert writer.directory.reloads > reloads
    assert len(w.graph_items(dave, "contact")) == 1
    assert await w.graph_admin.counters(CAROL) == graph_carol


async def _publish_link(w: World, tenant_id: str, link_id: str, exchange_id: str | None = None,
                        salesforce_id: str | None = None) -> None:
    """A link record on exsf.state, as the reconciler writes it."""
    rec = LinkRecord(tenant_id=tenant_id, entity="contact", link_id=link_id, user=CAROL, status="linked",
                     exchange=SideState(id=exchange_id), salesforce=SideState(id=salesforce_id))
    await w.producer.send_and_wait(w.topics.state, orjson.dumps(rec.to_dict()), key=rec.key.encode(),
                                   partition=shard_of(tenant_id, PARTITIONS))


async def test_a_command_naming_another_tenants_item_is_refused_without_any_request(world: World) -> None:
    w = world
    # fabrikam's items, made through the writer, and linked by fabrikam's reconciler.
    sf_cmd = command("contact", "salesforce", "F-1", CONTACT, user=CAROL, tenant_id="fabrikam")
    ex_cmd = command("contact", "exchange", "F-2", CONTACT, user=CAROL, tenant_id="fabrikam")
    writer = await w.start_writer()
    await w.send(sf_cmd, ex_cmd)
    made = {r.link_id: r for r in await w.results_for(2)}
    assert {r.status for r in made.values()} == {"applied"}, [r.error for r in made.values()]
    sf_id, ex_id = made["F-1"].target_id, made["F-2"].target_id
    assert sf_id and ex_id
    await _publish_link(w, "fabrikam", "F-1", salesforce_id=sf_id)
    # A restarted writer knows the links that were there before it started ...
    await w.stop_writer(writer)
    writer = await w.start_writer()
    assert writer.owners.owner("salesforce", sf_id) == "fabrikam"
    # ... and learns those written while it runs.
    await _publish_link(w, "fabrikam", "F-2", exchange_id=ex_id)
    await eventually(lambda: _owned(writer, "exchange", ex_id), "the new link is known")

    graph_before = await w.graph_admin.counters()
    sf_before = await w.sf_admin.counters()
    steal_sf = command("contact", "salesforce", "C-1", {"job_title": "x"}, action="update", target_id=sf_id)
    steal_ex = command("contact", "exchange", "C-2", {}, action="delete", target_id=ex_id)
    steal_mail = command("email", "salesforce", "C-3", {"subject": "hi"},
                         context=CommandContext(message_id=ex_id, owner_id=w.sf_ids[ALICE]))
    await w.send(steal_sf, steal_ex, steal_mail)
    rs = {r.command_id: r for r in await w.results_for(5)}
    for cmd in (steal_sf, steal_ex, steal_mail):
        assert rs[cmd.command_id].status == "failed"
        assert "belongs to another tenant's link" in (rs[cmd.command_id].error or "")

    async def dead() -> bool:
        await w.pull()
        return sum("another tenant" in d["error"] for d in w.dead) >= 3

    await eventually(dead, "three dead letters")
    assert await w.graph_admin.counters() == graph_before
    assert (await w.sf_admin.counters())["rest_calls"] == sf_before["rest_calls"]
    # fabrikam's items are untouched; fabrikam itself may still write them.
    assert len(w.graph_items(CAROL, "contact")) == 1
    own = command("contact", "salesforce", "F-1", {"job_title": "CEO"}, action="update", user=CAROL,
                  tenant_id="fabrikam", target_id=sf_id)
    await w.send(own)
    rs = {r.command_id: r for r in await w.results_for(6)}
    assert rs[own.command_id].status == "applied", rs[own.command_id].error


async def _owned(writer: WriterService, side: str, item_id: str) -> bool:
    return writer.owners.owner(side, item_id) is not None
