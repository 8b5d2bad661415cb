"""The emulator's request/response model, independent of aiohttp, so that `$batch`
sub-requests run through exactly the same handlers as top-level requests."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote

import orjson

if TYPE_CHECKING:
    from services.emulators.graph.state import EmulatorState


class GraphError(Exception):
    """An error answered in Graph's shape: {"error":{"code","message"}}."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}

    def to_resp(self) -> Resp:
        body = {"error": {"code": self.code, "message": self.message, "innerError": {"request-id": "emulator"}}}
        return Resp(self.status, body, dict(self.headers))


@dataclass
class Resp:
    status: int
    body: Any = None  # JSON-able, bytes, or None
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"

    def body_bytes(self) -> bytes:
        if self.body is None:
            return b""
        if isinstance(self.body, bytes | bytearray):
            return bytes(self.body)
        if isinstance(self.body, str):
            return self.body.encode()
        return orjson.dumps(self.body)


@dataclass
class Ctx:
    method: str
    segments: list[str]
    query: dict[str, str]  # keys lower-cased: Graph matches query option names case-insensitively
    headers: dict[str, str]  # keys lower-cased
    body: bytes
    base_url: str  # e.g. http://127.0.0.1:8081/v1.0
    app_id: str
    state: EmulatorState
    params: dict[str, str] = field(default_factory=dict)
    path: str = ""  # raw path below the API root, e.g. /users/a%40b/contacts

    def json(self) -> dict[str, Any]:
        if not self.body:
            return {}
        try:
            data = orjson.loads(self.body)
        except orjson.JSONDecodeError:
            raise GraphError(400, "BadRequest", "Request body is not valid JSON.") from None
        if not isinstance(data, dict):
            raise GraphError(400, "BadRequest", "Request body must be a JSON object.")
        return data

    def q(self, name: str) -> str | None:
        return self.query.get(name.lower())

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


Handler = Callable[[Ctx], Awaitable[Resp]]

_KEY_SEGMENT = re.compile(r"^([A-Za-z.]+)\('(.*)'\)$")
_DELTA_NAMES = {"delta", "delta()", "microsoft.graph.delta()", "microsoft.graph.delta"}


def normalise_segments(raw_path: str) -> list[str]:
    """Split a raw (still percent-encoded) path into decoded segments, so an id holding
    `%2F` stays one segment; `delta()` and OData key syntax `mailFolders('inbox')` are
    folded into plain segments."""
    out: list[str] = []
    for raw in raw_path.split("/"):
        if not raw:
            continue
        seg = unquote(raw)
        m = _KEY_SEGMENT.match(seg)
        if m:
            out.extend([m.group(1), m.group(2)])
        elif seg.lower() in _DELTA_NAMES:
            out.append("delta")
        elif seg.lower().startswith("microsoft.graph."):
            out.append(seg[len("microsoft.graph.") :])
        else:
            out.append(seg)
    return out


def parse_query(raw_query: str) -> dict[str, str]:
    return {k.lower(): v for k, v in parse_qsl(raw_query, keep_blank_values=True)}


class Router:
    """Matches decoded segments against patterns like ("users", "{user}", "contacts")."""

    def __init__(self) -> None:
        self._routes: list[tuple[str, tuple[str, ...], Handler]] = []

    def add(self, method: str, pattern: str, handler: Handler) -> None:
        self._routes.append((method.upper(), tuple(p for p in pattern.split("/") if p), handler))

    def resolve(self, method: str, segments: list[str]) -> tuple[Handler, dict[str, str]]:
        path_matched = False
        for m, pattern, handler in self._routes:
            if len(pattern) != len(segments):
                continue
            params: dict[str, str] = {}
            for p, s in zip(pattern, segments, strict=True):
                if p.startswith("{") and p.endswith("}"):
                    params[p[1:-1]] = s
                elif p.lower() != s.lower():
                    break
            else:
                path_matched = True
                if m == method.upper():
                    return handler, params
        if path_matched:
            raise GraphError(405, "BadRequest", f"The HTTP method '{method}' is not allowed for this resource.")
        raise GraphError(400, "BadRequest", "Resource not found for the segment '" + "/".join(segments[-1:]) + "'.")
