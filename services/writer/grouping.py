"""Pure grouping of one Kafka batch of commands into waves of API-call groups.

A wave holds at most one command per link: the k-th command of a link in the batch goes
to wave k, and wave k+1 starts only when wave k is done, so two commands for the same
link (an update after its create, a delete after an update) reach the target in the
order they were produced. Within a wave, commands are grouped by what one batched call
can carry: Graph `$batch` is per mailbox, so Exchange groups are per tenant, user, entity
and action; Salesforce sObject Collections are per org and sObject, so Salesforce groups
are per tenant, entity and action (the user only decides OwnerId, a field).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from services.core.envelopes import Command


@dataclass(frozen=True, slots=True)
class GroupKey:
    tenant_id: str
    target: str
    user: str  # "" for Salesforce groups
    entity: str
    action: str


@dataclass(frozen=True, slots=True)
class Item:
    """A decoded command at its position in the batch (the position keys every outcome)."""

    index: int
    command: Command


Wave = dict[GroupKey, list[Item]]


def link_key(c: Command) -> tuple[str, str, str]:
    # The same link has independent items on the two targets; order matters per target.
    return (c.tenant_id, c.target, c.link_id)


def group_key(c: Command) -> GroupKey:
    user = c.user.lower() if c.target == "exchange" else ""
    return GroupKey(c.tenant_id, c.target, user, c.entity, c.action)


def waves(items: list[Item]) -> list[Wave]:
    """`items` in consumption order -> waves; each wave's groups keep that order."""
    seen: dict[tuple[str, str, str], int] = defaultdict(int)
    out: list[Wave] = []
    for it in items:
        k = link_key(it.command)
        n = seen[k]
        seen[k] = n + 1
        while len(out) <= n:
            out.append({})
        out[n].setdefault(group_key(it.command), []).append(it)
    return out


def chunks(items: list[Item], size: int) -> list[list[Item]]:
    return [items[i : i + size] for i in range(0, len(items), size)]
