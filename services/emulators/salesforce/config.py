"""Settings of one Salesforce emulator instance."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class SalesforceEmulatorConfig:
    api_version: str = "60.0"
    # Empty means any client id / secret is accepted (demo); otherwise they must match.
    client_id: str = ""
    client_secret: str = ""
    # Every named user logs in with this password unless the user spec says otherwise.
    default_password: str = "password"
    # Access tokens stop working this long after issue (None: only when expired via /_admin).
    session_timeout_s: float | None = None
    # How long a held /meta/connect waits for events before answering empty (Salesforce: 110 s).
    long_poll_timeout_s: float = 110.0
    # A CometD client that does not reconnect within this window is forgotten (Salesforce: 40 s).
    client_timeout_s: float = 40.0
    # CDC retention (Salesforce: 72 h); older events are pruned and their replay ids become invalid.
    retention_s: float = 72 * 3600.0
    daily_api_limit: int = 100_000
    collection_limit: int = 200
    query_default_batch: int = 2000
    query_min_batch: int = 200
