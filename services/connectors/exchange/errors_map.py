"""Graph failures as services.core.errors. Messages carry status, Graph error code and
message only: never a token, header or request body."""

from __future__ import annotations

from typing import Any

from services.core.errors import (
    AuthError,
    ConnectorError,
    CursorExpired,
    NotFoundError,
    PermanentError,
    PreconditionFailed,
    TransientError,
)

TRANSIENT_STATUSES = {429, 503, 504}


def retry_after_of(headers: Any) -> float | None:
    if not headers:
        return None
    value = None
    for k, v in dict(headers).items():
        if str(k).lower() == "retry-after":
            value = v
            break
    if isinstance(value, list | tuple | set):
        value = next(iter(value), None)
    try:
        return max(0.0, float(str(value))) if value is not None else None
    except ValueError:
        return None


def from_status(status: int | None, code: str | None, message: str | None, headers: Any = None,
                *, what: str = "Graph request") -> ConnectorError:
    text = f"{what} failed: HTTP {status}" + (f" {code}" if code else "") + (f": {message}" if message else "")
    if status in TRANSIENT_STATUSES or (status is not None and status >= 500):
        return TransientError(text, retry_after=retry_after_of(headers), status=status, code=code)
    if status == 401:
        return AuthError(text, status=status, code=code)
    if status == 404:
        return NotFoundError(text, status=status, code=code)
    if status == 412:
        return PreconditionFailed(text, status=status, code=code)
    if status == 410 or (code or "").lower() in ("syncstatenotfound", "resyncrequired"):
        return CursorExpired(text, status=status, code=code)
    return PermanentError(text, status=status, code=code)


def from_api_error(exc: Exception, *, what: str = "Graph request") -> ConnectorError:
    """Map a kiota APIError / msgraph ODataError."""
    status = getattr(exc, "response_status_code", None)
    err = getattr(exc, "error", None)
    code = getattr(err, "code", None) if err is not None else None
    message = getattr(err, "message", None) if err is not None else None
    return from_status(status, code, message, getattr(exc, "response_headers", None), what=what)
