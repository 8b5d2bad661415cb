"""structlog JSON logging with tenant/user/entity context and secret redaction.

Redaction is a processor, so it applies to every event whatever the call site: values of
secret-looking keys are replaced, and token-shaped substrings (Bearer tokens, Salesforce
session ids, JWTs, `password=...` in URLs or form bodies) are masked inside any string.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any

import structlog
from structlog.typing import EventDict, WrappedLogger

REDACTED = "***"

_SECRET_KEYS = re.compile(
    r"(pass(word)?|secret|token|authorization|api[_-]?key|cookie|credential|session[_-]?id|signature|assertion)",
    re.IGNORECASE,
)
# Keys that contain a secret-looking word but hold no secret.
_SAFE_KEYS = frozenset({"token_type", "secret_ref", "client_secret_ref", "password_ref", "tokens_issued"})

_SECRET_PATTERNS = [
    re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9\-._~+/=!]{8,}"),
    # JWTs (Entra access tokens)
    re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"),
    # Salesforce session ids: 00D<org>!<token>
    re.compile(r"\b00D[A-Za-z0-9]{12,15}![A-Za-z0-9._]{20,}"),
    # key=value pairs in URLs, form bodies and messages
    re.compile(r"(?i)\b(password|client_secret|access_token|refresh_token|assertion|sig|code)=([^&\s\"']+)"),
]


def redact_text(text: str) -> str:
    for pat in _SECRET_PATTERNS:
        if pat.groups >= 2:
            text = pat.sub(lambda m: f"{m.group(1)}={REDACTED}", text)
        else:
            text = pat.sub(lambda m: m.group(0).split()[0] + f" {REDACTED}" if " " in m.group(0) else REDACTED, text)
    return text


def _redact(value: Any, depth: int = 0) -> Any:
    if depth > 6:
        return value
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {
            k: (REDACTED if _is_secret_key(k) and v not in (None, "") else _redact(v, depth + 1))
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return type(value)(_redact(v, depth + 1) for v in value)
    if isinstance(value, BaseException):
        return redact_text(f"{type(value).__name__}: {value}")
    return value


def _is_secret_key(key: object) -> bool:
    return isinstance(key, str) and key.lower() not in _SAFE_KEYS and bool(_SECRET_KEYS.search(key))


def redact_secrets(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """structlog processor: mask secrets in keys, nested values and free text."""
    out: MutableMapping[str, Any] = {}
    for k, v in event_dict.items():
        if _is_secret_key(k) and v not in (None, ""):
            out[k] = REDACTED
        else:
            out[k] = _redact(v)
    return dict(out)


def configure_logging(level: str = "INFO", *, json: bool = True, service: str | None = None) -> None:
    """Configure structlog (and stdlib logging of libraries) once per process."""
    lvl = logging.getLevelName(level.upper())
    if not isinstance(lvl, int):
        lvl = logging.INFO
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if service:
        shared.insert(0, _bind_service(service))
    # Exceptions are rendered to text first so the redactor sees their messages too.
    tail: list[Any] = [structlog.processors.format_exc_info, redact_secrets]
    renderer: Any = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[*shared, structlog.processors.StackInfoRenderer(), *tail, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    # Library logs (aiokafka, aiohttp, kiota) through the same redaction and format.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *tail, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(max(lvl, logging.INFO))
    # Per-request INFO lines from HTTP clients drown the service's own events.
    for noisy in ("aiokafka", "httpx", "httpcore", "kiota_http"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _bind_service(service: str) -> Any:
    def proc(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
        event_dict.setdefault("service", service)
        return event_dict

    return proc


def bind_context(**kw: Any) -> None:
    """Bind tenant/user/entity context for every log line of the current task."""
    structlog.contextvars.bind_contextvars(**kw)


def clear_context() -> None:
    structlog.contextvars.clear_contextvars()
