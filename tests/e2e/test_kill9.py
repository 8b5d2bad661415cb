"""End-to-end on a real Kafka broker: services as separate OS processes, killed with
SIGKILL mid-stream and restarted; the read_committed view must hold every change exactly
once. These tests need Kafka (the `kafka_bootstrap` fixture fails loudly without it)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from pathlib import Path

import pytest

from services.core.bus.base import TopicPartition
from services.core.bus.kafka import KafkaBus, KafkaSettings
from services.core.envelopes import decode_change_event
from services.core.topics import Topics
from services.emulators.graph.admin_client import GraphAdminClient
from tests.support.processes import Proc, free_port, wait_http
from tests.support.waiting import eventually

ALICE = "alice@contoso.test"
PARTITIONS = "2"


@pytest.fixture
def env(kafka_bootstrap: str, tmp_path: Path) -> dict[str, str]:
    return {
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "EXSF_BUS": "kafka",
        "EXSF_TOPIC_PREFIX": f"e2e{uuid.uuid4().hex[:8]}.",
        "EXSF_PARTITIONS": PARTITIONS,
        "EXSF_STATE_DIR": str(tmp_path / "state"),
    }


def run(name: str, args: list[str], env: dict[str, str], tmp_path: Path, **extra: str) -> Proc:
    side = free_port()
    p = Proc(name, args, {**env, "EXSF_SIDE_PORT": str(side), **extra}, tmp_path / f"{name}.log", side_port=side)
    return p.start()


async def read_all(bus: KafkaBus, topic: str) -> list[bytes]:
    n = await bus.partitions_for(topic)
    c = bus.consumer([topic], group_id=None, assign=[TopicPartition(topic, p) for p in range(n)])
    await c.start()
    ends = await bus.end_offsets([TopicPartition(topic, p) for p in range(n)])
    for p in range(n):
        c.seek(TopicPartition(topic, p), 0)
    out: list[bytes] = []
    idle = 0
    while idle < 5:
        got = await c.getmany(timeout_ms=300)
        idle = 0 if got else idle + 1
        for msgs in got.values():
            out.extend(m.value or b"" for m in msgs)
        done = [await c.position(TopicPartition(topic, p)) >= ends[TopicPartition(topic, p)] for p in range(n)]
        if all(done) and not got:
            break
    await c.stop()
    return out


async def test_exchange_ingestor_killed_mid_round_publishes_each_change_once(
    env: dict[str, str], tmp_path: Path, kafka_bootstrap: str
) -> None:
    topics = Topics.with_prefix(env["EXSF_TOPIC_PREFIX"])
    gport = free_port()
    emu = Proc("graph", ["emulate", "graph", "--port", str(gport), "--mailbox", ALICE], env,
               tmp_path / "graph.log").start()
    procs = [emu]
    try:
        await wait_http(f"http://127.0.0.1:{gport}/_admin/counters", 60, emu)
        root = f"http://127.0.0.1:{gport}"
        admin = GraphAdminClient(root)
        topics_cmd = Proc("topics", ["topics", "create"], env, tmp_path / "topics.log").start()
        assert topics_cmd.popen is not None and topics_cmd.popen.wait(120) == 0, topics_cmd.log_tail()
        tenant = {
            "tenant_id": "contoso", "users": [{"mailbox": ALICE, "salesforce_user_id": "005000000000001AAA"}],
            "graph": {"base_url": root + "/v1.0", "authority": root, "azure_tenant_id": "t", "client_id": "x",
                      "client_secret_ref": "literal:x"},
            "entities": ["contact"], "poll_seconds": 1,
        }
        (tmp_path / "tenant.json").write_text(json.dumps(tenant))
        put = Proc("put", ["tenants", "put", str(tmp_path / "tenant.json")], env, tmp_path / "put.log").start()
        assert put.popen is not None and put.popen.wait(120) == 0, put.log_tail()

        # A first run enrols the mailbox (folders) and finishes its first round; then it stops.
        ing = run("ingest1", ["run", "ingest-exchange"], env, tmp_path, EXSF_GRAPH_PAGE_SIZE="5",
                  EXSF_WEBHOOK_PORT=str(free_port()))
        procs.append(ing)
        await ing.wait_ready()
        await eventually(lambda: _has_folder(admin), "mailbox prepared")
        assert ing.terminate() == 0, ing.log_tail()
        # While it is down, 60 contacts arrive: the next round spans 12 pages of 5.
        for i in range(60):
            await admin.create_item(ALICE, "contact", {"givenName": f"N{i}", "surname": "Bulk"},
                                    container="Salesforce Contacts")
        await admin.faults(delay_ms=300)  # slow pages, so the kill lands mid-round
        bus = KafkaBus(KafkaSettings(bootstrap_servers=kafka_bootstrap))
        await bus.start()
        ing2 = run("ingest2", ["run", "ingest-exchange"], env, tmp_path, EXSF_GRAPH_PAGE_SIZE="5",
                   EXSF_WEBHOOK_PORT=str(free_port()))
        procs.append(ing2)

        async def some_published() -> bool:
            n = len(await read_all(bus, topics.changes_exchange))
            return 0 < n < 60

        await eventually(some_published, "part of the round published")
        ing2.kill9()
        assert len(await read_all(bus, topics.changes_exchange)) < 60, "the kill came after the round ended"
        await admin.faults(delay_ms=0)
        ing3 = run("ingest3", ["run", "ingest-exchange"], env, tmp_path, EXSF_GRAPH_PAGE_SIZE="5",
                   EXSF_WEBHOOK_PORT=str(free_port()))
        procs.append(ing3)

        async def all_published() -> bool:
            evs = [decode_change_event(v) for v in await read_all(bus, topics.changes_exchange)]
            return len({e.source_id for e in evs}) >= 60

        await eventually(all_published, "every contact published after the restart", 120)
        evs = [decode_change_event(v) for v in await read_all(bus, topics.changes_exchange)]
        counts = Counter(e.event_id for e in evs)
        assert max(counts.values()) == 1, f"published twice: {[k for k, v in counts.items() if v > 1][:3]}"
        assert len({e.source_id for e in evs}) == 60
        await bus.stop()
        await admin.close()
    finally:
        for p in reversed(procs):
            p.kill9()


async def _has_folder(admin: GraphAdminClient) -> bool:
    return any(c.get("displayName") == "Salesforce Contacts" for c in await admin.containers(ALICE))


async def test_kafka_unreachable_is_a_clear_failure(tmp_path: Path) -> None:
    env = {"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1", "EXSF_BUS": "kafka", "EXSF_SIDE_PORT": str(free_port())}
    p = Proc("topics", ["topics", "create"], env, tmp_path / "t.log").start()
    assert p.popen is not None
    rc = await asyncio.to_thread(p.popen.wait, 120)
    assert rc == 2
    out = p.log_tail(200)
    assert "cannot reach Kafka at 127.0.0.1:1" in out and "Traceback" not in out


async def test_salesforce_ingestor_killed_mid_stream_publishes_each_change_once(
    env: dict[str, str], tmp_path: Path, kafka_bootstrap: str
) -> None:
    from services.emulators.salesforce.admin_client import SalesforceAdmin

    topics = Topics.with_prefix(env["EXSF_TOPIC_PREFIX"])
    sport = free_port()
    emu = Proc("salesforce", ["emulate", "salesforce", "--port", str(sport), "--user", ALICE], env,
               tmp_path / "sf.log").start()
    procs = [emu]
    try:
        base = f"http://localhost:{sport}"
        await wait_http(f"{base}/_admin/counters", 60, emu)
        admin = SalesforceAdmin(base)
        ids = await admin.users()
        topics_cmd = Proc("topics", ["topics", "create"], env, tmp_path / "topics.log").start()
        assert topics_cmd.popen is not None and topics_cmd.popen.wait(120) == 0, topics_cmd.log_tail()
        tenant = {
            "tenant_id": "contoso", "users": [{"mailbox": ALICE, "salesforce_user_id": ids[ALICE]}],
            "salesforce": {"login_url": base, "client_id": "x", "username": ALICE, "client_secret_ref": "literal:x",
                           "password_ref": "literal:password"},
            "entities": ["contact"],
        }
        (tmp_path / "tenant.json").write_text(json.dumps(tenant))
        put = Proc("put", ["tenants", "put", str(tmp_path / "tenant.json")], env, tmp_path / "put.log").start()
        assert put.popen is not None and put.popen.wait(120) == 0, put.log_tail()
        bus = KafkaBus(KafkaSettings(bootstrap_servers=kafka_bootstrap))
        await bus.start()

        ing = run("sfingest1", ["run", "ingest-salesforce"], env, tmp_path)
        procs.append(ing)
        await ing.wait_ready()
        first = await admin.create("Contact", {"LastName": "First"}, as_user=ALICE)

        async def published(n: int) -> bool:
            return len(await read_all(bus, topics.changes_salesforce)) >= n

        await eventually(lambda: published(1), "the stream is live")
        created = [first]
        for i in range(20):
            created.append(await admin.create("Contact", {"LastName": f"Burst{i}"}, as_user=ALICE))
        # SIGKILL while the burst is being delivered (where exactly it lands varies; every
        # landing point must end with each change published once).
        ing.kill9()
        for i in range(20):
            created.append(await admin.create("Contact", {"LastName": f"WhileDown{i}"}, as_user=ALICE))
        ing2 = run("sfingest2", ["run", "ingest-salesforce"], env, tmp_path)
        procs.append(ing2)

        async def everything() -> bool:
            evs = [decode_change_event(v) for v in await read_all(bus, topics.changes_salesforce)]
            return {e.source_id for e in evs} >= set(created)

        await eventually(everything, "every change published after the restart", 120)
        evs = [decode_change_event(v) for v in await read_all(bus, topics.changes_salesforce)]
        counts = Counter(e.event_id for e in evs)
        assert max(counts.values()) == 1, "an event was published twice"
        assert len(evs) == len(created)
        await bus.stop()
        await admin.close()
    finally:
        for p in reversed(procs):
            p.kill9()
