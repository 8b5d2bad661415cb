"""Identifiers the emulator issues: URL-safe (base64url, no padding), so they survive
percent-encoding in path segments exactly as real Graph ids would have to (graph.md §0.2)."""

from __future__ import annotations

import base64
import secrets


def new_id(prefix: str = "AAMk") -> str:
    raw = base64.urlsafe_b64encode(secrets.token_bytes(24)).decode().rstrip("=")
    return prefix + raw


def new_change_key() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(12)).decode().rstrip("=")


def new_token() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(18)).decode().rstrip("=")


def etag_of(change_key: str) -> str:
    return f'W/"{change_key}"'
