"""Key -> partition, identical to Kafka's default partitioner (murmur2), so that a tenant
maps to the same shard on the embedded bus, on Kafka, and in any Java tool."""

from __future__ import annotations

import itertools

from aiokafka.partitioner import murmur2

_round_robin = itertools.count()


def partition_for(key: bytes | None, partitions: int) -> int:
    if partitions <= 0:
        raise ValueError("a topic needs at least one partition")
    if key is None:
        return next(_round_robin) % partitions
    return (murmur2(key) & 0x7FFFFFFF) % partitions
