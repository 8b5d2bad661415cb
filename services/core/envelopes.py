"""The three envelopes that travel between services (docs/design.md §6).

Records are frozen dataclasses serialised with orjson. Every envelope carries a schema
version; `decode_*` validates field by field and raises `EnvelopeError` naming the bad
field, so a malformed message is rejected at the edge of a service (and dead-lettered)
instead of failing somewhere deep inside the reconciler or a writer.

Ids are deterministic (a hash of what identifies the message) so that redelivery and
replay produce the same ids, which is what makes downstream deduplication possible.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, TypeVar, cast, get_args

import orjson

SCHEMA_VERSION = 1

Side = Literal["exchange", "salesforce"]
Entity = Literal["contact", "event", "task", "email"]
Op = Literal["upsert", "delete"]
Action = Literal["create", "update", "delete"]
Status = Literal["applied", "conflict", "gone", "failed"]

SIDES: tuple[str, ...] = get_args(Side)
ENTITIES: tuple[str, ...] = get_args(Entity)
OPS: tuple[str, ...] = get_args(Op)
ACTIONS: tuple[str, ...] = get_args(Action)
STATUSES: tuple[str, ...] = get_args(Status)


class EnvelopeError(ValueError):
    """A message that does not satisfy the envelope contract; `field` names the culprit."""

    def __init__(self, kind: str, field_name: str, problem: str) -> None:
        super().__init__(f"malformed {kind}: field '{field_name}' {problem}")
        self.kind = kind
        self.field = field_name
        self.problem = problem


def stable_id(*parts: object) -> str:
    """A short deterministic id: the same parts always give the same id."""
    h = hashlib.blake2b(digest_size=16)
    for p in parts:
        h.update(orjson.dumps(p, option=orjson.OPT_SORT_KEYS))
        h.update(b"\x1f")
    return h.hexdigest()


def content_hash(record: Mapping[str, Any]) -> str:
    """Hash of a canonical record, independent of key order; None-valued fields are ignored
    so that 'absent' and 'empty' compare equal."""
    clean = {k: v for k, v in record.items() if v is not None}
    return hashlib.blake2b(orjson.dumps(clean, option=orjson.OPT_SORT_KEYS), digest_size=16).hexdigest()


@dataclass(frozen=True, slots=True)
class ChangeEvent:
    tenant_id: str
    user: str
    source: Side
    entity: Entity
    source_id: str
    op: Op
    version: str
    observed_at: str
    # When the source says the item changed (Graph lastModifiedDateTime, Salesforce
    # LastModifiedDate / commitTimestamp). Needed by the latest-wins conflict policy.
    modified_at: str | None = None
    changed_fields: tuple[str, ...] | None = None
    record: dict[str, Any] | None = None
    # Hints about where the change came from: salesforce `change_origin`,
    # exchange `exsf_link_id` (our extended property), `full_resync` rounds, ...
    origin: dict[str, Any] = field(default_factory=dict)
    event_id: str = ""
    schema: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if not self.event_id:
            object.__setattr__(
                self,
                "event_id",
                stable_id("ce", self.tenant_id, self.source, self.entity, self.source_id, self.op, self.version),
            )


@dataclass(frozen=True, slots=True)
class Command:
    tenant_id: str
    user: str
    target: Side
    entity: Entity
    action: Action
    link_id: str
    target_id: str | None
    fields: dict[str, Any]
    expected_version: str | None = None
    # Free-form context for the writer (e.g. Graph folder, attachment references).
    context: dict[str, Any] = field(default_factory=dict)
    command_id: str = ""
    schema: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if not self.command_id:
            object.__setattr__(
                self,
                "command_id",
                stable_id(
                    "cmd",
                    self.tenant_id,
                    self.link_id,
                    self.target,
                    self.action,
                    self.expected_version,
                    content_hash(self.fields),
                ),
            )


@dataclass(frozen=True, slots=True)
class CommandResult:
    command_id: str
    tenant_id: str
    user: str
    target: Side
    entity: Entity
    link_id: str
    status: Status
    target_id: str | None = None
    new_version: str | None = None
    # The record as the target holds it after the write (or the fresh one on conflict).
    record: dict[str, Any] | None = None
    modified_at: str | None = None
    error: str | None = None
    schema: int = SCHEMA_VERSION


Envelope = ChangeEvent | Command | CommandResult
E = TypeVar("E", ChangeEvent, Command, CommandResult)


def encode(envelope: Envelope) -> bytes:
    return orjson.dumps(asdict(envelope))


# --- validation -------------------------------------------------------------------------


def _str(kind: str, d: Mapping[str, Any], name: str, *, optional: bool = False) -> str | None:
    v = d.get(name)
    if v is None:
        if optional:
            return None
        raise EnvelopeError(kind, name, "is missing")
    if not isinstance(v, str) or (not optional and v == ""):
        raise EnvelopeError(kind, name, f"must be a non-empty string, got {type(v).__name__}")
    return v


def _choice(kind: str, d: Mapping[str, Any], name: str, choices: tuple[str, ...]) -> str:
    v = _str(kind, d, name)
    if v not in choices:
        raise EnvelopeError(kind, name, f"must be one of {', '.join(choices)}, got {v!r}")
    return v


def _dict(kind: str, d: Mapping[str, Any], name: str, *, optional: bool) -> dict[str, Any] | None:
    v = d.get(name)
    if v is None:
        if optional:
            return None
        raise EnvelopeError(kind, name, "is missing")
    if not isinstance(v, dict):
        raise EnvelopeError(kind, name, f"must be an object, got {type(v).__name__}")
    return v


def _schema(kind: str, d: Mapping[str, Any]) -> int:
    v = d.get("schema", SCHEMA_VERSION)
    if not isinstance(v, int) or isinstance(v, bool):
        raise EnvelopeError(kind, "schema", "must be an integer")
    if v > SCHEMA_VERSION:
        raise EnvelopeError(kind, "schema", f"version {v} is newer than this service understands ({SCHEMA_VERSION})")
    return v


def _load(kind: str, raw: bytes | str | Mapping[str, Any]) -> Mapping[str, Any]:
    if isinstance(raw, Mapping):
        return raw
    try:
        d = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise EnvelopeError(kind, "<body>", f"is not valid JSON ({exc})") from None
    if not isinstance(d, dict):
        raise EnvelopeError(kind, "<body>", f"must be a JSON object, got {type(d).__name__}")
    return d


def decode_change_event(raw: bytes | str | Mapping[str, Any]) -> ChangeEvent:
    k = "ChangeEvent"
    d = _load(k, raw)
    op = _choice(k, d, "op", OPS)
    record = _dict(k, d, "record", optional=op == "delete")
    cf = d.get("changed_fields")
    if cf is not None and (not isinstance(cf, list) or not all(isinstance(x, str) for x in cf)):
        raise EnvelopeError(k, "changed_fields", "must be a list of strings")
    ev = ChangeEvent(
        tenant_id=cast(str, _str(k, d, "tenant_id")),
        user=cast(str, _str(k, d, "user")),
        source=cast(Side, _choice(k, d, "source", SIDES)),
        entity=cast(Entity, _choice(k, d, "entity", ENTITIES)),
        source_id=cast(str, _str(k, d, "source_id")),
        op=cast(Op, op),
        version=cast(str, _str(k, d, "version")),
        observed_at=cast(str, _str(k, d, "observed_at")),
        modified_at=_str(k, d, "modified_at", optional=True),
        changed_fields=tuple(cf) if cf is not None else None,
        record=record,
        origin=_dict(k, d, "origin", optional=True) or {},
        event_id=_str(k, d, "event_id", optional=True) or "",
        schema=_schema(k, d),
    )
    return ev


def decode_command(raw: bytes | str | Mapping[str, Any]) -> Command:
    k = "Command"
    d = _load(k, raw)
    action = _choice(k, d, "action", ACTIONS)
    target_id = _str(k, d, "target_id", optional=True)
    if action != "create" and target_id is None:
        raise EnvelopeError(k, "target_id", f"is required for action {action!r}")
    return Command(
        tenant_id=cast(str, _str(k, d, "tenant_id")),
        user=cast(str, _str(k, d, "user")),
        target=cast(Side, _choice(k, d, "target", SIDES)),
        entity=cast(Entity, _choice(k, d, "entity", ENTITIES)),
        action=cast(Action, action),
        link_id=cast(str, _str(k, d, "link_id")),
        target_id=target_id,
        fields=_dict(k, d, "fields", optional=True) or {},
        expected_version=_str(k, d, "expected_version", optional=True),
        context=_dict(k, d, "context", optional=True) or {},
        command_id=_str(k, d, "command_id", optional=True) or "",
        schema=_schema(k, d),
    )


def decode_command_result(raw: bytes | str | Mapping[str, Any]) -> CommandResult:
    k = "CommandResult"
    d = _load(k, raw)
    return CommandResult(
        command_id=cast(str, _str(k, d, "command_id")),
        tenant_id=cast(str, _str(k, d, "tenant_id")),
        user=cast(str, _str(k, d, "user")),
        target=cast(Side, _choice(k, d, "target", SIDES)),
        entity=cast(Entity, _choice(k, d, "entity", ENTITIES)),
        link_id=cast(str, _str(k, d, "link_id")),
        status=cast(Status, _choice(k, d, "status", STATUSES)),
        target_id=_str(k, d, "target_id", optional=True),
        new_version=_str(k, d, "new_version", optional=True),
        record=_dict(k, d, "record", optional=True),
        modified_at=_str(k, d, "modified_at", optional=True),
        error=_str(k, d, "error", optional=True),
        schema=_schema(k, d),
    )


DECODERS: dict[type, Callable[[bytes | str | Mapping[str, Any]], Any]] = {
    ChangeEvent: decode_change_event,
    Command: decode_command,
    CommandResult: decode_command_result,
}


def decode(kind: type[E], raw: bytes | str | Mapping[str, Any]) -> E:
    return cast(E, DECODERS[kind](raw))
