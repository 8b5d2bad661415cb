"""The three envelopes that travel between services (docs/design.md §6).

Records are frozen dataclasses serialised with orjson. Every envelope carries a schema
version; `decode_*` validates field by field and raises `EnvelopeError` naming the bad
field, so a malformed message is rejected at the edge of a service (and dead-lettered)
instead of failing somewhere deep inside the reconciler or a writer.

Ids are deterministic (a hash of what identifies the message) so that redelivery and
replay produce the same ids, which is what makes downstream deduplication possible.

Schema versions (encoding always writes the newest; decoding reads every one below, so
messages still on the topics, or replayed from them, keep their meaning after an upgrade):
- 1: `ChangeEvent.origin` and `Command.context` were free objects; an item leaving the
  sync scope was `op="delete"` with `origin.reason == "unlinked"`.
- 2: they are the typed records `Origin` and `CommandContext`, and leaving the scope is its
  own op, `left_scope`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import Field, asdict, dataclass, field, fields
from typing import Any, Literal, TypeVar, cast, get_args

import orjson

SCHEMA_VERSION = 2

Side = Literal["exchange", "salesforce"]
Entity = Literal["contact", "event", "task", "email"]
# left_scope: the item still exists but no longer syncs (moved out of the synced folder,
# lost the "Salesforce" category; a Salesforce record handed to an owner who is not
# enrolled). Unlike a delete, the other side keeps its copy.
Op = Literal["upsert", "delete", "left_scope"]
Action = Literal["create", "update", "delete"]
Status = Literal["applied", "conflict", "gone", "failed"]

SIDES: tuple[str, ...] = get_args(Side)
ENTITIES: tuple[str, ...] = get_args(Entity)
OPS: tuple[str, ...] = get_args(Op)
ACTIONS: tuple[str, ...] = get_args(Action)
STATUSES: tuple[str, ...] = get_args(Status)

Raw = bytes | str | Mapping[str, Any]


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
class Origin:
    """Where a change came from. Hints only: the change itself is op + record."""

    # Our link id found on the item (Graph extended property, Salesforce external id): it
    # finds the link of an item our create made before the create's result arrives.
    link_tag: str | None = None
    ical_uid: str | None = None  # Graph iCalUId of an event (one meeting in several mailboxes)
    internet_message_id: str | None = None  # emails
    has_attachments: bool | None = None  # emails
    owner_id: str | None = None  # Salesforce OwnerId as the ingestor read it
    # Salesforce CDC changeOrigin ("" when CDC named none, None when not read from CDC).
    change_origin: str | None = None
    stream: str | None = None  # the Graph delta stream (DeltaStream.key) that reported it
    resync: bool = False  # a delete the reconciler derived from an Exchange full resync round
    resync_complete: bool = False  # the end-of-round marker of an Exchange full resync
    seen_ids: tuple[str, ...] = ()  # with resync_complete: every item id the round saw
    catch_up: bool = False  # read by a Salesforce catch-up query after lost replay ids

    @property
    def by_exsf(self) -> bool:
        """Written through exsf's own Salesforce API client (its echo, not a person's edit)."""
        return "client=exsf" in (self.change_origin or "")


@dataclass(frozen=True, slots=True)
class CommandContext:
    """What a writer needs beyond the patch. Every field is optional: None / () = not given."""

    owner_id: str | None = None  # Salesforce OwnerId of a record to create
    mailbox: str | None = None  # the mailbox an Exchange item is created in
    message_id: str | None = None  # Graph id of the message an email Task copies (its files)
    attachments: tuple[dict[str, Any], ...] = ()  # the message's attachment descriptions
    who_emails: tuple[str, ...] = ()  # addresses to find the email Task's WhoId by, sender first
    who_id: str | None = None  # the Contact the reconciler already knows for an email Task
    # When the target was last seen modified: Salesforce's If-Unmodified-Since on update.
    expected_modified_at: str | None = None
    record: dict[str, Any] | None = None  # the full merged record (Graph rewrites whole lists)
    graph_item: dict[str, Any] | None = None  # the current Graph item, saving a GET
    list_id: str | None = None  # To Do list of a task outside "Salesforce Tasks"


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
    origin: Origin = field(default_factory=Origin)
    event_id: str = ""
    schema: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if not self.event_id:
            # left_scope hashes as schema 1's "delete" so that an ingestor reporting the same
            # move before and after an upgrade gives the same id (the reconciler's dedupe).
            op = "delete" if self.op == "left_scope" else self.op
            object.__setattr__(
                self,
                "event_id",
                stable_id("ce", self.tenant_id, self.source, self.entity, self.source_id, op, self.version),
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
    context: CommandContext = field(default_factory=CommandContext)
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
Hints = Origin | CommandContext
H = TypeVar("H", Origin, CommandContext)


def encode(envelope: Envelope) -> bytes:
    d = asdict(envelope)
    d["schema"] = SCHEMA_VERSION
    if isinstance(envelope, ChangeEvent):
        d["origin"] = _sparse(envelope.origin, d["origin"])
    elif isinstance(envelope, Command):
        d["context"] = _sparse(envelope.context, d["context"])
    return orjson.dumps(d)


def _sparse(hints: Hints, d: dict[str, Any]) -> dict[str, Any]:
    """Only the fields that were given: the decoder restores the defaults."""
    defaults = {f.name: f.default for f in fields(hints)}
    return {k: v for k, v in d.items() if v != defaults[k]}


# --- validation -------------------------------------------------------------------------


def _type_name(v: object) -> str:
    return type(v).__name__


def _req(kind: str, d: Mapping[str, Any], name: str) -> str:
    v = d.get(name)
    if v is None:
        raise EnvelopeError(kind, name, "is missing")
    if not isinstance(v, str) or v == "":
        raise EnvelopeError(kind, name, f"must be a non-empty string, got {_type_name(v)}")
    return v


def _opt(kind: str, d: Mapping[str, Any], name: str) -> str | None:
    v = d.get(name)
    if v is not None and not isinstance(v, str):
        raise EnvelopeError(kind, name, f"must be a string, got {_type_name(v)}")
    return v


def _choice(kind: str, d: Mapping[str, Any], name: str, choices: tuple[str, ...]) -> str:
    v = _req(kind, d, name)
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
        raise EnvelopeError(kind, name, f"must be an object, got {_type_name(v)}")
    return v


def _schema(kind: str, d: Mapping[str, Any]) -> int:
    v = d.get("schema", SCHEMA_VERSION)
    if not isinstance(v, int) or isinstance(v, bool):
        raise EnvelopeError(kind, "schema", "must be an integer")
    if v > SCHEMA_VERSION:
        raise EnvelopeError(kind, "schema", f"version {v} is newer than this service understands ({SCHEMA_VERSION})")
    if v < 1:
        raise EnvelopeError(kind, "schema", f"version {v} does not exist")
    return v


def _load(kind: str, raw: Raw) -> Mapping[str, Any]:
    if isinstance(raw, Mapping):
        return raw
    try:
        d = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise EnvelopeError(kind, "<body>", f"is not valid JSON ({exc})") from None
    if not isinstance(d, dict):
        raise EnvelopeError(kind, "<body>", f"must be a JSON object, got {_type_name(d)}")
    return d


# --- typed hints (Origin, CommandContext) -------------------------------------------------
# One reader per field annotation (without "| None": null always means "not given"), so
# each field of the two records is validated by its declared type, field by field.

Reader = Callable[[str, str, object], Any]


def _read_str(kind: str, path: str, v: object) -> Any:
    if not isinstance(v, str):
        raise EnvelopeError(kind, path, f"must be a string, got {_type_name(v)}")
    return v


def _read_bool(kind: str, path: str, v: object) -> Any:
    if not isinstance(v, bool):
        raise EnvelopeError(kind, path, f"must be a boolean, got {_type_name(v)}")
    return v


def _read_strs(kind: str, path: str, v: object) -> Any:
    if not isinstance(v, list | tuple) or not all(isinstance(x, str) for x in v):
        raise EnvelopeError(kind, path, "must be a list of strings")
    return tuple(v)


def _read_obj(kind: str, path: str, v: object) -> Any:
    if not isinstance(v, dict):
        raise EnvelopeError(kind, path, f"must be an object, got {_type_name(v)}")
    return v


def _read_objs(kind: str, path: str, v: object) -> Any:
    if not isinstance(v, list | tuple) or not all(isinstance(x, dict) for x in v):
        raise EnvelopeError(kind, path, "must be a list of objects")
    return tuple(v)


READERS: dict[str, Reader] = {
    "str": _read_str,
    "bool": _read_bool,
    "tuple[str, ...]": _read_strs,
    "dict[str, Any]": _read_obj,
    "tuple[dict[str, Any], ...]": _read_objs,
}


def _reader(f: Field[Any]) -> Reader:
    # `from __future__ import annotations` keeps annotations as the strings written above.
    return READERS[str(f.type).removesuffix(" | None")]


# Checked at import, so a field added with a type nobody reads fails every test at once.
_FIELD_READERS: dict[type[Hints], dict[str, Reader]] = {
    cls: {f.name: _reader(f) for f in fields(cls)} for cls in (Origin, CommandContext)
}


def _hints(cls: type[H], kind: str, obj: Mapping[str, Any], prefix: str, wire: Mapping[str, str]) -> H:
    """`cls` from the object `obj`; `wire` names a field's key where it is not the field's
    own name (schema 1). Keys no field reads are ignored, as at the top level."""
    given: dict[str, Any] = {}
    for name, read in _FIELD_READERS[cls].items():
        key = wire.get(name, name)
        v = obj.get(key)
        if v is not None:
            given[name] = read(kind, f"{prefix}.{key}", v)
    return cls(**given)


V1_ORIGIN_KEYS: Mapping[str, str] = {"link_tag": "exsf_link_id"}


def _origin(kind: str, d: Mapping[str, Any], schema: int) -> Origin:
    obj = _dict(kind, d, "origin", optional=True) or {}
    return _hints(Origin, kind, obj, "origin", V1_ORIGIN_KEYS if schema == 1 else {})


def _op(kind: str, d: Mapping[str, Any], schema: int) -> Op:
    if schema > 1:
        return cast(Op, _choice(kind, d, "op", OPS))
    op = _choice(kind, d, "op", ("upsert", "delete"))
    origin = d.get("origin")
    # Schema 1 said "left the scope" as a delete with reason "unlinked" ("deleted" was
    # just a delete).
    if op == "delete" and isinstance(origin, dict) and origin.get("reason") == "unlinked":
        return "left_scope"
    return cast(Op, op)


def _context(kind: str, d: Mapping[str, Any], schema: int) -> CommandContext:
    obj = _dict(kind, d, "context", optional=True) or {}
    if schema == 1 and isinstance(obj.get("who_emails"), str):
        # Schema 1 writers also took a lone address for the list.
        obj = {**obj, "who_emails": [obj["who_emails"]]}
    return _hints(CommandContext, kind, obj, "context", {})


# --- decoders -----------------------------------------------------------------------------


def decode_change_event(raw: Raw) -> ChangeEvent:
    k = "ChangeEvent"
    d = _load(k, raw)
    schema = _schema(k, d)
    op = _op(k, d, schema)
    record = _dict(k, d, "record", optional=op != "upsert")
    cf = d.get("changed_fields")
    if cf is not None and (not isinstance(cf, list) or not all(isinstance(x, str) for x in cf)):
        raise EnvelopeError(k, "changed_fields", "must be a list of strings")
    return ChangeEvent(
        tenant_id=_req(k, d, "tenant_id"),
        user=_req(k, d, "user"),
        source=cast(Side, _choice(k, d, "source", SIDES)),
        entity=cast(Entity, _choice(k, d, "entity", ENTITIES)),
        source_id=_req(k, d, "source_id"),
        op=op,
        version=_req(k, d, "version"),
        observed_at=_req(k, d, "observed_at"),
        modified_at=_opt(k, d, "modified_at"),
        changed_fields=tuple(cf) if cf is not None else None,
        record=record,
        origin=_origin(k, d, schema),
        event_id=_opt(k, d, "event_id") or "",
    )


def decode_command(raw: Raw) -> Command:
    k = "Command"
    d = _load(k, raw)
    schema = _schema(k, d)
    action = _choice(k, d, "action", ACTIONS)
    target_id = _opt(k, d, "target_id")
    if action != "create" and target_id is None:
        raise EnvelopeError(k, "target_id", f"is required for action {action!r}")
    return Command(
        tenant_id=_req(k, d, "tenant_id"),
        user=_req(k, d, "user"),
        target=cast(Side, _choice(k, d, "target", SIDES)),
        entity=cast(Entity, _choice(k, d, "entity", ENTITIES)),
        action=cast(Action, action),
        link_id=_req(k, d, "link_id"),
        target_id=target_id,
        fields=_dict(k, d, "fields", optional=True) or {},
        expected_version=_opt(k, d, "expected_version"),
        context=_context(k, d, schema),
        command_id=_opt(k, d, "command_id") or "",
    )


def decode_command_result(raw: Raw) -> CommandResult:
    k = "CommandResult"
    d = _load(k, raw)
    _schema(k, d)  # versions 1 and 2 of a result are the same shape
    return CommandResult(
        command_id=_req(k, d, "command_id"),
        tenant_id=_req(k, d, "tenant_id"),
        user=_req(k, d, "user"),
        target=cast(Side, _choice(k, d, "target", SIDES)),
        entity=cast(Entity, _choice(k, d, "entity", ENTITIES)),
        link_id=_req(k, d, "link_id"),
        status=cast(Status, _choice(k, d, "status", STATUSES)),
        target_id=_opt(k, d, "target_id"),
        new_version=_opt(k, d, "new_version"),
        record=_dict(k, d, "record", optional=True),
        modified_at=_opt(k, d, "modified_at"),
        error=_opt(k, d, "error"),
    )


DECODERS: dict[type[Envelope], Callable[[Raw], Envelope]] = {
    ChangeEvent: decode_change_event,
    Command: decode_command,
    CommandResult: decode_command_result,
}


def decode(kind: type[E], raw: Raw) -> E:
    return cast(E, DECODERS[kind](raw))
