"""Canonical record shapes: the vocabulary both connectors map to and the reconciler merges.

A canonical record is a plain dict with the field names below. Only fields that exist on
*both* sides are synced (a field only one side knows would be cleared on every round trip),
so this list is the intersection, chosen deliberately. Values are JSON scalars, lists of
strings, or (for recurrence) a small dict; a missing key and None mean "empty".

Time conventions (so that both mappings agree byte for byte and echo suppression works):
- timed events: `start`/`end` are UTC instants "YYYY-MM-DDTHH:MM:SSZ", `time_zone` is the
  zone the organiser sees (IANA name when known, else the Windows name Graph gives);
- all-day events: `is_all_day` True and `start`/`end` are dates "YYYY-MM-DD", end exclusive,
  so they do not move when daylight saving changes;
- task `due_date` is a date "YYYY-MM-DD"; email `sent_at` is a UTC instant.
"""

from __future__ import annotations

from typing import Any, Final

CONTACT_FIELDS: Final = (
    "salutation",
    "given_name",
    "family_name",
    "email",
    "business_phone",
    "mobile_phone",
    "home_phone",
    "job_title",
    "department",
    "street",
    "city",
    "state",
    "postal_code",
    "country",
    "notes",
)

EVENT_FIELDS: Final = (
    "subject",
    "body",
    "start",
    "end",
    "time_zone",
    "is_all_day",
    "location",
    "show_as",  # free | busy | oof (tentative/workingElsewhere map to busy)
    "is_private",
    # Graph patternedRecurrence shape ({"pattern": {...}, "range": {...}}) or None.
    "recurrence",
)

TASK_FIELDS: Final = (
    "subject",
    "body",
    "status",  # not_started | in_progress | completed | waiting | deferred
    "priority",  # low | normal | high
    "due_date",
)

# Exchange -> Salesforce only: becomes a completed Task (TaskSubtype Email).
EMAIL_FIELDS: Final = (
    "subject",
    "body",
    "from_address",
    "to_addresses",  # list of lower-cased addresses
    "cc_addresses",
    "sent_at",
    "internet_message_id",
    # [{"id": graph attachment id, "name", "content_type", "size"}], bytes fetched by the writer.
    "attachments",
)

FIELDS: Final[dict[str, tuple[str, ...]]] = {
    "contact": CONTACT_FIELDS,
    "event": EVENT_FIELDS,
    "task": TASK_FIELDS,
    "email": EMAIL_FIELDS,
}

# Email Tasks keep only subject, body and the sent day (ActivityDate).
EMAIL_FIELDS_SALESFORCE_LACKS: Final = frozenset(
    {"from_address", "to_addresses", "cc_addresses", "sent_at", "internet_message_id", "attachments"}
)


def not_stored_by_salesforce(entity: str, *, time_zone_field: str | None = None) -> frozenset[str]:
    """Canonical fields Salesforce cannot hold, so a record read from it lacks them without
    anyone having cleared them: a merge must read their absence as "unknown". Event
    `time_zone` needs a custom field (`time_zone_field`; recurring events carry it
    regardless). Here, not in the connector, because the reconciler decides with it."""
    if entity == "event":
        return frozenset() if time_zone_field else frozenset({"time_zone"})
    if entity == "email":
        return EMAIL_FIELDS_SALESFORCE_LACKS
    return frozenset()


TASK_STATUSES: Final = ("not_started", "in_progress", "completed", "waiting", "deferred")
PRIORITIES: Final = ("low", "normal", "high")
SHOW_AS: Final = ("free", "busy", "oof")


def normalise_email(address: str | None) -> str | None:
    """Emails compare case-insensitively and without surrounding blanks (dedupe key)."""
    if not address:
        return None
    return address.strip().lower() or None


def canonical(entity: str, record: dict[str, Any]) -> dict[str, Any]:
    """Keep only the canonical fields of `entity`, dropping empties ("" and None),
    so that two mappings of the same item compare equal."""
    out: dict[str, Any] = {}
    for name in FIELDS[entity]:
        v = record.get(name)
        if v is None or v == "" or v == []:
            continue
        out[name] = v
    return out
