"""What applying one command came to, and the CommandResult built from it.

`Done` is final for this delivery (its result is published; `deadletter` names the reason
when the command is also copied to exsf.deadletter). `Later` means "not applied, try again
after `backoff_s`" (throttling): the batch stops there and the partition is paused.
`Transient` is internal to the appliers' bounded retry loop (retry.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from services.core.envelopes import Command, CommandResult, Status


@dataclass(frozen=True, slots=True)
class Done:
    result: CommandResult
    deadletter: str | None = None


@dataclass(frozen=True, slots=True)
class Later:
    backoff_s: float
    reason: str


@dataclass(frozen=True, slots=True)
class Transient:
    reason: str


Outcome = Done | Later


def result_of(
    cmd: Command,
    status: Status,
    *,
    target_id: str | None = None,
    new_version: str | None = None,
    record: dict[str, Any] | None = None,
    modified_at: str | None = None,
    error: str | None = None,
) -> CommandResult:
    return CommandResult(
        command_id=cmd.command_id,
        tenant_id=cmd.tenant_id,
        user=cmd.user,
        target=cmd.target,
        entity=cmd.entity,
        link_id=cmd.link_id,
        status=status,
        target_id=target_id if target_id is not None else cmd.target_id,
        new_version=new_version,
        record=record,
        modified_at=modified_at,
        error=error,
    )


def applied(cmd: Command, **kw: Any) -> Done:
    return Done(result_of(cmd, "applied", **kw))


def gone(cmd: Command, error: str | None = None) -> Done:
    return Done(result_of(cmd, "gone", error=error))


def failed(cmd: Command, reason: str) -> Done:
    """Permanent: the result says `failed` and the command goes to exsf.deadletter too."""
    return Done(result_of(cmd, "failed", error=reason), deadletter=reason)
