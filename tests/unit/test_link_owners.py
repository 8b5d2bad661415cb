"""The writer's id -> tenant table, fed by exsf.state records (pure part)."""

from __future__ import annotations

import orjson

from services.core.bus.base import Message
from services.reconciler.core.state import LinkRecord, SideState
from services.writer.link_owners import LinkOwners


def _msg(value: bytes | None, offset: int = 0) -> Message:
    return Message(topic="exsf.state", partition=0, offset=offset, key=b"k", value=value, timestamp_ms=0)


def _link(tenant: str, ex: str | None, sf: str | None, retired: tuple[str, ...] = ()) -> bytes:
    rec = LinkRecord(tenant_id=tenant, entity="contact", link_id="L", user="u@x", status="linked",
                     exchange=SideState(id=ex, retired=retired), salesforce=SideState(id=sf))
    return orjson.dumps(rec.to_dict())


def test_current_and_retired_ids_of_both_sides_are_owned() -> None:
    owners = LinkOwners()
    owners.absorb(_msg(_link("t1", "X1", "S1", retired=("X0",))))
    assert owners.owner("exchange", "X1") == "t1"
    assert owners.owner("exchange", "X0") == "t1"
    assert owners.owner("salesforce", "S1") == "t1"
    # Sides are separate namespaces.
    assert owners.owner("salesforce", "X1") is None
    assert len(owners) == 3


def test_unreadable_records_are_skipped_and_tombstones_keep_ids() -> None:
    owners = LinkOwners()
    owners.absorb(_msg(b"{not json", 0))
    owners.absorb(_msg(b'{"exchange": {"id": "X9"}}', 1))  # no tenant
    owners.absorb(_msg(_link("t1", "X1", None), 2))
    owners.absorb(_msg(None, 3))
    assert owners.skipped == 2
    assert owners.owner("exchange", "X9") is None
    assert owners.owner("exchange", "X1") == "t1"


def test_a_second_tenant_claiming_an_id_does_not_take_it() -> None:
    owners = LinkOwners()
    owners.absorb(_msg(_link("t1", "X1", None)))
    owners.absorb(_msg(_link("t2", "X1", "S2")))
    assert owners.owner("exchange", "X1") == "t1"
    assert owners.owner("salesforce", "S2") == "t2"
