"""The reconciler as OS processes on a real Kafka broker: SIGKILL mid-stream, restart, and a
second instance joining - the commands must be exactly those of an uninterrupted run."""

from __future__ import annotations

import json
import re
import uuid
from collections import Counter
from pathlib import Path

import aiohttp
import pytest

from services.core.bus.base import TopicPartition
from services.core.bus.kafka import KafkaBus, KafkaSettings
from services.core.envelopes import ChangeEvent, decode_change_event, decode_command, encode
from services.core.tenants import Tenant, User
from services.core.topics import Topics, tenant_key
from services.reconciler.core import TenantState, reconcile
from services.reconciler.handler import iso_ms
from tests.e2e.test_kill9 import read_all, run
from tests.support.processes import Proc
from tests.support.waiting import eventually

TENANTS = [Tenant(f"tenant-{i}", (User(f"user{i}@t{i}.test", f"005{i:015d}"),)) for i in range(6)]
ITEMS = 40  # per tenant


@pytest.fixture
def env(kafka_bootstrap: str, tmp_path: Path) -> dict[str, str]:
    return {
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "EXSF_BUS": "kafka",
        "EXSF_TOPIC_PREFIX": f"rk{uuid.uuid4().hex[:8]}.",
        "EXSF_PARTITIONS": "4",
    }


def event(t: Tenant, i: int, version: int) -> ChangeEvent:
    u = t.users[0].mailbox
    return ChangeEvent(
        tenant_id=t.tenant_id, user=u, source="exchange", entity="contact", source_id=f"{t.tenant_id}-item-{i}",
        op="upsert", version=f"ck{version}", observed_at="2026-11-29T10:00:00Z",
        modified_at=f"2026-11-29T10:{version:02d}:00Z",
        record={"given_name": f"G{i}", "family_name": "F", "email": f"p{i}@{t.tenant_id}.test",
                "job_title": f"v{version}"},
    )


async def assigned(side_port: int) -> int:
    """Partitions the instance reports owning (-1 while its side server is not up)."""
    try:
        async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{side_port}/metrics") as r:
            m = re.search(r'exsf_assigned_partitions\{service="reconciler"\} (\d+)', await r.text())
            return int(float(m.group(1))) if m else -1
    except aiohttp.ClientError:
        return -1


async def test_reconciler_sigkill_restart_and_scale_out(env: dict[str, str], tmp_path: Path,
                                                        kafka_bootstrap: str) -> None:
    topics = Topics.with_prefix(env["EXSF_TOPIC_PREFIX"])
    setup = Proc("topics", ["topics", "create"], env, tmp_path / "topics.log").start()
    assert setup.popen is not None and setup.popen.wait(120) == 0, setup.log_tail()
    for t in TENANTS:
        f = tmp_path / f"{t.tenant_id}.json"
        users = [{"mailbox": u.mailbox, "salesforce_user_id": u.salesforce_user_id} for u in t.users]
        f.write_text(json.dumps({"tenant_id": t.tenant_id, "users": users}))
        put = Proc("put", ["tenants", "put", str(f)], env, tmp_path / "put.log").start()
        assert put.popen is not None and put.popen.wait(120) == 0, put.log_tail()

    bus = KafkaBus(KafkaSettings(bootstrap_servers=kafka_bootstrap))
    await bus.start()
    producer = bus.producer()
    await producer.start()
    for i in range(ITEMS):
        for t in TENANTS:
            await producer.send(topics.changes_exchange, encode(event(t, i, 1)), key=tenant_key(t.tenant_id))
    await producer.send_and_wait(topics.changes_exchange, encode(event(TENANTS[0], 0, 1)),
                                 key=tenant_key("tenant-0"))  # a redelivery, as a retry would send
    total = ITEMS * len(TENANTS)
    procs: list[Proc] = []
    try:
        a = run("reconcilerA", ["run", "reconciler"], {**env, "EXSF_STATE_DIR": str(tmp_path / "a")}, tmp_path)
        procs.append(a)

        async def some_commands() -> bool:
            return len(await read_all(bus, topics.commands_salesforce)) > 0

        await eventually(some_commands, "reconciler A emits commands")
        a.kill9()
        b = run("reconcilerB", ["run", "reconciler"], {**env, "EXSF_STATE_DIR": str(tmp_path / "b")}, tmp_path)
        procs.append(b)

        async def all_commands() -> bool:
            return len(await read_all(bus, topics.commands_salesforce)) >= total

        await eventually(all_commands, "every create command after the restart", 120)

        # Expected: the pure core over the same inputs, with the same 'now' (input timestamps).
        n = await bus.partitions_for(topics.changes_exchange)
        c = bus.consumer([topics.changes_exchange], group_id=None,
                         assign=[TopicPartition(topics.changes_exchange, p) for p in range(n)])
        await c.start()
        for p in range(n):
            c.seek(TopicPartition(topics.changes_exchange, p), 0)
        inputs = []
        while len(inputs) < total + 1:
            for msgs in (await c.getmany(timeout_ms=500)).values():
                inputs.extend(msgs)
        await c.stop()
        states = {t.tenant_id: TenantState(t.tenant_id) for t in TENANTS}
        by_id = {t.tenant_id: t for t in TENANTS}
        expected = []
        for m in sorted(inputs, key=lambda m: (m.partition, m.offset)):
            ev = decode_change_event(m.value or b"")
            d = reconcile(states[ev.tenant_id], by_id[ev.tenant_id], ev, iso_ms(m.timestamp_ms))
            states[ev.tenant_id].apply(d.changes)
            expected.extend(cmd.command_id for cmd in d.commands)
        got = [decode_command(v).command_id for v in await read_all(bus, topics.commands_salesforce)]
        dupes = [k for k, v in Counter(got).items() if v > 1]
        assert not dupes, f"{len(dupes)} commands were emitted twice"
        assert sorted(got) == sorted(expected), "the commands differ from an uninterrupted run"

        # A second instance joins: it takes half the partitions, with their state restored,
        # so newer versions of known items produce no second create.
        side_b = b.side_port
        c2 = run("reconcilerC", ["run", "reconciler"], {**env, "EXSF_STATE_DIR": str(tmp_path / "c")}, tmp_path)
        procs.append(c2)
        assert side_b is not None and c2.side_port is not None

        async def split() -> bool:
            return await assigned(side_b) == 2 and await assigned(c2.side_port or 0) == 2

        await eventually(split, "B and C own two partitions each", 120)
        for t in TENANTS:
            for i in range(ITEMS):
                await producer.send(topics.changes_exchange, encode(event(t, i, 2)), key=tenant_key(t.tenant_id))
        await producer.send_and_wait(topics.changes_exchange, encode(event(TENANTS[0], 0, 2)),
                                     key=tenant_key("tenant-0"))
        marker = ChangeEvent(tenant_id="tenant-5", user="user5@t5.test", source="exchange", entity="contact",
                             source_id="tenant-5-new", op="upsert", version="ck1", observed_at="2026-11-29T11:00:00Z",
                             modified_at="2026-11-29T11:00:00Z", record={"given_name": "New", "family_name": "One"})
        await producer.send_and_wait(topics.changes_exchange, encode(marker), key=tenant_key("tenant-5"))

        async def marker_seen() -> bool:
            return any(decode_command(v).fields.get("given_name") == "New"
                       for v in await read_all(bus, topics.commands_salesforce))

        await eventually(marker_seen, "the new item after the scale-out is processed", 120)
        cmds = [decode_command(v) for v in await read_all(bus, topics.commands_salesforce)]
        creates = Counter(cmd.link_id for cmd in cmds if cmd.action == "create")
        assert max(creates.values()) == 1, "an item was created twice: state was not restored"
        assert len(creates) == total + 1
    finally:
        for p in reversed(procs):
            p.kill9()
        await producer.stop()
        await bus.stop()
