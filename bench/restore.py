"""Restore benchmark: time and peak RSS to restore one exsf.state partition of N records.

Usage: python -m bench.restore [--records 100000]  (Kafka bus if KAFKA_BOOTSTRAP_SERVERS is
set, else the embedded bus). Prints one JSON object, with the machine it ran on."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import tempfile
import time
import uuid
from pathlib import Path

from services.core.bus.base import Bus, TopicSpec
from services.core.bus.embedded import EmbeddedBus
from services.core.bus.kafka import KafkaBus, KafkaSettings
from services.core.state_store import RESTORE_BATCH, StateStore


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def main(records: int) -> dict[str, object]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-restore-"))
    boot = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    bus: Bus = KafkaBus(KafkaSettings(bootstrap_servers=boot)) if boot else EmbeddedBus(tmp / "bus.sqlite")
    await bus.start()
    topic = f"bench{uuid.uuid4().hex[:8]}.exsf.state"
    await bus.create_topics([TopicSpec(topic, 1, compacted=True)])
    await asyncio.sleep(1 if boot else 0)
    p = bus.producer()
    await p.start()
    value = b'{"tenant_id":"t","entity":"contact","status":"linked"' + b" " * 300 + b"}"
    for i in range(records):
        await p.send(topic, value, key=f"t/contact/L{i}".encode(), partition=0)
    await p.send_and_wait(topic, value, key=b"t/contact/last", partition=0)
    await p.stop()
    rss_before = _rss_mb()
    store = StateStore(tmp / "state.sqlite")
    t0 = time.perf_counter()
    n = await store.restore(bus, topic, 0)
    seconds = time.perf_counter() - t0
    await bus.stop()
    return {
        "benchmark": "restore",
        "bus": bus.name,
        "records": records,
        "keys_restored": n,
        "restore_s": round(seconds, 2),
        "records_per_s": round(n / seconds),
        "batch_size": RESTORE_BATCH,
        "peak_batch": store.restore_peak_batch,
        "peak_rss_mb_before_restore": round(rss_before, 1),
        "peak_rss_mb": round(_rss_mb(), 1),
        "machine": {
            "nproc": os.cpu_count(),
            "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
            "python": platform.python_version(),
        },
    }


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=100_000)
    print(json.dumps(asyncio.run(main(ap.parse_args().records)), indent=2))
