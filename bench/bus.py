"""Bus throughput: messages/s produced and consumed through each backend, beside raw
aiokafka doing the same work on the same broker in the same run (the baseline).

    python -m bench.bus [--messages 20000] [--out bench/results/bus.json]

Messages are ~1 KB orjson ChangeEvents keyed by tenant (20 tenants over 6 partitions).
Transactional rows commit one transaction per `--batch` messages, as the ingestors do per
delta page. Kafka rows need KAFKA_BOOTSTRAP_SERVERS; without it only the embedded rows run
(and the output says so).
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
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from services.core.bus.base import Bus, TopicPartition, TopicSpec
from services.core.bus.embedded import EmbeddedBus
from services.core.bus.kafka import KafkaBus, KafkaSettings
from services.core.envelopes import ChangeEvent, encode

PARTITIONS = 6
TENANTS = [f"tenant-{i:02d}" for i in range(20)]


def payloads(n: int) -> list[tuple[bytes, bytes]]:
    out = []
    for i in range(n):
        t = TENANTS[i % len(TENANTS)]
        ev = ChangeEvent(
            tenant_id=t,
            user=f"user{i % 7}@contoso.test",
            source="exchange",
            entity="contact",
            source_id=f"AAMkAG{i:012d}",
            op="upsert",
            version=f"ck-{i}",
            observed_at="2026-11-29T10:00:00Z",
            record={"given_name": "Ann", "family_name": "Example", "notes": "x" * 700, "email": f"a{i}@x.test"},
        )
        out.append((t.encode(), encode(ev)))
    return out


async def bus_produce(bus: Bus, topic: str, msgs: list[tuple[bytes, bytes]], txn_batch: int | None) -> float:
    p = bus.producer(transactional_id=f"bench-{uuid.uuid4().hex[:8]}" if txn_batch else None)
    await p.start()
    t0 = time.perf_counter()
    if txn_batch:
        for i in range(0, len(msgs), txn_batch):
            async with p.transaction():
                for k, v in msgs[i : i + txn_batch]:
                    await p.send(topic, v, key=k)
    else:
        for k, v in msgs[:-1]:
            await p.send(topic, v, key=k)
        await p.send_and_wait(topic, msgs[-1][1], key=msgs[-1][0])
    elapsed = time.perf_counter() - t0
    await p.stop()
    return elapsed


async def bus_consume(bus: Bus, topic: str, n: int) -> float:
    c = bus.consumer([topic], group_id=None, assign=[TopicPartition(topic, p) for p in range(PARTITIONS)])
    await c.start()
    for p in range(PARTITIONS):
        c.seek(TopicPartition(topic, p), 0)
    got = 0
    t0 = time.perf_counter()
    while got < n:
        for recs in (await c.getmany(timeout_ms=1000, max_records=5000)).values():
            got += len(recs)
    elapsed = time.perf_counter() - t0
    await c.stop()
    return elapsed


async def raw_produce(bootstrap: str, topic: str, msgs: list[tuple[bytes, bytes]], txn_batch: int | None) -> float:
    p = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        enable_idempotence=True,
        acks="all",
        linger_ms=5,
        max_batch_size=1024 * 1024,
        transactional_id=f"raw-{uuid.uuid4().hex[:8]}" if txn_batch else None,
    )
    await p.start()
    t0 = time.perf_counter()
    if txn_batch:
        for i in range(0, len(msgs), txn_batch):
            async with p.transaction():
                for k, v in msgs[i : i + txn_batch]:
                    await p.send(topic, v, key=k)
    else:
        for k, v in msgs[:-1]:
            await p.send(topic, v, key=k)
        await p.send_and_wait(topic, msgs[-1][1], key=msgs[-1][0])
    elapsed = time.perf_counter() - t0
    await p.stop()
    return elapsed


async def raw_consume(bootstrap: str, topic: str, n: int) -> float:
    c = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        isolation_level="read_committed",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await c.start()
    got = 0
    t0 = time.perf_counter()
    while got < n:
        for recs in (await c.getmany(timeout_ms=1000, max_records=5000)).values():
            got += len(recs)
    elapsed = time.perf_counter() - t0
    await c.stop()
    return elapsed


def row(name: str, n: int, produce_s: float, consume_s: float) -> dict[str, Any]:
    return {
        "variant": name,
        "messages": n,
        "produce_msgs_per_s": round(n / produce_s, 1),
        "consume_msgs_per_s": round(n / consume_s, 1),
        "produce_seconds": round(produce_s, 4),
        "consume_seconds": round(consume_s, 4),
    }


async def run(n: int, batch: int) -> dict[str, Any]:
    msgs = payloads(n)
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    with tempfile.TemporaryDirectory() as d:
        for path in (":memory:", str(Path(d) / "bus.sqlite")):
            kind = "memory" if path == ":memory:" else "file"
            for txn in (None, batch):
                bus = EmbeddedBus(path)
                await bus.start()
                topic = f"bench.{uuid.uuid4().hex[:8]}"
                await bus.create_topics([TopicSpec(topic, PARTITIONS)])
                ps = await bus_produce(bus, topic, msgs, txn)
                cs = await bus_consume(bus, topic, n)
                await bus.stop()
                rows.append(row(f"embedded-{kind}{'-txn' if txn else ''}", n, ps, cs))
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if bootstrap:
        kbus = KafkaBus(KafkaSettings(bootstrap_servers=bootstrap))
        await kbus.start()
        for txn in (None, batch):
            topic = f"bench.{uuid.uuid4().hex[:8]}"
            await kbus.create_topics([TopicSpec(topic, PARTITIONS)])
            ps = await raw_produce(bootstrap, topic, msgs, txn)
            cs = await raw_consume(bootstrap, topic, n)
            rows.append(row(f"raw-aiokafka{'-txn' if txn else ''}", n, ps, cs))
            topic = f"bench.{uuid.uuid4().hex[:8]}"
            await kbus.create_topics([TopicSpec(topic, PARTITIONS)])
            ps = await bus_produce(kbus, topic, msgs, txn)
            cs = await bus_consume(kbus, topic, n)
            rows.append(row(f"kafka-bus{'-txn' if txn else ''}", n, ps, cs))
        await kbus.stop()
    else:
        notes.append("KAFKA_BOOTSTRAP_SERVERS not set: Kafka rows (and the raw aiokafka baseline) skipped")
    base = {r["variant"]: r for r in rows}
    for r in rows:
        ref = base.get("raw-aiokafka-txn" if r["variant"].endswith("-txn") else "raw-aiokafka")
        if ref and r is not ref:
            r["produce_vs_raw_aiokafka"] = round(r["produce_msgs_per_s"] / ref["produce_msgs_per_s"], 3)
            r["consume_vs_raw_aiokafka"] = round(r["consume_msgs_per_s"] / ref["consume_msgs_per_s"], 3)
    return {
        "benchmark": "bus",
        "message_bytes": len(msgs[0][1]),
        "partitions": PARTITIONS,
        "transaction_batch": batch,
        "python": platform.python_version(),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "rows": rows,
        "notes": notes,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=20000)
    ap.add_argument("--batch", type=int, default=100, help="messages per transaction in -txn rows")
    ap.add_argument("--out", default="bench/results/bus.json")
    args = ap.parse_args()
    result = asyncio.run(run(args.messages, args.batch))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    for r in result["rows"]:
        print(
            f"{r['variant']:24} produce {r['produce_msgs_per_s']:>10.0f}/s   consume {r['consume_msgs_per_s']:>10.0f}/s"
        )
    print(f"written to {out}")


if __name__ == "__main__":
    main()
