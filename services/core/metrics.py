"""Prometheus metrics shared by all services. Labels stay low-cardinality: service, topic,
entity, outcome - never a user or an item id (tenant only where a shard owner needs it)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EVENTS_PUBLISHED = Counter("exsf_events_published_total", "Change events published to the bus", ["service", "entity"])
MESSAGES_CONSUMED = Counter("exsf_messages_consumed_total", "Messages consumed", ["service", "topic"])
DROPPED = Counter("exsf_events_dropped_total", "Source changes deliberately not synced", ["service", "reason"])
DEADLETTERS = Counter("exsf_deadletters_total", "Messages sent to exsf.deadletter", ["service", "reason"])
COMMANDS = Counter("exsf_commands_total", "Commands emitted or applied", ["service", "target", "action", "outcome"])
API_CALLS = Counter("exsf_api_calls_total", "Calls to Graph / Salesforce", ["system", "kind", "outcome"])
THROTTLED = Counter("exsf_throttled_total", "Throttling answers received (429, 503, limit exceeded)", ["system"])
ERRORS = Counter("exsf_errors_total", "Errors by kind", ["service", "kind"])
TRANSACTION_SECONDS = Histogram(
    "exsf_transaction_seconds",
    "Time to commit one bus transaction",
    ["service"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
ASSIGNED_PARTITIONS = Gauge("exsf_assigned_partitions", "Partitions this instance owns", ["service"])
STREAMS_ACTIVE = Gauge("exsf_streams_active", "Source streams running on this instance", ["service"])
