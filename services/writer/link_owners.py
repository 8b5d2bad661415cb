"""Which tenant's link holds an item id: a global table followed from exsf.state.

The writer refuses a command whose target id belongs to another tenant's link (issue 6,
tenant isolation). The reconciler's changelog already names every id it links (current
and retired, both sides) with the tenant, and is written in the same transaction as the
commands that target those ids, so following it gives the owner of every id a command can
name. Each writer reads all partitions (ids of any tenant may be named by a faulty
command of any other), like a Kafka Streams GlobalKTable.

Ids never change tenant (Graph and Salesforce ids are unique across tenants and never
reused), so a tombstone for a link does not drop its ids: what was once another tenant's
stays refused. Memory: one short string pair per id, about 150 bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Mapping
from typing import Any

import orjson
import structlog

from services.core.bus.base import Bus, Consumer, Message, TopicPartition

log = structlog.get_logger(__name__)

POLL_MS = 500


def ids_of(value: Mapping[str, Any]) -> Iterable[tuple[str, str]]:
    """(side, id) of every item a link record names, current and retired."""
    for side in ("exchange", "salesforce"):
        sd = value.get(side)
        if not isinstance(sd, Mapping):
            continue
        current = sd.get("id")
        if isinstance(current, str) and current:
            yield side, current
        for old in sd.get("retired") or ():
            if isinstance(old, str) and old:
                yield side, old


class LinkOwners:
    """(side, id) -> tenant id, kept current by `follow`."""

    def __init__(self) -> None:
        self._owner: dict[tuple[str, str], str] = {}
        self.caught_up = asyncio.Event()
        self.skipped = 0  # records that could not be read (logged once each)

    def __len__(self) -> int:
        return len(self._owner)

    def owner(self, side: str, item_id: str) -> str | None:
        return self._owner.get((side, item_id))

    def absorb(self, message: Message) -> None:
        if message.value is None:
            return  # a deleted link: its ids stay with their tenant (module docstring)
        try:
            value = orjson.loads(message.value)
            tenant = value["tenant_id"]
            if not isinstance(tenant, str):
                raise TypeError("tenant_id is not a string")
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            self.skipped += 1
            log.warning("writer.link_owners_unreadable", partition=message.partition, offset=message.offset,
                        error=f"{type(exc).__name__}: {exc}")
            return
        for side, item_id in ids_of(value):
            prev = self._owner.setdefault((side, item_id), tenant)
            if prev != tenant:
                # Two tenants claim one id: keep the first claim; every later command of the
                # second tenant naming it is refused, which is the safe side.
                log.error("writer.link_owner_clash", side=side, item_id=item_id, first=prev, second=tenant)

    async def follow(self, bus: Bus, topic: str) -> None:
        """Read `topic` from the start, set `caught_up` once the end seen at start is
        reached, then keep following it until cancelled."""
        partitions = await bus.partitions_for(topic)
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        ends = await bus.end_offsets(tps)
        consumer: Consumer = bus.consumer([topic], group_id=None, assign=tps)
        await consumer.start()
        try:
            for tp in tps:
                consumer.seek(tp, 0)
            pending = {tp for tp in tps if ends.get(tp, 0) > 0}
            if not pending:
                self._ready()
            while True:
                batch = await consumer.getmany(timeout_ms=POLL_MS)
                for msgs in batch.values():
                    for m in msgs:
                        self.absorb(m)
                if pending:
                    for tp in list(pending):
                        if await consumer.position(tp) >= ends[tp]:
                            pending.discard(tp)
                    if not pending:
                        self._ready()
        finally:
            with contextlib.suppress(Exception):
                await consumer.stop()

    def _ready(self) -> None:
        if not self.caught_up.is_set():
            log.info("writer.link_owners_loaded", ids=len(self._owner), skipped=self.skipped)
            self.caught_up.set()
