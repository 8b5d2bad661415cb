"""The unmodified aiosfstream-ng client (stock PasswordAuthenticator, TOKEN_URL patched as
reference C1 allows, AUTOMATIC replay markers) works against the emulator unchanged."""

from __future__ import annotations

import asyncio

import aiosfstream_ng.auth
import pytest
from aiosfstream_ng import Client, PasswordAuthenticator, ReplayMarker
from aiosfstream_ng.exceptions import ServerError

from tests.emulators.salesforce.conftest import Sf
from tests.support.waiting import WAIT_S


async def test_stock_client_receives_cdc_and_stores_markers_by_channel(sf: Sf, monkeypatch: pytest.MonkeyPatch
                                                                        ) -> None:
    monkeypatch.setattr(aiosfstream_ng.auth, "TOKEN_URL", sf.base + "/services/oauth2/token")
    markers: dict[str, ReplayMarker] = {}
    auth = PasswordAuthenticator("cid", "cs", "alice@contoso.test", "password")
    client = Client(auth, replay=markers, connection_timeout=10)
    await client.open()
    try:
        await client.subscribe("/data/ContactChangeEvent")
        cid = await sf.admin.create("Contact", {"LastName": "Stock"})
        msg = await asyncio.wait_for(client.receive(), WAIT_S)
        assert msg["channel"] == "/data/ContactChangeEvent"
        assert msg["data"]["payload"]["ChangeEventHeader"]["recordIds"] == [cid]
        marker = markers["/data/ContactChangeEvent"]
        assert marker.replay_id == msg["data"]["event"]["replayId"]
        assert marker.date == str(msg["data"]["payload"]["ChangeEventHeader"]["commitTimestamp"])
        await client.unsubscribe("/data/ContactChangeEvent")
        assert client.subscriptions == set()
    finally:
        await client.close()
    assert sf.emulator.cometd.clients == {}  # /meta/disconnect forgot the client


async def test_stock_client_sees_a_bad_replay_id_as_server_error_400(sf: Sf, monkeypatch: pytest.MonkeyPatch
                                                                     ) -> None:
    monkeypatch.setattr(aiosfstream_ng.auth, "TOKEN_URL", sf.base + "/services/oauth2/token")
    auth = PasswordAuthenticator("cid", "cs", "alice@contoso.test", "password")
    client = Client(auth, replay={"/data/ChangeEvents": ReplayMarker("1", 77)}, connection_timeout=10)
    await client.open()
    try:
        with pytest.raises(ServerError) as exc:
            await client.subscribe("/data/ChangeEvents")
        assert exc.value.error_code == 400
    finally:
        await client.close()
