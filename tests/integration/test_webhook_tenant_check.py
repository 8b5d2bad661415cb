"""The receiver refuses a notification whose subscription belongs to one directory tenant but
which names another in `tenantId` (Graph puts the Azure AD tenant id in every change and
lifecycle notification; see the changeNotification resource in the Graph v1.0 docs,
https://learn.microsoft.com/en-us/graph/api/resources/changenotification). Over real
HTTP, for both paths: this pod's own subscription and another pod's (validated against
the table, then forwarded)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
import structlog
from aiohttp import web
from prometheus_client import REGISTRY
from structlog.typing import EventDict, WrappedLogger

from services.ingest_exchange.subscription_table import SubscriptionRecord, SubscriptionTable
from services.ingest_exchange.webhook import WebhookReceiver
from tests.support.processes import free_port

TENANT_A = str(uuid.uuid4())
TENANT_B = str(uuid.uuid4())
OWN_STATE = "own-client-state-" + uuid.uuid4().hex
OTHER_STATE = "other-client-state-" + uuid.uuid4().hex


@dataclass
class Rig:
    url: str
    receiver: WebhookReceiver
    pokes: list[str] = field(default_factory=list)
    lifecycles: list[str] = field(default_factory=list)
    forwarded: list[tuple[str, str]] = field(default_factory=list)
    logs: list[EventDict] = field(default_factory=list)

    async def post(self, path: str, items: list[dict[str, Any]]) -> int:
        async with aiohttp.ClientSession() as s, s.post(f"{self.url}{path}", json={"value": items}) as r:
            return r.status


def change(sid: str, state: str, tenant: str | None) -> dict[str, Any]:
    n: dict[str, Any] = {
        "id": uuid.uuid4().hex[:16], "subscriptionId": sid, "clientState": state, "changeType": "updated",
        "subscriptionExpirationDateTime": "2030-01-01T00:00:00.000Z", "resource": "Users/u1/Contacts/c1",
        "resourceData": {"@odata.type": "#Microsoft.Graph.Contact", "id": "c1"},
    }
    if tenant is not None:
        n["tenantId"] = tenant
    return n


def errors(kind: str) -> float:
    return REGISTRY.get_sample_value("exsf_errors_total", {"service": "ingest-exchange", "kind": kind}) or 0.0


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    table = SubscriptionTable()
    other = SubscriptionRecord("other-1", OTHER_STATE, "contoso", "bob@x", "contacts:f", "/users/bob@x/contacts",
                               "2030-01-01T00:00:00Z", 1, directory_tenant=TENANT_A)
    assert table.apply(b"other-1", other.encode())
    holder: list[Rig] = []

    async def forward(rec: SubscriptionRecord, what: str) -> None:
        holder[0].forwarded.append((rec.id, what))

    receiver = WebhookReceiver(table, forward)
    port = free_port()
    r = Rig(f"http://127.0.0.1:{port}", receiver)
    holder.append(r)

    async def lifecycle(event: str) -> None:
        r.lifecycles.append(event)

    receiver.register("own-1", OWN_STATE, lambda: r.pokes.append("own-1"), lifecycle, TENANT_A)

    def tap(logger: WrappedLogger, name: str, event_dict: EventDict) -> EventDict:
        r.logs.append(dict(event_dict))
        return event_dict

    old = structlog.get_config()["processors"]
    structlog.configure(processors=[*old[:-1], tap, *old[-1:]])
    runner = web.AppRunner(receiver.app())
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield r
    finally:
        await runner.cleanup()
        structlog.configure(processors=old)


async def test_notification_naming_another_tenant_is_refused_and_counted(rig: Rig) -> None:
    r = rig
    before = errors("webhook_tenant_mismatch")
    # Genuine: right clientState, the subscription's own directory (case differs: GUIDs).
    assert await r.post("/notifications", [change("own-1", OWN_STATE, TENANT_A.upper())]) == 202
    assert r.pokes == ["own-1"]

    # Right clientState, another tenant: refused, nothing poked, counted apart.
    assert await r.post("/notifications", [change("own-1", OWN_STATE, TENANT_B)]) == 403
    assert r.pokes == ["own-1"]
    assert r.receiver.rejected_tenant == 1 and r.receiver.rejected == 1
    assert errors("webhook_tenant_mismatch") == before + 1

    # Another pod's subscription: the table carries the tenant too, nothing is forwarded.
    assert await r.post("/notifications", [change("other-1", OTHER_STATE, TENANT_B)]) == 403
    assert r.forwarded == [] and r.receiver.forwarded == 0
    assert await r.post("/notifications", [change("other-1", OTHER_STATE, TENANT_A)]) == 202
    await _settle()
    assert r.forwarded == [("other-1", "change")]

    # A batch mixing both: the genuine one is taken, the other refused (Graph retries
    # nothing on a 2xx, so one bad entry must not cost the good one).
    mixed = [change("own-1", OWN_STATE, TENANT_B), change("own-1", OWN_STATE, TENANT_A)]
    assert await r.post("/notifications", mixed) == 202
    assert r.pokes == ["own-1", "own-1"]
    assert r.receiver.rejected_tenant == 3
    assert errors("webhook_tenant_mismatch") == before + 3

    # Lifecycle events are checked the same way.
    bad = {**change("own-1", OWN_STATE, TENANT_B), "lifecycleEvent": "subscriptionRemoved"}
    assert await r.post("/lifecycle", [bad]) == 403
    await _settle()
    assert r.lifecycles == []
    good = {**bad, "tenantId": TENANT_A}
    assert await r.post("/lifecycle", [good]) == 202
    await _settle()
    assert r.lifecycles == ["subscriptionRemoved"]

    # One line per refusal, naming the reason and the tenant Graph named, never a clientState.
    refused = [e for e in r.logs if e.get("event") == "webhook.rejected"]
    assert len(refused) == r.receiver.rejected == r.receiver.rejected_tenant == 4
    assert all(e["reason"] == "tenant mismatch" and e["notified_tenant"] == TENANT_B for e in refused)
    text = "\n".join(repr(e) for e in r.logs)
    assert OWN_STATE not in text and OTHER_STATE not in text


async def test_no_tenant_id_still_needs_the_right_client_state(rig: Rig) -> None:
    r = rig
    assert await r.post("/notifications", [change("own-1", OWN_STATE, None)]) == 202
    assert await r.post("/notifications", [change("own-1", "forged", TENANT_A)]) == 403
    assert r.pokes == ["own-1"]
    assert r.receiver.rejected == 1 and r.receiver.rejected_tenant == 0


async def _settle() -> None:
    # Forwarding and lifecycle handling run as tasks after the 202.
    for _ in range(20):
        await asyncio.sleep(0.01)
