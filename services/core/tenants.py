"""Tenant model: one Salesforce org paired with one Microsoft 365 tenant, and its users.

Tenant configs live on the compacted topic exsf.tenants (key = tenant_id). They carry only
secret *references*; services resolve them at use time with `resolve_secret`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal, cast
from urllib.parse import urlsplit

import orjson

from services.core.envelopes import ENTITIES

ConflictPolicy = Literal["latest-wins", "salesforce-wins", "exchange-wins"]
CONFLICT_POLICIES: tuple[str, ...] = ("latest-wins", "salesforce-wins", "exchange-wins")


class TenantConfigError(ValueError):
    """A tenant config that cannot be used. `problems` holds every problem found, each with
    the JSON path it is about; str() is the first one (one line for an operator)."""

    def __init__(self, problems: list[Problem] | str) -> None:
        self.problems = [Problem("$", problems)] if isinstance(problems, str) else list(problems)
        first = self.problems[0] if self.problems else Problem("$", "invalid tenant config")
        more = f" (and {len(self.problems) - 1} more)" if len(self.problems) > 1 else ""
        super().__init__(f"{first}{more}")


@dataclass(frozen=True, slots=True)
class Problem:
    path: str  # JSONPath of the offending value, e.g. $.users[3].mailbox
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@dataclass(frozen=True, slots=True)
class User:
    mailbox: str  # the Graph user (UPN / mail); also the user key on every envelope
    salesforce_user_id: str


@dataclass(frozen=True, slots=True)
class GraphEndpoint:
    base_url: str = "https://graph.microsoft.com/v1.0"
    # Token endpoint authority; the emulator serves {authority}/{tenant}/oauth2/v2.0/token.
    authority: str = "https://login.microsoftonline.com"
    azure_tenant_id: str = ""
    client_id: str = ""
    client_secret_ref: str = ""


@dataclass(frozen=True, slots=True)
class SalesforceEndpoint:
    # login.salesforce.com, test.salesforce.com, a My Domain URL, or the emulator.
    login_url: str = "https://login.salesforce.com"
    api_version: str = "60.0"
    client_id: str = ""
    client_secret_ref: str = ""
    username: str = ""
    password_ref: str = ""
    # External id field holding the exsf link id, used for idempotent upserts.
    external_id_field: str = "exsf_Link_Id__c"


@dataclass(frozen=True, slots=True)
class Tenant:
    tenant_id: str
    users: tuple[User, ...]
    graph: GraphEndpoint = field(default_factory=GraphEndpoint)
    salesforce: SalesforceEndpoint = field(default_factory=SalesforceEndpoint)
    conflict_policy: ConflictPolicy = "latest-wins"
    entities: tuple[str, ...] = ("contact", "event", "task", "email")
    # Periodic full comparison that catches anything a missed notification left behind.
    safety_sweep_seconds: int = 3600
    poll_seconds: int = 60
    # How long the reconciler remembers a deleted pair (so late or replayed inputs about
    # it stay stale). Longer than the change topics' retention (7 days) and any replay.
    tombstone_days: int = 14

    def user_by_mailbox(self, mailbox: str) -> User | None:
        m = mailbox.lower()
        return next((u for u in self.users if u.mailbox.lower() == m), None)

    def user_by_salesforce_id(self, sf_id: str) -> User | None:
        # Salesforce ids come as 15 or 18 characters; the first 15 identify the record.
        return next((u for u in self.users if u.salesforce_user_id[:15] == sf_id[:15]), None)

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: bytes | str | Mapping[str, Any]) -> Tenant:
        if isinstance(raw, Mapping):
            return tenant_from_dict(raw)
        try:
            d: Any = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise TenantConfigError(f"not valid JSON ({exc})") from None
        return tenant_from_dict(d)


# --- the config format, checked field by field --------------------------------------
#
# Hand-written rather than pydantic/jsonschema: neither is a runtime dependency, the format
# is small, and the messages must be ours (JSON path, never the value of a secret field).

_TENANT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# Deliberately loose (no RFC 5322): one @, no spaces, a dot in the domain. Graph accepts a
# UPN or a primary SMTP address, both of this shape.
_MAILBOX = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")
# User ids are 15 or 18 characters with the key prefix 005 (the emulator's ids.py follows
# the same rule). The 3-character case suffix is not verified: configs are typed by people.
_SF_USER_ID = re.compile(r"^005[A-Za-z0-9]{12}(?:[A-Za-z0-9]{3})?$")
_API_VERSION = re.compile(r"^\d{2,3}\.0$")
_CUSTOM_FIELD = re.compile(r"^[A-Za-z][A-Za-z0-9_]*__c$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_REF_FIELDS = frozenset({"client_secret_ref", "password_ref"})
_URL_FIELDS = frozenset({"base_url", "authority", "login_url"})
_LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})
# Upper bounds keep a typo (an extra digit, a number in ms) from becoming a sync that never runs.
_INT_FIELDS = {"safety_sweep_seconds": 30 * 86400, "poll_seconds": 86400, "tombstone_days": 3650}


def _show(value: Any) -> str:
    """A value as JSON, cut short and with unprintable characters (line breaks among them)
    escaped: a message stays one readable line."""
    try:
        text = orjson.dumps(value).decode()
    except TypeError:
        text = repr(value)
    text = "".join(ch if ch.isprintable() else f"\\u{ord(ch):04x}" for ch in text)
    return text if len(text) <= 60 else text[:57] + "..."


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__


class _Checker:
    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def bad(self, path: str, message: str) -> None:
        self.problems.append(Problem(path, message))

    def obj(self, path: str, value: Any, known: tuple[str, ...]) -> Mapping[str, Any] | None:
        if not isinstance(value, Mapping):
            self.bad(path, f"must be a JSON object, not {_kind(value)}")
            return None
        for k in value:
            if k not in known:
                self.bad(f"{path}.{k}" if _ENV_NAME.fullmatch(str(k)) else f"{path}[{_show(k)}]",
                         f"unknown key (known keys: {', '.join(known)})")
        return value

    def string(self, path: str, value: Any, pattern: re.Pattern[str] | None = None, what: str = "") -> str | None:
        if not isinstance(value, str):
            self.bad(path, f"must be a string, not {_kind(value)}")
            return None
        if pattern is not None and not pattern.fullmatch(value):
            self.bad(path, f"{_show(value)} is not {what}")
            return None
        return value

    def positive_int(self, path: str, value: Any, most: int) -> int | None:
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            self.bad(path, f"must be a positive whole number, not {_show(value)}")
            return None
        if value > most:
            self.bad(path, f"{value} is more than the most allowed, {most}")
            return None
        return value

    def url(self, path: str, value: Any) -> str | None:
        s = self.string(path, value)
        if s is None:
            return None
        try:
            parts = urlsplit(s)
            ok = parts.scheme in ("http", "https") and bool(parts.hostname)
        except ValueError:
            ok = False
        if not ok:
            self.bad(path, f"{_show(s)} is not an http(s) URL")
            return None
        return s

    def secret_ref(self, path: str, value: Any) -> str | None:
        # Never echo the value: if it is not a reference it may well be the secret itself.
        if not isinstance(value, str):
            self.bad(path, f"must be a string secret reference, not {_kind(value)}")
            return None
        if value == "":
            return value
        scheme, _, rest = value.partition(":")
        ok = (
            (scheme == "env" and bool(_ENV_NAME.fullmatch(rest)))
            or (scheme == "file" and rest.startswith("/"))
            or (scheme == "literal" and rest != "")
        )
        if not ok:
            self.bad(path, "must be a secret reference (env:NAME or file:/absolute/path), not a secret value")
            return None
        return value


def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls))


def _endpoint(c: _Checker, path: str, value: Any, cls: type) -> dict[str, str]:
    known = _field_names(cls)
    d = c.obj(path, value, known)
    out: dict[str, str] = {}
    if d is None:
        return out
    for k in known:
        if k not in d:
            continue
        p = f"{path}.{k}"
        v: str | None
        if k in _REF_FIELDS:
            v = c.secret_ref(p, d[k])
        elif k in _URL_FIELDS:
            v = c.url(p, d[k])
        elif k == "api_version":
            v = c.string(p, d[k], _API_VERSION, "a Salesforce API version like \"60.0\"")
        elif k == "external_id_field":
            v = c.string(p, d[k], _CUSTOM_FIELD, "a custom field API name like \"exsf_Link_Id__c\"")
        else:
            v = c.string(p, d[k])
        if v is not None:
            out[k] = v
    return out


def _users(c: _Checker, value: Any) -> tuple[User, ...]:
    if not isinstance(value, list):
        c.bad("$.users", f"must be an array of users, not {_kind(value)}")
        return ()
    if not value:
        c.bad("$.users", "is empty: enrol at least one user (mailbox and salesforce_user_id)")
    users: list[User] = []
    seen_mb: dict[str, int] = {}
    seen_sf: dict[str, int] = {}
    for i, u in enumerate(value):
        path = f"$.users[{i}]"
        d = c.obj(path, u, _field_names(User))
        if d is None:
            continue
        if "mailbox" not in d:
            c.bad(path, "missing 'mailbox'")
        mb = c.string(f"{path}.mailbox", d["mailbox"], _MAILBOX, "an email address") if "mailbox" in d else None
        if "salesforce_user_id" not in d:
            c.bad(path, "missing 'salesforce_user_id'")
        sf = (
            c.string(f"{path}.salesforce_user_id", d["salesforce_user_id"], _SF_USER_ID,
                     "a Salesforce user id (15 or 18 characters starting with 005)")
            if "salesforce_user_id" in d else None
        )
        if mb is not None:
            if mb.lower() in seen_mb:
                c.bad(f"{path}.mailbox", f"{_show(mb)} is already enrolled at $.users[{seen_mb[mb.lower()]}]")
            seen_mb.setdefault(mb.lower(), i)
        if sf is not None:
            if sf[:15] in seen_sf:
                c.bad(f"{path}.salesforce_user_id", f"{_show(sf)} is already used by $.users[{seen_sf[sf[:15]]}]")
            seen_sf.setdefault(sf[:15], i)
        if mb is not None and sf is not None:
            users.append(User(mb, sf))
    return tuple(users)


def check_tenant(d: Any) -> tuple[Tenant | None, list[Problem]]:
    """Every problem of a tenant config document, and the Tenant when there is none."""
    c = _Checker()
    doc = c.obj("$", d, _field_names(Tenant))
    if doc is None:
        return None, c.problems
    tid = None
    if "tenant_id" not in doc:
        c.bad("$", "missing 'tenant_id'")
    else:
        # The id is a Kafka key and part of every state key (tenant/entity/link).
        tid = c.string("$.tenant_id", doc["tenant_id"], _TENANT_ID,
                       "a tenant id (letters, digits, '.', '_', '-'; at most 64)")
    if "users" not in doc:
        c.bad("$", "missing 'users'")
    users = _users(c, doc["users"]) if "users" in doc else ()
    graph = _endpoint(c, "$.graph", doc.get("graph", {}), GraphEndpoint)
    sf = _endpoint(c, "$.salesforce", doc.get("salesforce", {}), SalesforceEndpoint)
    policy = doc.get("conflict_policy", "latest-wins")
    if policy not in CONFLICT_POLICIES:
        c.bad("$.conflict_policy", f"{_show(policy)} is not one of {', '.join(CONFLICT_POLICIES)}")
    entities: tuple[str, ...] = tuple(ENTITIES)
    if "entities" in doc:
        raw = doc["entities"]
        if not isinstance(raw, list) or not raw:
            c.bad("$.entities", f"must be a non-empty array of {', '.join(ENTITIES)}")
        else:
            for i, e in enumerate(raw):
                if e not in ENTITIES:
                    c.bad(f"$.entities[{i}]", f"{_show(e)}: unknown entities, use {', '.join(ENTITIES)}")
            entities = tuple(e for e in raw if isinstance(e, str))
            if len(set(entities)) != len(entities):
                c.bad("$.entities", "lists an entity twice")
    ints: dict[str, int] = {}
    for k, most in _INT_FIELDS.items():
        if k in doc:
            n = c.positive_int(f"$.{k}", doc[k], most)
            if n is not None:
                ints[k] = n
    if c.problems or tid is None:
        return None, c.problems
    return Tenant(
        tenant_id=tid,
        users=users,
        graph=GraphEndpoint(**graph),
        salesforce=SalesforceEndpoint(**sf),
        conflict_policy=cast(ConflictPolicy, policy),
        entities=entities,
        **ints,
    ), []


def tenant_from_dict(d: Mapping[str, Any]) -> Tenant:
    tenant, problems = check_tenant(d)
    if tenant is None:
        raise TenantConfigError(problems)
    return tenant


def literal_secret_problems(t: Tenant) -> list[Problem]:
    """`literal:` references put the secret itself on the compacted tenants topic, kept
    forever and readable by every service. They are only accepted for an endpoint on this
    machine (the emulators of the demo and the tests), where the "secret" is a fixture."""
    out: list[Problem] = []
    for section, ep_urls, refs in (
        ("graph", (t.graph.base_url, t.graph.authority), (("client_secret_ref", t.graph.client_secret_ref),)),
        ("salesforce", (t.salesforce.login_url,), (("client_secret_ref", t.salesforce.client_secret_ref),
                                                   ("password_ref", t.salesforce.password_ref))),
    ):
        local = all((urlsplit(u).hostname or "") in _LOOPBACK for u in ep_urls)
        for name, ref in refs:
            if ref.startswith("literal:") and not local:
                out.append(Problem(f"$.{section}.{name}", "literal: references are only for the local demo "
                                   "and emulators; use env:NAME or file:/path"))
            elif ref and not ref.startswith(("env:", "file:", "literal:")):
                out.append(Problem(f"$.{section}.{name}", "must be a secret reference (env:NAME or file:/path), "
                                   "not a secret value"))
    return out
