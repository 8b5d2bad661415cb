"""Reconciler throughput: pure-core decisions per second, and events per second through the
reconciler service on the embedded bus and (with KAFKA_BOOTSTRAP_SERVERS) real Kafka.

    python -m bench.reconcile [--events 5000] [--out bench/results/reconcile.json]

Core rows time `reconcile()` + `TenantState.apply()` for new items (create path), edits of
linked items (merge path) and redelivered events (dedupe path). Service rows time from the
first produced change to the last command read back, end to end through transactions.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import orjson

from services.core.bus.base import Bus, TopicPartition
from services.core.bus.embedded import EmbeddedBus
from services.core.bus.kafka import KafkaBus, KafkaSettings
from services.core.envelopes import ChangeEvent, CommandResult, encode
from services.core.sideserver import Health
from services.core.state_store import StateStore
from services.core.tenant_registry import TenantRegistry
from services.core.tenants import Tenant, User
from services.core.topics import Topics, tenant_key, topic_specs
from services.reconciler.core import TenantState, reconcile
from services.reconciler.service import ReconcilerService

TENANT = Tenant("bench", tuple(User(f"user{i}@bench.test", f"005{i:015d}") for i in range(10)))


def event(i: int, version: int = 1, **record: Any) -> ChangeEvent:
    rec = {"given_name": f"G{i}", "family_name": f"F{i}", "email": f"p{i}@bench.test", **record}
    return ChangeEvent(
        tenant_id="bench", user=f"user{i % 10}@bench.test", source="exchange", entity="contact",
        source_id=f"AAMk{i:08d}", op="upsert", version=f"ck{version}", observed_at="2026-11-29T10:00:00Z",
        modified_at=f"2026-11-29T10:{version:02d}:00Z", record=rec,
    )


def bench_core(n: int) -> list[dict[str, Any]]:
    state = TenantState("bench")
    rows = []
    t0 = time.perf_counter()
    creates = []
    for i in range(n):
        d = reconcile(state, TENANT, event(i), "2026-11-29T10:00:00Z")
        state.apply(d.changes)
        creates.extend(d.commands)
    rows.append(("core-new-items", n, time.perf_counter() - t0))
    t0 = time.perf_counter()
    for c in creates:
        r = CommandResult(command_id=c.command_id, tenant_id="bench", user=c.user, target=c.target, entity=c.entity,
                          link_id=c.link_id, status="applied", target_id=f"003{c.link_id[:15]}",
                          new_version="v1", modified_at="2026-11-29T10:00:30Z", record=c.fields)
        state.apply(reconcile(state, TENANT, r, "2026-11-29T10:00:30Z").changes)
    rows.append(("core-results", len(creates), time.perf_counter() - t0))
    t0 = time.perf_counter()
    for i in range(n):
        state.apply(reconcile(state, TENANT, event(i, 2, job_title="CTO"), "2026-11-29T10:02:00Z").changes)
    rows.append(("core-edits", n, time.perf_counter() - t0))
    t0 = time.perf_counter()
    for i in range(n):
        state.apply(reconcile(state, TENANT, event(i, 2, job_title="CTO"), "2026-11-29T10:02:00Z").changes)
    rows.append(("core-redeliveries", n, time.perf_counter() - t0))
    return [{"variant": name, "inputs": k, "decisions_per_s": round(k / s, 1), "seconds": round(s, 4)}
            for name, k, s in rows]


async def bench_service(bus: Bus, name: str, n: int) -> dict[str, Any]:
    prefix = f"bench{uuid.uuid4().hex[:6]}."
    topics = Topics.with_prefix(prefix)
    await bus.create_topics(topic_specs(4, prefix))
    await asyncio.sleep(0.5)
    await TenantRegistry(bus, topics.tenants).put(TENANT)
    p = bus.producer()
    await p.start()
    for i in range(n):
        await p.send(topics.changes_exchange, encode(event(i)), key=tenant_key("bench"))
    await p.send_and_wait(topics.changes_exchange, encode(event(n)), key=tenant_key("bench"))
    await p.stop()
    svc = ReconcilerService(bus, topics, Health(), store=StateStore(), group_id=prefix + "rec")
    reader = bus.consumer([topics.commands_salesforce], group_id=None,
                          assign=[TopicPartition(topics.commands_salesforce, q) for q in range(4)])
    await reader.start()
    for q in range(4):
        reader.seek(TopicPartition(topics.commands_salesforce, q), 0)
    t0 = time.perf_counter()
    task = asyncio.create_task(svc.run())
    got = 0
    while got < n + 1:
        for msgs in (await reader.getmany(timeout_ms=500)).values():
            got += len(msgs)
    elapsed = time.perf_counter() - t0
    svc.stop()
    await task
    await reader.stop()
    return {"variant": f"service-{name}", "events": n + 1, "events_per_s": round((n + 1) / elapsed, 1),
            "seconds": round(elapsed, 3), "note": "includes group join and state restore"}


async def run(n: int) -> dict[str, Any]:
    rows = bench_core(n)
    notes = []
    with tempfile.TemporaryDirectory() as d:
        eb = EmbeddedBus(Path(d) / "bus.sqlite")
        await eb.start()
        rows.append(await bench_service(eb, "embedded", n))
        await eb.stop()
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if bootstrap:
        kb = KafkaBus(KafkaSettings(bootstrap_servers=bootstrap))
        await kb.start()
        rows.append(await bench_service(kb, "kafka", n))
        await kb.stop()
    else:
        notes.append("KAFKA_BOOTSTRAP_SERVERS not set: the Kafka service row was skipped")
    return {"benchmark": "reconcile", "python": platform.python_version(), "cpus": os.cpu_count(),
            "rows": rows, "notes": notes}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=5000)
    ap.add_argument("--out", default="bench/results/reconcile.json")
    args = ap.parse_args()
    result = asyncio.run(run(args.events))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    for r in result["rows"]:
        rate = r.get("decisions_per_s", r.get("events_per_s"))
        print(f"{r['variant']:24} {rate:>10.0f}/s")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
