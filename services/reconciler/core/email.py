"""Emails filed into "Salesforce Emails": one completed Salesforce Task per message and
mailbox (created once, whatever happens to the message later), linked to the Contact
matched by a sender or recipient address."""

from __future__ import annotations

from services.core.envelopes import ChangeEvent, CommandContext, stable_id
from services.reconciler.core import merge
from services.reconciler.core.dedupe import contact_key
from services.reconciler.core.state import (
    LinkRecord,
    SideState,
)
from services.reconciler.core.work import Work, event_time


def on_email(w: Work, ev: ChangeEvent, mailbox: str) -> None:
    if ev.op != "upsert" or ev.record is None:
        return  # deleting or moving the message never deletes the Salesforce task
    record = merge.norm("email", ev.record)
    imid = record.get("internet_message_id") or ev.source_id
    link_id = stable_id("email", ev.tenant_id, mailbox.lower(), imid)
    if w.get(link_id) is not None:
        return  # seen before (redelivery, or moved out and back): created once
    link = LinkRecord(
        tenant_id=ev.tenant_id,
        entity="email",
        link_id=link_id,
        user=mailbox,
        status="pending",
        exchange=SideState(id=ev.source_id, version=ev.version, modified_at=event_time(ev), shadow=record),
        desired=record,
        seen=(ev.event_id,),
    )
    w.save(email_create(w, link))


def email_create(w: Work, link: LinkRecord) -> LinkRecord:
    record = link.desired
    own = link.user.lower()
    candidates: list[str] = []
    for a in [record.get("from_address"), *(record.get("to_addresses") or []), *(record.get("cc_addresses") or [])]:
        if isinstance(a, str) and a.strip().lower() != own and a.strip().lower() not in candidates:
            candidates.append(a.strip().lower())
    who_id = None
    for a in candidates:
        key = contact_key(a)
        matches = [c for c in w.find("key", key) if c.salesforce.alive] if key else []
        if matches:
            who_id = matches[0].salesforce.id
            break
    user = w.tenant.user_by_mailbox(link.user)
    ctx = CommandContext(
        mailbox=link.user,
        message_id=link.exchange.id,
        attachments=tuple(record.get("attachments") or ()),
        owner_id=user.salesforce_user_id if user else None,
        who_emails=tuple(candidates),
        who_id=who_id,
    )
    return w.command(link, "salesforce", "create", None, dict(record), None, ctx)
