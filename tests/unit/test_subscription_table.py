"""The subscription table every ingest-exchange pod validates notifications against, and the
round-robin front tests put before the pods' webhook ports."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from aiohttp import ClientSession, web

from services.ingest_exchange.subscription_table import SubscriptionRecord, SubscriptionTable, directory_tenant_of
from tests.support.front import RoundRobinFront


def rec(sid: str = "s1", shard: int = 3, state: str = "secret-state") -> SubscriptionRecord:
    return SubscriptionRecord(
        sid, state, "t1", "a@x", "contacts:f1", "/users/a@x/contacts", "2030-01-01T00:00:00Z", shard,
        directory_tenant="t1",
    )


def test_roundtrip_and_secret_not_in_repr() -> None:
    r = rec()
    assert SubscriptionRecord.decode(r.encode()) == r
    assert "secret-state" not in repr(r)


def test_check_and_tombstone() -> None:
    t = SubscriptionTable()
    assert t.apply(b"s1", rec().encode())
    assert t.check("s1", "secret-state", "t1") == "ok"
    assert t.check("s1", "wrong", "t1") == "clientState mismatch"
    assert t.check("s1", "secret-state", "t2") == "tenant mismatch"
    assert t.check("s2", "secret-state", "t1") == "unknown subscription"
    assert not t.apply(b"s1", b"not json")  # unreadable: ignored, table unchanged
    assert not t.apply(b"other", rec().encode())  # key and id disagree
    assert t.check("s1", "secret-state", None) == "ok"
    assert t.apply(b"s1", None)
    assert t.check("s1", "secret-state", "t1") == "unknown subscription"


def test_pending_traces_validate_nothing_and_are_kept_apart() -> None:
    t = SubscriptionTable()
    p = SubscriptionRecord(
        "pending:n1", "st", "t1", "a@x", "contacts:f1", "/users/a@x/contacts", "2030-01-01T00:00:00Z", 3,
        pending=True,
    )
    assert t.apply(p.id.encode(), p.encode())
    assert t.apply(b"s1", rec().encode())
    assert t.check("pending:n1", "st", None) == "unknown subscription"
    assert [r.id for r in t.of_resource("t1", "a@x", "/users/a@x/contacts")] == ["s1"]
    assert [r.id for r in t.pending_of_resource("t1", "a@x", "/users/a@x/contacts")] == ["pending:n1"]
    assert t.check("s1", "secret-state", "T1") == "ok", "directory ids are GUIDs: case does not matter"


def test_takeover_views() -> None:
    t = SubscriptionTable()
    t.apply(b"a", rec("a", shard=1).encode())
    t.apply(b"b", rec("b", shard=2).encode())
    assert [r.id for r in t.of_shard(1)] == ["a"]
    assert [r.id for r in t.of_resource("t1", "a@x", "/users/a@x/contacts")] == ["a", "b"]
    assert rec().expired(datetime(2031, 1, 1, tzinfo=UTC)) and not rec().expired(datetime(2029, 1, 1, tzinfo=UTC))


async def test_front_spreads_and_skips_dead_backend() -> None:
    async def serve(name: str) -> tuple[web.AppRunner, int]:
        async def h(request: web.Request) -> web.Response:
            return web.Response(status=202, text=f"{name}:{request.query_string}:{await request.text()}")

        app = web.Application()
        app.router.add_post("/notifications", h)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return runner, site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    (ra, pa), (rb, pb) = await serve("a"), await serve("b")
    try:
        async with RoundRobinFront([pa, pb]) as url, ClientSession() as http:
            got = []
            for _ in range(4):
                async with http.post(f"{url}/notifications?x=1", data=b"hi") as resp:
                    assert resp.status == 202
                    got.append(await resp.text())
            assert sorted(got) == ["a:x=1:hi", "a:x=1:hi", "b:x=1:hi", "b:x=1:hi"]
            await rb.cleanup()
            for _ in range(2):
                async with http.post(f"{url}/notifications", data=b"") as resp:
                    assert (resp.status, (await resp.text())[0]) == (202, "a")
    finally:
        await ra.cleanup()


async def test_receiver_forwards_other_pods_subscription_and_rejects_forgeries() -> None:
    """A pod that did not create the subscription answers 202 for a genuine notification and
    forwards it; a wrong clientState or unknown id gets 403 and nothing is forwarded."""
    from services.ingest_exchange.webhook import WebhookReceiver

    table = SubscriptionTable()
    table.apply(b"s1", rec().encode())
    sent: list[tuple[str, str]] = []

    async def forward(r: SubscriptionRecord, what: str) -> None:
        sent.append((r.id, what))

    receiver = WebhookReceiver(table, forward)
    runner = web.AppRunner(receiver.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with ClientSession() as http:

            async def post(path: str, n: dict[str, str]) -> int:
                async with http.post(f"http://127.0.0.1:{port}{path}", json={"value": [n]}) as resp:
                    return resp.status

            assert await post("/notifications", {"subscriptionId": "s1", "clientState": "secret-state"}) == 202
            assert await post("/notifications", {"subscriptionId": "s1", "clientState": "forged"}) == 403
            assert await post("/notifications", {"subscriptionId": "nope", "clientState": "secret-state"}) == 403
            lc = {"subscriptionId": "s1", "clientState": "secret-state", "lifecycleEvent": "missed"}
            assert await post("/lifecycle", lc) == 202
        for _ in range(50):
            if len(sent) == 2:
                break
            await asyncio.sleep(0.01)
        assert sent == [("s1", "change"), ("s1", "missed")]
        assert (receiver.forwarded, receiver.rejected) == (2, 2)
    finally:
        await runner.cleanup()


def test_only_a_directory_guid_is_held_to_notifications() -> None:
    guid = "0D3F1F5E-1234-4ABC-9DEF-0123456789AB"
    assert directory_tenant_of(guid) == guid.lower()
    assert directory_tenant_of("contoso.onmicrosoft.com") == ""  # a domain: Graph names the GUID
    assert directory_tenant_of("") == ""
