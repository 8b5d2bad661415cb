"""Settings of one Graph emulator instance."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class GraphEmulatorConfig:
    mailboxes: tuple[str, ...] = ("alice@contoso.test",)
    tenant_id: str = "00000000-0000-0000-0000-0000000000e1"
    # Empty means any client id / secret is accepted (demo); otherwise they must match.
    client_id: str = ""
    client_secret: str = ""
    token_lifetime_s: int = 3599
    default_page_size: int = 10
    # Graph limits Outlook to 4 concurrent requests per app and mailbox; None disables the check.
    concurrency_limit: int | None = 4
    concurrency_retry_after_s: int = 1
    # Outlook keeps delta tokens in a bounded cache and evicts the oldest.
    delta_token_capacity: int = 10_000
    validation_timeout_s: float = 10.0
    notification_timeout_s: float = 3.0
    max_subscription_minutes: int = 10_080
    batch_limit: int = 20
    inline_attachment_limit: int = 3 * 1024 * 1024
    upload_chunk_limit: int = 4 * 1024 * 1024
    extra: dict[str, str] = field(default_factory=dict)
