"""One test per rule of docs/design.md §7, each driving the pure reconcile core step by step.

`World` (sim.py) holds the simulated mailboxes and org and the queues; `step` hands one
message to the reconciler or the writer, so every test states the exact interleaving.
"""

from __future__ import annotations

import itertools
from dataclasses import replace

import orjson
import pytest

from services.core.envelopes import ChangeEvent, CommandResult, Origin
from services.reconciler.core import CopyRecord, LinkRecord, TenantState, reconcile, record_from_dict, sweep
from tests.unit.reconciler.sim import World, make_tenant, ts

A, B = "alice@t1.example", "bob@t1.example"
A_SF = "005t1A00000001"


def world(policy: str = "latest-wins") -> World:
    return World([make_tenant("t1", policy), make_tenant("t2")])


def drain(w: World, queue: str, tid: str = "t1") -> None:
    while w.step(tid, queue):
        pass


def links(w: World, tid: str = "t1") -> list[LinkRecord]:
    return [r for r in w.t[tid].state().links.values() if r.status not in ("deleted",)]


def only_link(w: World, entity: str = "contact") -> LinkRecord:
    found = [r for r in links(w) if r.entity == entity]
    assert len(found) == 1, found
    return found[0]


def audit(w: World, kind: str, tid: str = "t1") -> list[dict]:
    return [a for a in w.t[tid].audit if a["kind"] == kind]


def contact(name: str, email: str = "ann@acme.test", **more: str) -> dict:
    return {"given_name": name, "family_name": "Doe", "email": email, **more}


def linked_contact(w: World) -> tuple[str, str]:
    x = w.ex_create("t1", A, "contact", contact("Ann"))
    w.settle()
    link = only_link(w)
    assert link.exchange.id == x and link.status == "linked"
    assert link.salesforce.id is not None
    return x, link.salesforce.id


def original_held_back(w: World, **original: str) -> tuple[str, str, ChangeEvent]:
    """A mailbox contact and a matching Salesforce original whose event is held back, so
    the reconciler decides to create a copy. Returns (mailbox id, original id, its event)."""
    x = w.ex_create("t1", A, "contact", contact("Ann"))
    s = w.sf_create("t1", A, "contact", contact("Ann", **original))
    held = w.t["t1"].sf_queue.pop()
    drain(w, "exchange")
    return x, s, held


def copy_of(w: World, original: str) -> str:
    [copy] = [i for i in w.t["t1"].sf if i != original]
    return copy


# --- linking ---------------------------------------------------------------------------------


def test_new_exchange_item_creates_once_in_salesforce_with_owner_and_full_record() -> None:
    w = world()
    w.ex_create("t1", A, "contact", contact("Ann", mobile_phone="+1 555"))
    w.step("t1", "exchange")
    [cmd] = w.t["t1"].commands
    assert (cmd.target, cmd.action, cmd.entity, cmd.user) == ("salesforce", "create", "contact", A)
    assert cmd.fields == contact("Ann", mobile_phone="+1 555")
    assert cmd.context.owner_id == A_SF
    link = only_link(w)
    assert link.status == "pending" and link.salesforce.pending is not None
    w.settle()
    link = only_link(w)
    assert link.status == "linked" and link.base == contact("Ann", mobile_phone="+1 555")
    assert [s.owner for s in w.t["t1"].sf.values()] == [A_SF]
    w.check()


def test_edits_while_create_pending_update_the_link_and_follow_up_after_the_result() -> None:
    w = world()
    x = w.ex_create("t1", A, "contact", contact("Ann"))
    w.step("t1", "exchange")
    w.ex_edit("t1", A, x, "job_title", "CTO")
    w.step("t1", "exchange")
    assert len(w.t["t1"].commands) == 1  # no second create
    assert only_link(w).desired["job_title"] == "CTO"
    w.step("t1", "commands")
    w.step("t1", "results")
    [follow_up] = w.t["t1"].commands
    assert (follow_up.action, follow_up.fields) == ("update", {"job_title": "CTO"})
    w.settle()
    assert len(w.t["t1"].sf) == 1
    w.check()


def test_salesforce_item_of_a_user_not_enrolled_is_dropped_with_audit() -> None:
    w = world()
    tw = w.t["t1"]
    ev = ChangeEvent(
        "t1", "stranger@t1.example", "salesforce", "contact", "S99", "upsert", "1", ts(1), record=contact("Zed")
    )
    d = reconcile(tw.state(), tw.tenant, ev, ts(2))
    assert d.changes == () and d.commands == []
    assert [a["reason"] for a in d.audit] == ["user not enrolled"]


def test_input_of_another_tenant_changes_nothing() -> None:
    w = world()
    tw = w.t["t1"]
    ev = ChangeEvent("t2", "alice@t2.example", "exchange", "contact", "X1", "upsert", "1", ts(1), record=contact("Ann"))
    d = reconcile(tw.state(), tw.tenant, ev, ts(2))
    assert d.changes == () and d.commands == [] and d.audit[0]["reason"] == "tenant mismatch"


# --- echoes, order, duplicates ------------------------------------------------------------------


def test_our_own_write_coming_back_is_a_no_op() -> None:
    w = world()
    _, s = linked_contact(w)
    w.sf_edit("t1", s, "job_title", "CTO")
    w.step("t1", "salesforce")
    w.step("t1", "commands")  # writes Exchange, whose echo is now queued
    w.step("t1", "results")
    d = w.reconcile_one("t1", w.t["t1"].ex_queue.pop(0))
    assert d.commands == [] and d.audit == []


def test_content_equal_to_base_is_a_no_op_whatever_its_origin() -> None:
    w = world()
    x, _ = linked_contact(w)
    tw = w.t["t1"]
    item = tw.mailboxes[A][x]
    ev = ChangeEvent(
        "t1",
        A,
        "exchange",
        "contact",
        x,
        "upsert",
        "other-version",
        ts(10_000),
        modified_at=ts(10_000),
        record=dict(item.record),
    )
    d = w.reconcile_one("t1", ev)
    assert d.commands == []


def test_an_echo_can_carry_a_concurrent_edit_and_it_is_merged() -> None:
    w = world()
    x, s = linked_contact(w)
    w.sf_edit("t1", s, "job_title", "CTO")
    w.step("t1", "salesforce")
    w.step("t1", "commands")  # our write lands in Exchange...
    w.ex_edit("t1", A, x, "notes", "met at fair")  # ...and the person edits right after
    w.t["t1"].ex_queue.pop(0)  # Graph delta coalesces: only the latest state is reported
    w.settle()
    assert w.t["t1"].sf[s].record["notes"] == "met at fair"
    w.check()


def test_older_and_duplicate_events_change_nothing() -> None:
    w = world()
    x, s = linked_contact(w)
    w.ex_edit("t1", A, x, "job_title", "CTO")
    first = w.t["t1"].ex_queue[0]
    w.ex_edit("t1", A, x, "job_title", "CEO")
    w.t["t1"].ex_queue.reverse()  # newer overtakes older
    w.step("t1", "exchange")
    assert w.reconcile_one("t1", first).changes == ()  # older: dropped
    w.settle()
    d = w.reconcile_one("t1", first)  # redelivered later
    assert d.changes == () and d.commands == []
    assert w.t["t1"].sf[s].record["job_title"] == "CEO"
    w.check()


def test_a_delete_overtaking_its_own_create_leaves_a_tombstone() -> None:
    w = world()
    x = w.ex_create("t1", A, "contact", contact("Ann"))
    w.ex_delete("t1", A, x)
    w.t["t1"].ex_queue.reverse()
    w.settle()
    assert w.t["t1"].sf == {} and w.t["t1"].processed_commands == []
    w.check()


def test_result_for_a_superseded_command_changes_nothing() -> None:
    w = world()
    linked_contact(w)
    old = w.t["t1"].processed_results[-1]
    d = w.reconcile_one("t1", old)
    assert d.changes == () and d.commands == []


def test_replay_on_the_same_state_gives_identical_commands() -> None:
    w = world()
    w.ex_create("t1", A, "contact", contact("Ann"))
    tw = w.t["t1"]
    ev = tw.ex_queue[0]
    d1 = reconcile(tw.state(), tw.tenant, ev, ts(5))
    d2 = reconcile(tw.state(), tw.tenant, ev, ts(5))
    assert d1 == d2 and d1.commands[0].command_id == d2.commands[0].command_id


# --- three-way merge and conflicts ----------------------------------------------------------------


def test_fields_changed_on_one_side_each_merge_into_both() -> None:
    w = world()
    x, s = linked_contact(w)
    w.ex_edit("t1", A, x, "job_title", "CTO")
    w.sf_edit("t1", s, "notes", "likes tea")
    w.step("t1", "exchange")
    w.step("t1", "salesforce")
    cmds = {c.target: c for c in w.t["t1"].commands}
    assert cmds["salesforce"].fields == {"job_title": "CTO"}
    assert cmds["exchange"].fields == {"notes": "likes tea"}
    assert cmds["exchange"].expected_version == w.t["t1"].mailboxes[A][x].version
    w.settle()
    assert w.t["t1"].mailboxes[A][x].record == w.t["t1"].sf[s].record
    assert audit(w, "conflict") == []
    w.check()


@pytest.mark.parametrize(
    ("policy", "winner"),
    [("latest-wins", "salesforce"), ("salesforce-wins", "salesforce"), ("exchange-wins", "exchange")],
)
def test_a_field_changed_on_both_sides_is_resolved_by_policy_and_audited(policy: str, winner: str) -> None:
    w = world(policy)
    x, s = linked_contact(w)
    w.ex_edit("t1", A, x, "job_title", "CTO")
    w.sf_edit("t1", s, "job_title", "CFO")  # later, so latest-wins picks Salesforce
    w.settle()
    expected = "CFO" if winner == "salesforce" else "CTO"
    assert w.t["t1"].mailboxes[A][x].record["job_title"] == expected
    assert w.t["t1"].sf[s].record["job_title"] == expected
    [c] = audit(w, "conflict")
    assert (c["exchange_value"], c["salesforce_value"], c["winner"], c["policy"]) == ("CTO", "CFO", winner, policy)
    w.check()


def test_latest_wins_follows_modified_at_not_arrival_order() -> None:
    w = world()
    x, s = linked_contact(w)
    w.sf_edit("t1", s, "job_title", "CFO")
    w.ex_edit("t1", A, x, "job_title", "CTO")  # later edit, but its event is handled first
    w.step("t1", "exchange")
    w.settle()
    assert w.t["t1"].sf[s].record["job_title"] == "CTO"
    w.check()


def test_conflict_result_re_merges_against_the_fresh_record() -> None:
    w = world()
    x, s = linked_contact(w)
    w.ex_edit("t1", A, x, "job_title", "CTO")
    w.step("t1", "exchange")
    w.sf_edit("t1", s, "notes", "fresh")  # the target changes before our write lands
    w.step("t1", "commands")
    result = w.t["t1"].results[0]
    assert result.status == "conflict"
    d = w.reconcile_one("t1", w.t["t1"].results.pop(0))
    retry = next(c for c in d.commands if c.target == "salesforce")
    assert retry.expected_version == w.t["t1"].sf[s].version and retry.fields == {"job_title": "CTO"}
    w.settle()
    assert w.t["t1"].sf[s].record["notes"] == "fresh" and w.t["t1"].mailboxes[A][x].record["notes"] == "fresh"
    w.check()


# --- deletes and unlinking -----------------------------------------------------------------------


def test_delete_propagates_with_the_expected_version() -> None:
    w = world()
    x, s = linked_contact(w)
    w.ex_delete("t1", A, x)
    w.step("t1", "exchange")
    [cmd] = w.t["t1"].commands
    assert (cmd.target, cmd.action, cmd.target_id, cmd.expected_version) == (
        "salesforce",
        "delete",
        s,
        w.t["t1"].sf[s].version,
    )
    w.settle()
    assert w.t["t1"].sf == {} and links(w) == []
    w.check()


def test_edit_beats_delete_the_item_is_restored_and_the_link_re_pointed() -> None:
    w = world()
    x, s = linked_contact(w)
    w.sf_edit("t1", s, "job_title", "CFO")
    w.ex_delete("t1", A, x)
    w.step("t1", "salesforce")  # the update to Exchange is now in flight...
    w.step("t1", "exchange")  # ...and the delete arrives
    w.settle()
    [restored] = w.t["t1"].mailboxes[A].values()
    assert restored.record["job_title"] == "CFO"
    link = only_link(w)
    assert link.exchange.id != x and x in link.exchange.retired and link.status == "linked"
    assert audit(w, "restore")
    w.check()


QUEUES = ("exchange", "salesforce", "commands", "results")


@pytest.mark.parametrize("side", ["exchange", "salesforce"])
def test_a_create_edit_and_delete_in_one_backlog_never_come_back_in_any_order(side: str) -> None:
    """The reconciler was down (a rolling deploy) while a person created, edited and deleted
    a contact: whatever order the two sides' queues are worked through in, the create we
    make from the stale first event is ours, not a person's edit, and cannot beat the
    delete. Every order of the first five steps, then the rest in order."""
    for order in itertools.product(QUEUES, repeat=5):
        w = world()
        if side == "exchange":
            x = w.ex_create("t1", A, "contact", contact("Ann"))
            w.ex_edit("t1", A, x, "given_name", "Anna")
            w.ex_delete("t1", A, x)
        else:
            s = w.sf_create("t1", A, "contact", contact("Ann"))
            w.sf_edit("t1", s, "given_name", "Anna")
            w.sf_delete("t1", s)
        for q in order:
            w.step("t1", q)
        w.settle()
        tw = w.t["t1"]
        assert tw.sf == {} and tw.mailboxes[A] == {}, order
        assert audit(w, "restore") == [], order
        w.check()


def test_the_echo_of_our_update_is_not_an_edit_that_overwrites_a_newer_one() -> None:
    """Outlook edit 1 goes to Salesforce; before its result, Outlook edit 2 arrives and the
    Salesforce echo of our write 1 comes in: that echo is ours landing, not a Salesforce
    change that conflicts with edit 2 (and, by its later timestamp, beats it)."""
    w = world()
    x, s = linked_contact(w)
    w.ex_edit("t1", A, x, "job_title", "CTO")
    w.step("t1", "exchange")
    w.step("t1", "commands")  # written: the echo is queued, the result too
    w.ex_edit("t1", A, x, "job_title", "CEO")
    w.step("t1", "exchange")
    w.step("t1", "salesforce")  # the echo of "CTO"
    w.settle()
    assert w.t["t1"].sf[s].record["job_title"] == "CEO"
    assert w.t["t1"].mailboxes[A][x].record["job_title"] == "CEO"
    assert audit(w, "conflict") == []
    w.check()


def test_a_redelivered_update_finding_its_own_write_is_no_conflict() -> None:
    """The writer applied an update and died before its result; the redelivered command finds
    the record changed (by itself) and answers conflict with it: that content is ours."""
    w = world()
    x, s = linked_contact(w)
    w.ex_edit("t1", A, x, "job_title", "CTO")
    w.step("t1", "exchange")
    w.write("t1", w.t["t1"].commands[0])  # the first attempt, its result lost
    w.t["t1"].sf_queue.clear()  # and its echo not here yet
    w.ex_edit("t1", A, x, "job_title", "CEO")
    w.step("t1", "exchange")
    w.step("t1", "commands")  # the redelivery: conflict, with our own write as the record
    assert w.t["t1"].results[-1].status == "conflict"
    w.settle()
    assert w.t["t1"].sf[s].record["job_title"] == "CEO"
    assert audit(w, "conflict") == []
    w.check()


def test_a_stale_copy_of_ours_does_not_win_latest_wins_by_the_time_we_wrote_it() -> None:
    """A mailbox contact deleted and made again (a new email of the same person) in one
    backlog: the new one joins the record our create made from the stale first event, and
    under latest-wins the person's newer value beats it (our write's time is not theirs)."""
    w = world()
    x1 = w.ex_create("t1", A, "contact", contact("Ann"))
    w.ex_delete("t1", A, x1)
    x2 = w.ex_create("t1", A, "contact", contact("Anna"))
    w.settle()
    [sf] = w.t["t1"].sf.values()
    assert sf.record["given_name"] == "Anna"
    assert w.t["t1"].mailboxes[A][x2].record["given_name"] == "Anna"
    w.check()


def test_gone_result_for_an_update_carrying_an_edit_recreates() -> None:
    w = world()
    x, s = linked_contact(w)
    w.ex_edit("t1", A, x, "job_title", "CTO")
    w.step("t1", "exchange")
    w.sf_delete("t1", s)
    w.step("t1", "commands")
    assert w.t["t1"].results[0].status == "gone"
    w.settle()
    [again] = w.t["t1"].sf.values()
    assert again.record["job_title"] == "CTO"
    w.check()


def test_moving_out_of_the_folder_unlinks_without_deleting_salesforce() -> None:
    w = world()
    x, s = linked_contact(w)
    w.ex_move_out("t1", A, x)
    w.settle()
    assert s in w.t["t1"].sf and w.t["t1"].processed_commands[-1].action == "create"
    assert (only_link(w).status, only_link(w).reason) == ("unlinked", "moved_out")
    assert audit(w, "unlink")
    w.sf_edit("t1", s, "job_title", "CFO")
    w.settle()
    assert w.t["t1"].moved_out[0][2].record.get("job_title") is None  # no longer synced
    w.check()


# --- duplicates ---------------------------------------------------------------------------------


def test_same_contact_in_two_mailboxes_gives_one_salesforce_contact_and_edits_fan_out() -> None:
    w = world()
    xa = w.ex_create("t1", A, "contact", contact("Ann"))
    xb = w.ex_create("t1", B, "contact", contact("Ann", email="ANN@acme.test ", job_title="CTO"))
    w.settle()
    [s] = w.t["t1"].sf
    assert w.t["t1"].sf[s].record["job_title"] == "CTO"
    assert audit(w, "dedupe")
    w.sf_edit("t1", s, "notes", "shared")
    w.settle()
    assert w.t["t1"].mailboxes[A][xa].record["notes"] == "shared"
    assert w.t["t1"].mailboxes[B][xb].record["notes"] == "shared"
    w.check()


def test_a_delete_in_one_mailbox_unlinks_that_mailbox_while_the_other_still_syncs() -> None:
    w = world()
    xa = w.ex_create("t1", A, "contact", contact("Ann"))
    xb = w.ex_create("t1", B, "contact", contact("Ann"))
    w.settle()
    [s] = w.t["t1"].sf
    w.ex_delete("t1", A, xa)
    w.settle()
    assert list(w.t["t1"].sf) == [s] and xb in w.t["t1"].mailboxes[B]
    by_user = {r.user: (r.status, r.reason) for r in links(w)}
    assert by_user == {A: ("unlinked", "deleted_here"), B: ("linked", None)}
    w.check()


def test_a_salesforce_duplicate_of_a_synced_record_is_tracked_not_copied() -> None:
    w = world()
    s = w.sf_create("t1", A, "contact", contact("Ann"))
    w.settle()
    dup = w.sf_create("t1", A, "contact", contact("Ann Again"))
    w.settle()
    assert len(w.t["t1"].mailboxes[A]) == 1
    [tracked] = [r for r in links(w) if r.salesforce.id == dup]
    assert (tracked.status, tracked.reason) == ("unlinked", "salesforce_duplicate")
    assert s in w.t["t1"].sf and audit(w, "dedupe")
    # (no w.check(): it holds that people never duplicate inside Salesforce, which this test does on purpose)


@pytest.mark.parametrize(
    ("shape", "reason"),
    [
        ({"owner": ""}, "owner_not_enrolled"),
        ({"exchange": {"id": "X1", "gone": True}}, "deleted_here"),
        ({"exchange": {}}, "salesforce_duplicate"),
        ({"exchange": {"id": "X1"}}, "moved_out"),
    ],
)
def test_schema_1_state_records_migrate_with_the_reason_read_from_their_shape(shape: dict, reason: str) -> None:
    v1 = {
        "tenant_id": "t1",
        "entity": "contact",
        "link_id": "L1",
        "user": A,
        "status": "unlinked",
        "owner": A,
        "salesforce": {"id": "S1", "shadow": {"email": "ann@acme.test"}},
        "exchange": {"id": "X1"},
        **shape,
    }
    rec = LinkRecord.from_dict(v1)
    assert rec.reason == reason
    again = LinkRecord.from_dict(orjson.loads(orjson.dumps(rec.to_dict())))
    assert again == rec and rec.to_dict()["schema"] == 2
    linked = LinkRecord.from_dict({**v1, "status": "linked"})
    assert linked.reason is None


def test_existing_salesforce_contact_is_linked_not_copied() -> None:
    w = world()
    s = w.sf_create("t1", A, "contact", contact("Ann", job_title="CTO"))
    w.settle()
    xb = w.ex_create("t1", B, "contact", contact("Ann", notes="from bob"))
    w.settle()
    assert list(w.t["t1"].sf) == [s]
    assert w.t["t1"].sf[s].record["notes"] == "from bob"
    assert w.t["t1"].mailboxes[B][xb].record["job_title"] == "CTO"
    w.check()


def test_salesforce_original_found_after_we_created_a_copy_wins_and_the_copy_goes() -> None:
    w = world()
    s = w.sf_create("t1", A, "contact", contact("Ann", job_title="CTO"))
    w.ex_create("t1", A, "contact", contact("Ann", notes="n"))
    w.step("t1", "exchange")  # the Salesforce event is late: we create a copy
    w.settle()
    assert list(w.t["t1"].sf) == [s]
    assert w.t["t1"].sf[s].record["notes"] == "n"
    w.check()


@pytest.mark.parametrize("result_first", [True, False])
def test_a_copy_whose_echo_came_before_its_result_still_gives_way_to_the_late_original(result_first: bool) -> None:
    # Long-run counterexamples: the echo linked our copy, so it was not known as ours and
    # the original was kept aside as a Salesforce duplicate.
    w = world()
    _, s, original = original_held_back(w, job_title="CTO")
    drain(w, "commands")
    drain(w, "salesforce")  # our create's echo, before its result
    assert only_link(w).salesforce.created
    if result_first:
        drain(w, "results")
    w.t["t1"].sf_queue.append(original)
    w.settle()
    assert list(w.t["t1"].sf) == [s]
    assert only_link(w).salesforce.id == s
    w.check()


def test_an_edit_of_our_copy_seen_before_its_result_moves_to_the_original_the_pair_joined() -> None:
    # Long-run counterexample: the copy's content was taken for what we sent, so its
    # edit went with it.
    w = world()
    x, s, original = original_held_back(w, job_title="CTO")  # create in flight ...
    w.t["t1"].sf_queue.append(original)
    drain(w, "salesforce")  # ... when the original turns up: the pair joins it
    assert only_link(w).salesforce.id == s
    w.write("t1", w.t["t1"].commands[0])  # the create lands anyway; its result is late
    w.sf_edit("t1", copy_of(w, s), "notes", "typed on the copy")
    w.t["t1"].sf_queue.pop(0)  # the copy's first event is coalesced away
    drain(w, "salesforce")  # the copy's event comes before the create's result
    w.settle()
    assert list(w.t["t1"].sf) == [s]
    assert w.t["t1"].sf[s].record["notes"] == "typed on the copy"
    assert w.t["t1"].mailboxes[A][x].record["notes"] == "typed on the copy"
    w.check()


def test_edits_to_our_copy_of_an_unlinked_pair_move_to_the_late_original() -> None:
    # Long-run counterexample: the copy's Salesforce edit was deleted with the copy.
    w = world()
    x, s, original = original_held_back(w, given_name="Ann Roe", job_title="CTO")
    drain(w, "commands")
    copy = copy_of(w, s)
    w.sf_edit("t1", copy, "notes", "met at the fair")  # someone edits our copy
    w.sf_edit("t1", copy, "given_name", "Annie")
    w.ex_move_out("t1", A, x)
    w.settle()
    assert only_link(w).status == "unlinked"
    w.t["t1"].sf_queue.append(original)
    w.settle()
    assert list(w.t["t1"].sf) == [s]
    rec = w.t["t1"].sf[s].record
    assert rec["notes"] == "met at the fair"  # what the original lacked moves to it
    assert (rec["given_name"], rec["job_title"]) == ("Ann Roe", "CTO")  # the original keeps its own
    [c] = audit(w, "conflict")
    assert (c["field"], c["losing_value"], c["policy"]) == ("given_name", "Annie", "salesforce-wins")
    assert w.t["t1"].moved_out[0][2].record.get("notes") is None  # the mailbox is out of scope
    w.check()


def test_a_later_edit_of_a_discarded_copy_reaches_an_unlinked_pairs_record() -> None:
    w = world()
    x, s, original = original_held_back(w, job_title="CTO")
    drain(w, "commands")
    drain(w, "results")
    copy = copy_of(w, s)
    w.ex_move_out("t1", A, x)
    drain(w, "exchange")
    w.t["t1"].sf_queue.append(original)
    drain(w, "salesforce")  # the copy's delete is decided, not yet written
    w.sf_edit("t1", copy, "notes", "typed just before it went")
    w.settle()
    assert list(w.t["t1"].sf) == [s]
    assert w.t["t1"].sf[s].record["notes"] == "typed just before it went"
    assert not audit(w, "discarded_edit")
    w.check()


def test_tasks_match_by_subject_due_date_and_owner() -> None:
    w = world()
    task = {"subject": "Call back", "due_date": "2026-03-01", "body": "x"}
    w.ex_create("t1", A, "task", task)
    w.settle()
    w.ex_create("t1", A, "task", {**task, "subject": "call  BACK"})
    w.ex_create("t1", B, "task", task)  # another owner: its own task
    w.settle()
    assert sorted(s.owner for s in w.t["t1"].sf.values()) == sorted([A_SF, "005t1B00000002"])
    w.check()


def test_events_match_by_ical_uid_across_mailboxes() -> None:
    w = world()
    tw = w.t["t1"]
    ev = {"subject": "Board", "start": "2026-03-01T09:00:00Z", "end": "2026-03-01T10:00:00Z"}
    for mailbox, item_id in ((A, "XA"), (B, "XB")):  # one meeting, in two attendees' calendars
        w.reconcile_one(
            "t1",
            ChangeEvent(
                "t1",
                mailbox,
                "exchange",
                "event",
                item_id,
                "upsert",
                "1",
                ts(1),
                record=dict(ev),
                origin=Origin(ical_uid="meeting-1"),
            ),
        )
    assert [c.action for c in tw.commands] == ["create"]
    assert [a["reason"] for a in audit(w, "dedupe")] == ["waiting for a pending create of the same item"]
    w.settle()  # (the events were injected by hand, so the world check does not apply)
    assert len(tw.sf) == 1
    assert {r.salesforce.id for r in links(w)} == set(tw.sf)


# --- email ----------------------------------------------------------------------------------------


def test_email_is_created_once_with_who_id_and_never_deleted() -> None:
    w = world()
    _, s = linked_contact(w)
    m1 = w.email_arrives("t1", A, "<m1@mail>", "Ann@Acme.test")
    w.step("t1", "exchange")
    [cmd] = w.t["t1"].commands
    assert (cmd.target, cmd.entity, cmd.action) == ("salesforce", "email", "create")
    assert cmd.context.who_id == s and cmd.context.message_id == m1
    assert cmd.context.who_emails == ("ann@acme.test",) and cmd.context.owner_id == A_SF
    w.settle()
    w.email_arrives("t1", A, "<m1@mail>", "Ann@Acme.test")  # moved out and back: a new Graph id
    tw = w.t["t1"]
    tw.ex_queue.append(tw.processed[-1])  # and a plain redelivery
    tw.ex_queue.append(ChangeEvent("t1", A, "exchange", "email", m1, "delete", "d", ts(9_999)))
    w.settle()
    assert len(tw.sf_email) == 1
    w.check()


# --- writer outcomes -------------------------------------------------------------------------------


def test_failed_write_is_audited_and_retried_by_the_sweep_only() -> None:
    w = world()
    x, s = linked_contact(w)
    w.ex_edit("t1", A, x, "job_title", "CTO")
    w.step("t1", "exchange")
    w.fail_next = 1
    w.step("t1", "commands")
    d = w.reconcile_one("t1", w.t["t1"].results.pop(0))
    assert d.commands == [] and [a["kind"] for a in d.audit] == ["failed"]
    tw = w.t["t1"]
    d = sweep(tw.state(), tw.tenant, ts(10_000))
    w._apply(tw, d)
    assert [(c.action, c.fields) for c in d.commands] == [("update", {"job_title": "CTO"})]
    w.settle()
    assert tw.sf[s].record["job_title"] == "CTO"
    w.check()


def test_create_reported_failed_but_applied_by_a_redelivery_is_adopted() -> None:
    w = world()
    w.ex_create("t1", A, "contact", contact("Ann"))
    w.step("t1", "exchange")
    tw = w.t["t1"]
    cmd = tw.commands[0]
    w.fail_next = 1
    w.step("t1", "commands")
    tw.commands.append(cmd)  # the command is delivered again and this time it lands
    w.settle()
    assert len(tw.sf) == 1 and only_link(w).status == "linked"
    w.check()


# --- state -------------------------------------------------------------------------------------------


def test_state_rebuilds_from_link_records_alone() -> None:
    w = world()
    linked_contact(w)
    w.ex_create("t1", B, "contact", contact("Ann"))
    w.settle()
    tw = w.t["t1"]
    state = tw.state()
    raw = [orjson.dumps(r.to_dict()) for r in state.links.values()]
    rebuilt = TenantState.from_records("t1", (orjson.loads(b) for b in raw))
    assert rebuilt.links == state.links and rebuilt.index == state.index
    for rec in state.links.values():
        assert rec.key == f"t1/{rec.entity}/{rec.link_id}"
        assert LinkRecord.from_dict(orjson.loads(orjson.dumps(rec.to_dict()))) == rec
    with pytest.raises(ValueError):
        TenantState("t2", state.links.values())


def test_a_stray_copy_is_its_own_record_and_schema_1_discard_links_migrate_to_it() -> None:
    w = world()
    s = w.sf_create("t1", A, "contact", contact("Ann", job_title="CTO"))
    w.ex_create("t1", A, "contact", contact("Ann", notes="n"))
    w.step("t1", "exchange")  # the Salesforce event is late: we create a copy
    w.settle()
    state = w.t["t1"].state()
    [copy] = state.copies.values()
    assert (copy.side, copy.done) == ("salesforce", True) and copy.item.id not in w.t["t1"].sf
    assert copy.link_id not in state.links and all(r.salesforce.id == s for r in state.links.values())
    assert record_from_dict(orjson.loads(orjson.dumps(copy.to_dict()))) == copy
    # Schema 1 stored the same copy as a link with status "discard" and one side.
    v1 = {
        "tenant_id": "t1",
        "entity": "contact",
        "link_id": copy.link_id,
        "user": A,
        "status": "discard",
        "salesforce": {"id": "S9", "version": "v1", "shadow": {"email": "ann@acme.test"}, "created": True},
        "desired": {"email": "ann@acme.test"},
        "seq": 1,
    }
    old = record_from_dict(v1)
    assert isinstance(old, CopyRecord)
    assert (old.side, old.item.id, old.done, old.seq) == ("salesforce", "S9", False, 1)
    assert TenantState("t1", [old]).get_copy(copy.link_id) == old


def test_decision_changelog_is_keyed_by_tenant_entity_link() -> None:
    w = world()
    w.ex_create("t1", A, "contact", contact("Ann"))
    tw = w.t["t1"]
    d = reconcile(tw.state(), tw.tenant, tw.ex_queue[0], ts(3))
    [(key, value)] = d.changelog()
    assert key == f"t1/contact/{value['link_id']}"
    assert LinkRecord.from_dict(orjson.loads(orjson.dumps(value))) == d.changes[0]


def test_result_for_an_unknown_link_is_dropped() -> None:
    w = world()
    tw = w.t["t1"]
    r = CommandResult("c", "t1", A, "salesforce", "contact", "nope", "applied", "S1")
    d = reconcile(tw.state(), tw.tenant, r, ts(1))
    assert d.changes == () and d.audit[0]["reason"] == "result for unknown link"


# --- ownership --------------------------------------------------------------------------------

B_SF = "005t1B00000002"


def test_owner_change_moves_our_copy_to_the_new_owners_mailbox_with_its_edits() -> None:
    w = world()
    s = w.sf_create("t1", A, "contact", contact("Ann"))
    w.settle()
    [x] = w.t["t1"].mailboxes[A]
    # Alice edits her copy; before that edit is processed the record passes to Bob.
    w.ex_edit("t1", A, x, "job_title", "CTO")
    w.step("t1", "exchange")
    w.sf_reassign("t1", s, B_SF)
    w.settle()
    assert w.t["t1"].mailboxes[A] == {}, "the copy left Alice's mailbox"
    [bob_item] = w.t["t1"].mailboxes[B].values()
    assert bob_item.record["job_title"] == "CTO"
    assert w.t["t1"].sf[s].record["job_title"] == "CTO"
    link = only_link(w)
    assert (link.user, link.owner, link.salesforce.id) == (B, B, s)
    assert [a["owner"] for a in audit(w, "owner_changed")] == [B]
    w.check()


def test_own_items_stay_linked_on_owner_change_and_stop_syncing_when_the_owner_leaves() -> None:
    w = world()
    x, s = linked_contact(w)  # Alice's own contact, which created the record
    w.sf_reassign("t1", s, B_SF)
    w.settle()
    assert x in w.t["t1"].mailboxes[A], "an item the mailbox had itself is never removed"
    assert len(w.t["t1"].mailboxes[B]) == 1, "the new owner gets a copy"
    w.check()
    w.sf_reassign("t1", s, "005t1OUTSIDER")
    w.settle()
    assert x in w.t["t1"].mailboxes[A]
    assert w.t["t1"].mailboxes[B] == {}, "our copy leaves when the record leaves enrolled hands"
    assert s in w.t["t1"].sf, "nothing is deleted in Salesforce"
    assert {(r.status, r.reason) for r in links(w)} == {("unlinked", "owner_not_enrolled")}
    # An edit in the mailbox does not re-link a record nobody enrolled owns.
    w.ex_edit("t1", A, x, "job_title", "CEO")
    w.settle()
    assert "job_title" not in w.t["t1"].sf[s].record
    # Back in enrolled hands: the own item syncs again, the edit included.
    w.sf_reassign("t1", s, A_SF)
    w.settle()
    assert w.t["t1"].sf[s].record["job_title"] == "CEO"
    assert only_link(w).status == "linked"
    w.check()


def test_a_delete_overtaking_its_create_leaves_a_tombstone_not_a_copy() -> None:
    w = world()
    s = w.sf_create("t1", A, "contact", contact("Ann"))
    w.sf_delete("t1", s)
    w.step("t1", "salesforce", 1)  # the delete (user "*": CDC deletes carry no owner) first
    w.settle()
    assert w.t["t1"].mailboxes[A] == {} and not w.t["t1"].commands
    w.check()


def test_sweep_trims_only_tombstones_older_than_the_tenant_keeps_them() -> None:
    w = world()
    x, _ = linked_contact(w)
    w.ex_delete("t1", A, x)
    w.settle()
    tw = w.t["t1"]
    [dead] = [r for r in tw.state().links.values() if r.status == "deleted"]
    keep = w.ex_create("t1", A, "contact", contact("Bo", "bo@acme.test"))
    w.settle()
    day = 24 * 3600
    assert not sweep(tw.state(), tw.tenant, ts(13 * day)).removed
    d = sweep(tw.state(), tw.tenant, ts(15 * day))
    assert [r.link_id for r in d.removed] == [dead.link_id] and not d.commands
    assert (dead.key, None) in d.changelog()
    w._apply(tw, d)
    state = tw.state()  # rebuilt from the changelog
    assert dead.link_id not in state.links and not state.lookup("exchange", x)
    assert [r.exchange.id for r in state.links.values()] == [keep]


def test_our_salesforce_create_is_recognised_by_content_without_a_link_id() -> None:
    w = world()
    w.sf_tags = False  # an ingestor that cannot report the external id
    w.ex_create("t1", A, "contact", contact("Ann"))
    w.step("t1", "exchange")
    w.step("t1", "commands")  # the create lands; its CDC echo overtakes the result
    w.step("t1", "salesforce")
    assert not w.t["t1"].commands, "the echo of our own create starts nothing"
    w.settle()
    assert len(w.t["t1"].sf) == 1 and len(w.t["t1"].mailboxes[A]) == 1
    assert only_link(w).status == "linked"
    w.check()


def test_a_create_reported_failed_that_landed_after_all_leaves_one_record() -> None:
    w = world()
    tw = w.t["t1"]
    w.ex_create("t1", A, "contact", contact("Ann"))
    w.step("t1", "exchange")
    [create] = tw.commands
    w.write("t1", create)  # the writer made the record, then died before its result
    w.fail_next = 1  # and the redelivery failed
    w.step("t1", "commands")
    w.step("t1", "results")
    assert len(tw.sf) == 1 and audit(w, "failed")
    # Meanwhile Bob files the same contact: his pair creates a record of its own.
    w.ex_create("t1", B, "contact", contact("Ann", job_title="CTO"))
    w.step("t1", "exchange")
    w.step("t1", "commands")
    w.step("t1", "results")
    assert len(tw.sf) == 2
    # The first record's event (it carries Alice's link id) arrives last: it is the copy.
    w.settle()
    [kept] = tw.sf.values()
    assert kept.record["job_title"] == "CTO"
    assert {r.salesforce.id for r in links(w) if r.entity == "contact" and r.status == "linked"} == set(tw.sf)
    w.check()


def test_a_late_record_of_a_pair_that_joined_another_one_is_removed() -> None:
    w = world()
    tw = w.t["t1"]
    w.ex_create("t1", A, "contact", contact("Ann"))
    w.step("t1", "exchange")
    w.write("t1", tw.commands[0])  # made the record, died before the result
    w.fail_next = 1
    w.step("t1", "commands")
    w.step("t1", "results")  # reported failed
    late = tw.sf_queue.pop()  # the record's event is held back
    w.ex_create("t1", B, "contact", contact("Ann", job_title="CTO"))
    w.settle()  # Bob's pair creates a record; the sweep lets Alice's pair join it
    alice = next(r for r in links(w) if r.user == A)
    assert alice.status == "linked" and alice.salesforce.id != late.source_id
    tw.sf_queue.append(late)
    w.settle()
    assert late.source_id not in tw.sf, "the late record was a copy"
    assert len(tw.sf) == 1
    w.check()


def test_a_record_back_from_an_owner_who_is_not_enrolled_gets_a_copy_again() -> None:
    w = world()
    s = w.sf_create("t1", A, "contact", contact("Ann"))
    w.settle()
    assert len(w.t["t1"].mailboxes[A]) == 1
    w.sf_reassign("t1", s, "005t1OUTSIDER")
    w.settle()
    assert w.t["t1"].mailboxes[A] == {}, "our copy left with the record"
    w.sf_reassign("t1", s, B_SF)
    w.settle()
    [item] = w.t["t1"].mailboxes[B].values()
    assert item.record["given_name"] == "Ann"
    # And a matching contact made in Outlook later joins it instead of a second record.
    w.ex_create("t1", A, "contact", contact("Ann"))
    w.settle()
    assert list(w.t["t1"].sf) == [s]
    w.check()


@pytest.mark.parametrize("synced_first", [True, False])
def test_an_event_from_before_the_record_left_enrolled_hands_does_not_bring_it_back(synced_first: bool) -> None:
    # Long-run counterexample: a late edit event (owner still enrolled then) re-created
    # our copy after the record had passed to someone who is not enrolled.
    w = world()
    s = w.sf_create("t1", A, "contact", contact("Ann"))
    if synced_first:
        w.settle()
    w.sf_edit("t1", s, "notes", "before the handover")
    late = w.t["t1"].sf_queue.pop()
    w.sf_reassign("t1", s, "005t1OUTSIDER")
    w.settle()
    assert w.t["t1"].mailboxes[A] == {}
    w.t["t1"].sf_queue.append(late)
    w.settle()
    assert w.t["t1"].mailboxes[A] == {}, "the record still belongs to someone not enrolled"
    assert not [a for a in audit(w, "owner_changed") if a["owner"] == A]
    w.check()


def test_an_edit_carried_to_a_pair_that_left_its_mailbox_beats_the_delete_of_its_record() -> None:
    # Long-run counterexample: a retried create made a second copy after someone deleted
    # the first; an edit of that copy moved to the pair, whose record was deleted and
    # whose mailbox item had left the folder: the edit had nowhere left to go.
    w = world()
    x = w.ex_create("t1", A, "contact", contact("Ann"))
    w.ex_move_out("t1", A, x)
    w.step("t1", "exchange")
    create = w.t["t1"].commands[0]
    w.write("t1", create)  # the writer dies before its result ...
    [first] = w.t["t1"].sf
    w.sf_delete("t1", first)
    w.write("t1", create)  # ... and the retry makes a new record
    [second] = w.t["t1"].sf
    w.sf_edit("t1", second, "job_title", "CFO")
    w.step("t1", "salesforce")  # the first record's echo links it
    w.settle()
    [kept] = w.t["t1"].sf.values()
    assert kept.record["job_title"] == "CFO"
    assert [a["side"] for a in audit(w, "restore")] == ["salesforce"]
    assert w.t["t1"].moved_out[0][2].record.get("job_title") is None  # the mailbox stays out of it
    w.check()


def test_our_update_landing_is_recorded_even_when_the_echo_of_an_earlier_one_moved_the_version() -> None:
    # Salesforce's REST answers carry ids only (services/writer/salesforce_apply.py): an
    # applied update brings no new version, so the echo of an earlier write of ours moves
    # the side's version while the next update is in flight. That update still landed;
    # taking its own echo for a Salesforce edit let our stale value beat a newer mailbox
    # edit under latest-wins (seen in the scaled-out e2e, issue 11).
    w = world()
    x, s = linked_contact(w)
    tw = w.t["t1"]

    def bare(r: CommandResult) -> CommandResult:
        return replace(r, new_version=None, record=None, modified_at=None)

    w.ex_edit("t1", A, x, "job_title", "CTO")
    w.step("t1", "exchange")
    w.step("t1", "commands")
    tw.results[-1] = bare(tw.results[-1])
    w.step("t1", "results")  # our first update landed; the answer has no version
    w.ex_edit("t1", A, x, "notes", "first")
    w.step("t1", "exchange")
    [second] = tw.commands
    w.ex_edit("t1", A, x, "notes", "second")  # the person types on while it is in flight
    w.step("t1", "salesforce")  # the echo of the first update
    # The second update lands (If-Unmodified-Since holds: nothing but our own write since).
    tw.commands.remove(second)
    sfi = tw.sf[s]
    n = w.tick()
    sfi.record, sfi.version, sfi.modified = {**sfi.record, **second.fields}, f"sm{n}", ts(n)
    w._sf_event(tw, s, sfi, "upsert", ours=True)
    tw.results.append(
        CommandResult(second.command_id, "t1", A, "salesforce", "contact", second.link_id, "applied", target_id=s)
    )
    w.step("t1", "exchange")  # "second": the pair waits for the update in flight
    w.step("t1", "results")
    assert only_link(w).salesforce.shadow["notes"] == "first", "what our update wrote is the side's content"
    w.settle()
    assert tw.sf[s].record["notes"] == "second" and tw.mailboxes[A][x].record["notes"] == "second"
    assert not audit(w, "conflict"), "our own write is no Salesforce edit"
    w.check()


@pytest.mark.parametrize("echo_first", [False, True])
def test_the_zone_graph_fills_in_on_our_event_create_is_no_edit_and_cannot_beat_a_delete(echo_first: bool) -> None:
    # Graph gives every event a time zone; one we create from a Salesforce Event (which has
    # no zone field) comes back with "UTC" that we never sent (scaled-out e2e, issue 11).
    w = world()
    tw = w.t["t1"]
    event = {"subject": "Call", "start": "2026-03-01T09:00:00Z", "end": "2026-03-01T10:00:00Z"}
    s = w.sf_create("t1", A, "event", event)
    w.step("t1", "salesforce")
    w.step("t1", "commands")
    [x] = tw.mailboxes[A]
    tw.mailboxes[A][x].record["time_zone"] = "UTC"
    echo = tw.ex_queue.pop()
    tw.ex_queue.append(replace(echo, record={**(echo.record or {}), "time_zone": "UTC"}))
    tw.results[-1] = replace(tw.results[-1], record={**(tw.results[-1].record or {}), "time_zone": "UTC"})
    w.sf_delete("t1", s)  # the person deletes the event in Salesforce meanwhile
    w.step("t1", "exchange" if echo_first else "results")
    w.step("t1", "results" if echo_first else "exchange")
    link = only_link(w, "event")
    assert link.exchange.holds_ours(), "all the new item holds is what exsf made (and Graph's default)"
    w.settle()
    assert tw.mailboxes[A] == {} and tw.sf == {}, "the delete wins: no person edited the event"
    assert not audit(w, "restore")
    w.check()
