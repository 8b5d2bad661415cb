"""A command the target refuses for good is `failed`, copied to exsf.deadletter with the
reason, and does not hold back the other commands of its batch."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import pytest

from services.core.bus.base import Bus
from services.core.envelopes import CommandContext, decode_command
from tests.integration.writer_support import ALICE, CONTACT, World, command, make_world
from tests.support.waiting import eventually


@pytest.fixture
async def world(bus: Bus, topic_prefix: str) -> AsyncIterator[World]:
    async with make_world(bus, topic_prefix) as w:
        yield w


async def test_refused_row_is_failed_and_deadlettered_alone(world: World) -> None:
    w = world
    await w.start_writer()
    owner = CommandContext(owner_id=w.sf_ids[ALICE])
    good1 = command("contact", "salesforce", "F-1", CONTACT, context=owner)
    bad = command("contact", "salesforce", "F-2", {**CONTACT, "email": "not-an-email"}, context=owner)
    good2 = command("contact", "salesforce", "F-3", {**CONTACT, "family_name": "Other"}, context=owner)
    await w.send(good1, bad, good2)
    rs = await w.results_for(3)
    status = {r.command_id: r.status for r in rs}
    assert status == {good1.command_id: "applied", bad.command_id: "failed", good2.command_id: "applied"}
    assert "INVALID_EMAIL_ADDRESS" in (w.result_of(bad.command_id)[0].error or "")

    async def dead() -> bool:
        await w.pull()
        return len(w.dead) >= 1

    await eventually(dead, "the dead letter")
    (letter,) = w.dead
    assert letter["service"] == "writer" and letter["tenant_id"] == "contoso"
    assert "INVALID_EMAIL_ADDRESS" in letter["error"]
    # The dead letter holds the original command, ready for replay.
    assert decode_command(base64.b64decode(letter["value_b64"])) == bad
    links = {r["exsf_Link_Id__c"] for r in await w.sf_records("Contact")}
    assert links == {"F-1", "F-3"}
