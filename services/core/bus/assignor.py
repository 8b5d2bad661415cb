"""Co-partitioned group assignment: partition n of every subscribed topic goes to one member.

Our processors open one transactional producer per partition *number* (`...-<n>`) and read
partition n of several input topics through it. aiokafka's default round robin spreads the
sorted topic-partitions over members, so with 12 partitions and 5 or 7 members partition n
of two topics lands on two members, which then open the same transactional id and fence
each other. This assignor spreads partition numbers (not topic-partitions) over members by
range, so every member owns the same numbers of every topic it reads. The embedded bus uses
the same pure function, so both buses agree.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Iterable, Mapping, Sequence

from aiokafka.cluster import ClusterMetadata
from aiokafka.coordinator.assignors.abstract import AbstractPartitionAssignor
from aiokafka.coordinator.protocol import (
    ConsumerProtocolMemberAssignment,
    ConsumerProtocolMemberMetadata,
)

log = logging.getLogger(__name__)


def owner_of(number: int, members: Sequence[str], partitions: int) -> str:
    """The member that owns partition `number` (members sorted, same list for every topic)."""
    return members[number * len(members) // partitions]


def copartition(
    subscriptions: Mapping[str, Iterable[str]], partition_counts: Mapping[str, int]
) -> dict[str, dict[str, list[int]]]:
    """{member: {topic: [partition numbers]}}: deterministic, a pure function of its input.

    Numbers are laid out over the sorted members subscribed to a topic by range over the
    largest partition count in the group, so members with the same subscription (every
    group of ours) own the same numbers of every topic. Topics with fewer partitions simply
    lack the higher numbers.
    """
    subs = {m: set(ts) for m, ts in subscriptions.items()}
    topics = sorted({t for ts in subs.values() for t in ts if partition_counts.get(t, 0) > 0})
    width = max((partition_counts[t] for t in topics), default=0)
    plan: dict[str, dict[str, list[int]]] = {m: {} for m in subs}
    for t in topics:
        candidates = sorted(m for m, ts in subs.items() if t in ts)
        for p in range(partition_counts[t]):
            plan[owner_of(p, candidates, width)].setdefault(t, []).append(p)
    return plan


class CoPartitionedAssignor(AbstractPartitionAssignor):
    """aiokafka assignor running `copartition` on the group leader."""

    name = "exsf-copartitioned"
    version = 0

    @classmethod
    def assign(
        cls,
        cluster: ClusterMetadata,
        members: Mapping[str, ConsumerProtocolMemberMetadata],
    ) -> dict[str, ConsumerProtocolMemberAssignment]:
        counts: dict[str, int] = {}
        for topic in {t for md in members.values() for t in md.subscription}:
            parts = cluster.partitions_for_topic(topic)
            if parts is None:
                log.warning("no partition metadata for topic %s", topic)
                continue
            # Partition numbers of a Kafka topic are always 0..n-1.
            counts[topic] = len(parts)
        plan = copartition({m: md.subscription for m, md in members.items()}, counts)
        out: dict[str, ConsumerProtocolMemberAssignment] = collections.OrderedDict()
        for member in members:
            out[member] = ConsumerProtocolMemberAssignment(cls.version, sorted(plan[member].items()), b"")
        return out

    @classmethod
    def metadata(cls, topics: Iterable[str]) -> ConsumerProtocolMemberMetadata:
        return ConsumerProtocolMemberMetadata(cls.version, list(topics), b"")

    @classmethod
    def on_assignment(cls, assignment: ConsumerProtocolMemberAssignment) -> None:
        pass
