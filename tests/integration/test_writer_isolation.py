"""Tenant isolation: a command naming a user outside its tenant (or an unknown tenant, or a
malformed command) is dead-lettered and reaches no API; each tenant's writes use its own
credentials; a tenant added while the writer runs is picked up on first use."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from services.core.bus.base import Bus
from services.core.tenant_registry import TenantRegistry
from services.core.tenants import Tenant, User
from tests.integration.writer_support import ALICE, CAROL, CONTACT, World, command, make_world
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
                         context={"owner_id": w.sf_ids[CAROL]})
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
    ours = command("contact", "salesforce", "I-1", CONTACT, context={"owner_id": w.sf_ids[ALICE]})
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
