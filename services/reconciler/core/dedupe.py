"""Match keys: how a new item is recognised as one the tenant already has (docs/design.md §7).

Keys are plain strings so they can live in an index rebuilt from link records alone.
Contacts match tenant-wide (two mailboxes holding the same person share one Salesforce
Contact); events and tasks match per owner, because two people can well have their own
"Weekly sync" on the same day.
"""

from __future__ import annotations

from typing import Any

from services.core.records import normalise_email


def _norm(text: Any) -> str | None:
    if not isinstance(text, str):
        return None
    t = " ".join(text.split()).lower()
    return t or None


def match_keys(entity: str, owner: str, record: dict[str, Any] | None, ical_uid: str | None = None) -> tuple[str, ...]:
    """The dedupe keys of an item; empty when the item carries too little to match safely."""
    if record is None:
        return ()
    owner = owner.lower()
    if entity == "contact":
        email = normalise_email(record.get("email"))
        return (f"contact|email|{email}",) if email else ()
    if entity == "event":
        keys: list[str] = []
        if ical_uid:
            keys.append(f"event|ical|{ical_uid}")
        subject, start = _norm(record.get("subject")), record.get("start")
        if subject and start:
            keys.append(f"event|{owner}|{subject}|{start}")
        return tuple(keys)
    if entity == "task":
        # A due date is required: two undated "Call back" tasks are too often distinct.
        subject, due = _norm(record.get("subject")), record.get("due_date")
        return (f"task|{owner}|{subject}|{due}",) if subject and due else ()
    return ()


def contact_key(address: str | None) -> str | None:
    email = normalise_email(address)
    return f"contact|email|{email}" if email else None
