"""Bayeux wire behaviour of /cometd/{version}, with plain HTTP requests."""

from __future__ import annotations

from typing import Any

from tests.emulators.salesforce.conftest import Sf


async def post(sf: Sf, messages: list[dict[str, Any]], token: str | None = "default") -> list[dict[str, Any]]:
    headers = {} if token is None else {"Authorization": f"Bearer {sf.token if token == 'default' else token}"}
    async with sf.http.post(sf.base + "/cometd/45.0", json=messages, headers=headers) as r:
        assert r.status == 200 and r.content_type == "application/json"
        body: list[dict[str, Any]] = await r.json()
        return body


async def handshake(sf: Sf) -> str:
    (reply,) = await post(sf, [{"channel": "/meta/handshake", "version": "1.0", "id": "0",
                                "supportedConnectionTypes": ["websocket", "long-polling"]}])
    return str(reply["clientId"])


def connect(cid: str, mid: str) -> dict[str, Any]:
    return {"channel": "/meta/connect", "clientId": cid, "connectionType": "long-polling", "id": mid}


def subscribe(cid: str, mid: str, channel: str, replay: int | None = None) -> dict[str, Any]:
    m: dict[str, Any] = {"channel": "/meta/subscribe", "clientId": cid, "subscription": channel, "id": mid}
    if replay is not None:
        m["ext"] = {"replay": {channel: replay}}
    return m


async def test_handshake_reply_offers_long_polling_only(sf: Sf) -> None:
    (reply,) = await post(sf, [{"channel": "/meta/handshake", "version": "1.0", "id": "0",
                                "supportedConnectionTypes": ["websocket", "long-polling"]}])
    assert reply["successful"] is True and reply["id"] == "0"
    assert reply["supportedConnectionTypes"] == ["long-polling"] and len(reply["clientId"]) == 26
    assert reply["ext"] == {"replay": True, "payload.format": True}
    assert reply["advice"]["interval"] == 0  # the client sleeps `interval` *seconds* (C8)


async def test_auth_failures(sf: Sf) -> None:
    (r,) = await post(sf, [{"channel": "/meta/handshake", "id": "0"}], token=None)
    assert r["error"] == "401::Request requires authentication"
    (r,) = await post(sf, [{"channel": "/meta/handshake", "id": "0"}], token="00Dbogus!token")
    assert r["error"] == "403::Handshake denied"
    assert r["ext"]["sfdc"]["failureReason"] == "401::Authentication invalid"
    cid = await handshake(sf)
    await sf.admin.expire_tokens()
    (r,) = await post(sf, [connect(cid, "1")])
    assert (r["error"], r["advice"]["reconnect"]) == ("401::Authentication invalid", "none")


async def test_batch_first_connect_and_replay_ride_together(sf: Sf) -> None:
    cid0 = await sf.admin.create("Task", {"Subject": "before"})
    cid = await handshake(sf)
    replies = await post(sf, [connect(cid, "1"), subscribe(cid, "2", "/data/TaskChangeEvent", -2),
                              subscribe(cid, "3", "/data/NopeChangeEvent")])
    by_id = {r.get("id"): r for r in replies if "id" in r}
    assert by_id["1"]["successful"] is True and by_id["2"]["successful"] is True
    assert by_id["3"]["error"] == (
        "400::The channel you requested to subscribe to does not exist {/data/NopeChangeEvent}")
    events = [r for r in replies if "data" in r]
    assert [e["channel"] for e in events] == ["/data/TaskChangeEvent"]
    assert events[0]["data"]["payload"]["ChangeEventHeader"]["recordIds"] == [cid0]
    assert "createdDate" not in events[0]["data"]["event"]  # CDC dates come from commitTimestamp (C13)
    # A later connect is answered by the next event.
    await sf.admin.create("Task", {"Subject": "later"})
    replies = await post(sf, [connect(cid, "4")])
    assert replies[0]["successful"] is True and len([r for r in replies if "data" in r]) == 1


async def test_unknown_client_and_invalid_replay_id(sf: Sf) -> None:
    (r,) = await post(sf, [connect("nobody", "1")])
    assert r["error"] == "403::Unknown client" and r["advice"] == {"reconnect": "handshake", "interval": 0}
    cid = await handshake(sf)
    (r,) = await post(sf, [subscribe(cid, "1", "/data/ChangeEvents", 42)])
    assert r["successful"] is False and r["subscription"] == "/data/ChangeEvents"
    assert r["error"] == ("400::The replayId 42 you provided was invalid.  Please provide a valid ID, -2 to replay "
                          "all events, or -1 to replay only new events.")
    await sf.admin.expire_sessions()
    (r,) = await post(sf, [connect(cid, "2")])
    assert r["error"] == "403::Unknown client"


async def test_retention_window_prunes_old_events(sf: Sf) -> None:
    await sf.admin.create("Contact", {"LastName": "old"})
    first = (await sf.admin.events())[0]["replay_id"]
    await sf.admin.create("Contact", {"LastName": "old2"})
    await sf.admin.advance_clock(sf.emulator.config.retention_s + 60)
    await sf.admin.create("Contact", {"LastName": "new"})
    assert [e["payload"]["Name"]["LastName"] for e in await sf.admin.events()] == ["new"]
    cid = await handshake(sf)
    (r,) = await post(sf, [subscribe(cid, "1", "/data/ContactChangeEvent", first)])
    assert r["successful"] is False and r["error"].startswith("400::The replayId")


async def test_request_body_limit(sf: Sf) -> None:
    async with sf.http.post(sf.base + "/cometd/45.0", data=b"[" + b" " * 40_000 + b"]",
                            headers={"Authorization": f"Bearer {sf.token}"}) as r:
        assert r.status == 413
