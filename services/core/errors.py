"""Error classes shared by both connectors, so services handle Graph and Salesforce alike.

Messages must never contain secrets (tokens, passwords, Authorization headers).
"""

from __future__ import annotations


class ConnectorError(Exception):
    """Base of everything a connector raises on purpose."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class TransientError(ConnectorError):
    """Worth retrying later: throttling (429, REQUEST_LIMIT_EXCEEDED), 503/504, timeouts.
    `retry_after` is the server's advice in seconds, when it gave one."""

    def __init__(
        self, message: str, *, retry_after: float | None = None, status: int | None = None, code: str | None = None
    ) -> None:
        super().__init__(message, status=status, code=code)
        self.retry_after = retry_after


class AuthError(ConnectorError):
    """Credentials rejected even after a token refresh."""


class NotFoundError(ConnectorError):
    """The item does not exist (404) or was deleted (Salesforce ENTITY_IS_DELETED)."""


class PreconditionFailed(ConnectorError):
    """The item changed since the version we based the write on (412)."""


class CursorExpired(ConnectorError):
    """A delta token / replay id the source no longer knows (Graph 410, invalid replayId):
    the stream must restart with a full round."""


class PermanentError(ConnectorError):
    """The request itself is wrong (400-class other than the above); retrying will not help."""
