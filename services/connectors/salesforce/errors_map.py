"""Salesforce REST error bodies -> the shared connector errors (services.core.errors).

Messages carry Salesforce's errorCode and message, never request headers or tokens.
"""

from __future__ import annotations

from typing import Any

from services.core.errors import (
    AuthError,
    ConnectorError,
    NotFoundError,
    PermanentError,
    PreconditionFailed,
    TransientError,
)

TRANSIENT_CODES = frozenset({"REQUEST_LIMIT_EXCEEDED", "SERVER_UNAVAILABLE", "UNABLE_TO_LOCK_ROW", "QUERY_TIMEOUT"})
NOT_FOUND_CODES = frozenset({"NOT_FOUND", "ENTITY_IS_DELETED"})


def first_error(body: Any) -> tuple[str | None, str]:
    """(errorCode, message) of a REST error body `[{"errorCode", "message"}]`."""
    if isinstance(body, list) and body and isinstance(body[0], dict):
        e = body[0]
        return (e.get("errorCode") or e.get("statusCode")), str(e.get("message", ""))
    if isinstance(body, dict):
        return body.get("errorCode") or body.get("error"), str(body.get("message") or body.get("error_description")
                                                               or "")
    return None, ""


def error_for(status: int, body: Any, what: str) -> ConnectorError:
    code, message = first_error(body)
    if status == 300:
        code, message = "MULTIPLE_CHOICES", "the external id matches several records"
    text = f"salesforce {what}: {status} {code or ''} {message}".rstrip()
    if status == 401:
        return AuthError(text, status=status, code=code or "INVALID_SESSION_ID")
    if code in TRANSIENT_CODES or status in (429, 500, 502, 503, 504):
        return TransientError(text, status=status, code=code)
    if status == 404 or code in NOT_FOUND_CODES:
        return NotFoundError(text, status=status, code=code)
    if status == 412:
        return PreconditionFailed(text, status=status, code=code)
    return PermanentError(text, status=status, code=code)


def error_for_record(status_code: str | None, message: str, what: str) -> ConnectorError:
    """The same mapping for one row of an sObject Collections answer (which has no HTTP status)."""
    status = 404 if status_code in NOT_FOUND_CODES else 400
    return error_for(status, [{"errorCode": status_code, "message": message}], what)
