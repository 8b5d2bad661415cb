"""Dump a deployment's topics to JSON lines, for reading a failed end-to-end run afterwards.

One file per topic (`<dir>/<topic>.jsonl`), one line per committed record: partition,
offset, key and the value decoded as JSON where it is JSON. A failed scale-out run leaves
them next to the per-pod logs, so the path of one item (change event, command, result,
audit record) can be followed without re-running it.
"""

from __future__ import annotations

from pathlib import Path

import orjson

from services.core.bus.kafka import KafkaBus, KafkaSettings
from services.core.topics import ALL_TOPICS


def _decode(raw: bytes | None) -> object:
    if raw is None:
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw.decode(errors="replace")


async def dump_topics(bootstrap: str, prefix: str, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    bus = KafkaBus(KafkaSettings(bootstrap))
    await bus.start()
    try:
        for name in ALL_TOPICS:
            topic = prefix + name
            with (out_dir / f"{name}.jsonl").open("wb") as f:
                async for batch in bus.read_batches(topic):
                    for m in batch:
                        f.write(orjson.dumps({"p": m.partition, "o": m.offset, "ts": m.timestamp_ms,
                                              "key": (m.key or b"").decode(errors="replace"),
                                              "value": _decode(m.value)}) + b"\n")
    finally:
        await bus.stop()
