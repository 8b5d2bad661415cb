"""Every entity and action the writer supports, on both targets, end to end: create, update
(with the version from the previous result) and delete of Graph events and To Do tasks,
and of Salesforce events and tasks."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from services.core.bus.base import Bus
from services.core.envelopes import CommandContext
from tests.integration.writer_support import ALICE, EVENT, TASK, World, command, make_world


@pytest.fixture
async def world(bus: Bus, topic_prefix: str) -> AsyncIterator[World]:
    async with make_world(bus, topic_prefix) as w:
        yield w


async def test_create_update_delete_for_each_entity(world: World) -> None:
    w = world
    await w.start_writer()
    creates = [
        command("event", "exchange", "N-ge", EVENT),
        command("task", "exchange", "N-gt", TASK),
        command("event", "salesforce", "N-se", EVENT),
        command("task", "salesforce", "N-st", TASK),
    ]
    await w.send(*creates)
    rs = await w.results_for(4)
    assert {r.status for r in rs} == {"applied"}, [r.error for r in rs]
    by_link = {r.link_id: r for r in rs}
    ge, gt, se, st = (by_link[c.link_id] for c in creates)
    assert ge.record is not None and ge.record["subject"] == "Kick-off" and ge.new_version
    assert gt.record is not None and gt.record["due_date"] == "2026-12-05"

    ev2 = {**EVENT, "start": "2026-12-01T12:00:00Z", "end": "2026-12-01T13:30:00Z"}
    t2 = {**TASK, "status": "completed"}
    sf_event = next(r for r in await w.sf_records("Event") if r["Id"] == se.target_id)
    updates = [
        command("event", "exchange", "N-ge", {"start": ev2["start"], "end": ev2["end"]}, action="update",
                target_id=ge.target_id, expected_version=ge.new_version, context=CommandContext(record=ev2)),
        command("task", "exchange", "N-gt", {"status": "completed"}, action="update", target_id=gt.target_id,
                expected_version=gt.new_version, context=CommandContext(record=t2)),
        command("event", "salesforce", "N-se", {"start": ev2["start"], "end": ev2["end"]}, action="update",
                target_id=se.target_id, context=CommandContext(record=ev2,
                                                               expected_modified_at=sf_event["LastModifiedDate"])),
        command("task", "salesforce", "N-st", {"status": "completed"}, action="update", target_id=st.target_id,
                context=CommandContext(record=t2)),
    ]
    await w.send(*updates)
    rs = await w.results_for(8)
    assert {r.status for r in rs[4:]} == {"applied"}, [r.error for r in rs[4:]]
    ge2 = w.result_of(updates[0].command_id)[0]
    assert ge2.record is not None and ge2.record["start"] == ev2["start"] and ge2.record["end"] == ev2["end"]
    gt2 = w.result_of(updates[1].command_id)[0]
    assert gt2.record is not None and gt2.record["status"] == "completed"
    sf_event = next(r for r in await w.sf_records("Event") if r["Id"] == se.target_id)
    assert sf_event["DurationInMinutes"] == 90
    sf_task = next(r for r in await w.sf_records("Task") if r["Id"] == st.target_id)
    assert sf_task["Status"] == "Completed"

    deletes = [
        command("event", "exchange", "N-ge", {}, action="delete", target_id=ge.target_id,
                expected_version=ge2.new_version),
        command("task", "exchange", "N-gt", {}, action="delete", target_id=gt.target_id),
        command("event", "salesforce", "N-se", {}, action="delete", target_id=se.target_id),
        command("task", "salesforce", "N-st", {}, action="delete", target_id=st.target_id),
    ]
    await w.send(*deletes)
    rs = await w.results_for(12)
    assert {r.status for r in rs[8:]} == {"applied"}, [r.error for r in rs[8:]]
    assert not w.graph_items(ALICE, "event") and not w.graph_items(ALICE, "task")
    assert not [r for r in await w.sf_records("Event") if not r.get("IsDeleted")]
    assert not [r for r in await w.sf_records("Task") if not r.get("IsDeleted")]
