"""Writer settings. Every delay is configurable so tests run with small values; the
defaults are production-sized."""

from __future__ import annotations

import os
from dataclasses import dataclass


def _f(name: str, default: float) -> float:
    raw = os.environ.get(name)
    return float(raw) if raw else default


def _i(name: str, default: int) -> int:
    raw = os.environ.get(name)
    return int(raw) if raw else default


@dataclass(frozen=True)
class WriterSettings:
    # Other transient errors (5xx, timeouts, UNABLE_TO_LOCK_ROW): attempts per command
    # before it is reported `failed` and dead-lettered, with jittered exponential backoff.
    max_attempts: int = 5
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0
    # A throttled call (429/503, REQUEST_LIMIT_EXCEEDED) pauses the partition for the
    # server's Retry-After, or these when it gave none.
    throttle_default_s: float = 5.0
    request_limit_backoff_s: float = 60.0
    # Graph: Outlook allows 4 concurrent requests per app and mailbox.
    mailbox_concurrency: int = 4
    # kiota's own per-request retries (and ExchangeClient.batch's throttled sub-request re-sends).
    graph_max_retries: int = 3
    graph_retry_delay_s: float = 3.0
    # Parallel REST calls per Salesforce org.
    salesforce_concurrency: int = 4
    # Recently answered command ids (duplicates are answered without any API call).
    result_cache_size: int = 100_000
    result_cache_ttl_s: float = 3600.0
    # How often exsf.tenants is re-read even without an unknown tenant.
    tenant_reload_s: float = 300.0
    # Processor batch size (messages per partition batch).
    max_batch: int = 500

    @classmethod
    def from_env(cls) -> WriterSettings:
        d = cls()
        return cls(
            max_attempts=_i("EXSF_WRITER_MAX_ATTEMPTS", d.max_attempts),
            backoff_base_s=_f("EXSF_WRITER_BACKOFF_BASE_S", d.backoff_base_s),
            backoff_max_s=_f("EXSF_WRITER_BACKOFF_MAX_S", d.backoff_max_s),
            throttle_default_s=_f("EXSF_WRITER_THROTTLE_DEFAULT_S", d.throttle_default_s),
            request_limit_backoff_s=_f("EXSF_WRITER_REQUEST_LIMIT_BACKOFF_S", d.request_limit_backoff_s),
            mailbox_concurrency=_i("EXSF_WRITER_MAILBOX_CONCURRENCY", d.mailbox_concurrency),
            graph_max_retries=_i("EXSF_WRITER_GRAPH_MAX_RETRIES", d.graph_max_retries),
            graph_retry_delay_s=_f("EXSF_WRITER_GRAPH_RETRY_DELAY_S", d.graph_retry_delay_s),
            salesforce_concurrency=_i("EXSF_WRITER_SALESFORCE_CONCURRENCY", d.salesforce_concurrency),
            result_cache_size=_i("EXSF_WRITER_RESULT_CACHE_SIZE", d.result_cache_size),
            result_cache_ttl_s=_f("EXSF_WRITER_RESULT_CACHE_TTL_S", d.result_cache_ttl_s),
            tenant_reload_s=_f("EXSF_WRITER_TENANT_RELOAD_S", d.tenant_reload_s),
            max_batch=_i("EXSF_WRITER_MAX_BATCH", d.max_batch),
        )
