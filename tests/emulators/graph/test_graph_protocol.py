"""Wire-level behaviour of the Graph emulator that msgraph-sdk and exsf rely on."""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import Awaitable, Callable
from typing import Any

MAILBOX = "alice@contoso.test"
Raw = Any
LINK = "String {66f5a359-4659-4830-9070-00047ec6ac6e} Name exsfLinkId"


async def test_requests_need_a_token_the_emulator_issued(raw: Raw, token_for: Callable[[Raw], Awaitable[str]]) -> None:
    async with raw.http.get(raw.user + "/contacts") as r:
        assert r.status == 401
        assert (await r.json())["error"]["code"] == "InvalidAuthenticationToken"
    async with raw.http.get(raw.user + "/contacts", headers={"Authorization": "Bearer forged"}) as r:
        assert r.status == 401
    assert (await raw.call("GET", raw.user + "/contacts"))[0] == 200
    await raw.admin.expire_tokens()
    assert (await raw.call("GET", raw.user + "/contacts"))[0] == 401
    raw.token = await token_for(raw)
    assert (await raw.call("GET", raw.user + "/contacts"))[0] == 200


async def test_token_endpoint_checks_configured_credentials() -> None:
    import aiohttp

    from services.emulators.graph.app import serve
    from services.emulators.graph.config import GraphEmulatorConfig

    runner, url = await serve(config=GraphEmulatorConfig(client_id="app", client_secret="right"))
    try:
        async with aiohttp.ClientSession() as http:
            form = {"grant_type": "client_credentials", "client_id": "app", "client_secret": "wrong", "scope": "s"}
            async with http.post(f"{url}/{GraphEmulatorConfig().tenant_id}/oauth2/v2.0/token", data=form) as r:
                assert r.status == 401 and (await r.json())["error"] == "invalid_client"
            form["client_secret"] = "right"
            async with http.post(f"{url}/{GraphEmulatorConfig().tenant_id}/oauth2/v2.0/token", data=form) as r:
                body = await r.json()
                assert r.status == 200 and body["token_type"] == "Bearer" and body["expires_in"] > 0
    finally:
        await runner.cleanup()


async def test_unknown_mailbox_is_404(raw: Raw) -> None:
    status, body, _ = await raw.call("GET", f"{raw.api}/users/nobody@contoso.test/contacts")
    assert status == 404 and body["error"]["code"] == "ErrorInvalidUser"


async def test_etag_change_key_and_if_match(raw: Raw) -> None:
    status, c, _headers = await raw.call("POST", raw.user + "/contacts", {"givenName": "Ann"})
    assert status == 201 and c["@odata.etag"] == f'W/"{c["changeKey"]}"'
    _, got, _ = await raw.call("GET", f"{raw.user}/contacts/{c['id']}")
    assert got["@odata.etag"] == c["@odata.etag"]
    status, upd, _ = await raw.call("PATCH", f"{raw.user}/contacts/{c['id']}", {"surname": "Lee"},
                                    **{"If-Match": c["@odata.etag"]})
    assert status == 200 and upd["changeKey"] != c["changeKey"] and upd["surname"] == "Lee"
    for method in ("PATCH", "DELETE"):
        status, err, _ = await raw.call(method, f"{raw.user}/contacts/{c['id']}", {"surname": "X"},
                                        **{"If-Match": c["@odata.etag"]})
        assert status == 412 and err["error"]["code"] == "ErrorIrresolvableConflict"
    assert (await raw.call("DELETE", f"{raw.user}/contacts/{c['id']}", **{"If-Match": upd["@odata.etag"]}))[0] == 204


async def test_extended_property_expand_and_filter(raw: Raw) -> None:
    for n in range(3):
        await raw.call("POST", raw.user + "/contacts", {
            "givenName": f"P{n}", "singleValueExtendedProperties": [{"id": LINK, "value": f"v{n}"},
                                                                    {"id": "String 0x0037", "value": "other"}]})
    expand = f"singleValueExtendedProperties($filter=id eq '{LINK}')"
    flt = f"singleValueExtendedProperties/Any(ep: ep/id eq '{LINK}' and ep/value eq 'v1')"
    async with raw.http.get(raw.user + "/contacts", params={"$filter": flt, "$expand": expand},
                            headers=raw.auth()) as r:
        body = await r.json()
    assert [c["givenName"] for c in body["value"]] == ["P1"]
    assert body["value"][0]["singleValueExtendedProperties"] == [{"id": LINK, "value": "v1"}]
    async with raw.http.get(raw.user + "/contacts", headers=raw.auth()) as r:
        assert all("singleValueExtendedProperties" not in c for c in (await r.json())["value"])


async def test_master_categories_reject_duplicates(raw: Raw) -> None:
    url = raw.user + "/outlook/masterCategories"
    assert (await raw.call("POST", url, {"displayName": "Salesforce", "color": "preset7"}))[0] == 201
    status, err, _ = await raw.call("POST", url, {"displayName": "salesforce"})
    assert status == 409 and err["error"]["code"] == "ErrorDuplicateCategory"
    _, listed, _ = await raw.call("GET", url)
    assert [c["displayName"] for c in listed["value"]] == ["Salesforce"]


async def test_well_known_folder_and_key_syntax(raw: Raw) -> None:
    _, inbox, _ = await raw.call("GET", raw.user + "/mailFolders/inbox")
    assert inbox["displayName"] == "Inbox"
    status, msg, _ = await raw.call("POST", f"{raw.api}/users('{MAILBOX}')/mailFolders('inbox')/messages",
                                    {"subject": "hi"})
    assert status == 201 and msg["parentFolderId"] == inbox["id"]


async def test_delta_paging_tokens_and_removed_items(raw: Raw) -> None:
    ids = [(await raw.call("POST", raw.user + "/contacts", {"givenName": f"D{n}"}))[1]["id"] for n in range(5)]
    for spelling in ("delta", "delta()", "microsoft.graph.delta()"):
        status, _, _ = await raw.call("GET", f"{raw.user}/contacts/{spelling}")
        assert status == 200
    _, page, _ = await raw.call("GET", raw.user + "/contacts/delta()", Prefer="odata.maxpagesize=2")
    seen = [v["id"] for v in page["value"]]
    while "@odata.nextLink" in page:
        assert "@odata.deltaLink" not in page
        token = page["@odata.nextLink"].split("$skiptoken=")[1]
        assert re.fullmatch(r"[A-Za-z0-9_-]+", token)
        _, page, _ = await raw.call("GET", page["@odata.nextLink"], Prefer="odata.maxpagesize=2")
        assert len(page["value"]) <= 2
        seen += [v["id"] for v in page["value"]]
    assert sorted(seen) == sorted(ids)
    delta_link = page["@odata.deltaLink"]
    await raw.call("DELETE", f"{raw.user}/contacts/{ids[0]}")
    # Token option names match case-insensitively.
    _, later, _ = await raw.call("GET", delta_link.replace("$deltatoken", "$DeltaToken"))
    assert later["value"] == [{"@odata.type": "#microsoft.graph.contact", "id": ids[0],
                               "@removed": {"reason": "deleted"}}]
    status, err, _ = await raw.call("GET", raw.user + "/contacts/delta?$deltatoken=unknown")
    assert status == 410 and err["error"]["code"] == "SyncStateNotFound"
    await raw.admin.faults(delta_gone_code="resyncRequired")
    await raw.admin.evict_delta_tokens()
    status, err, _ = await raw.call("GET", later["@odata.deltaLink"])
    assert status == 410 and err["error"]["code"] == "resyncRequired"


async def test_calendar_view_needs_window_and_expands_exceptions(raw: Raw) -> None:
    assert (await raw.call("GET", raw.user + "/calendarView/delta()"))[0] == 400
    status, series, _ = await raw.call("POST", raw.user + "/events", {
        "subject": "Daily", "start": {"dateTime": "2026-04-06T08:00:00", "timeZone": "UTC"},
        "end": {"dateTime": "2026-04-06T08:15:00", "timeZone": "UTC"},
        "recurrence": {"pattern": {"type": "daily", "interval": 1},
                       "range": {"type": "endDate", "startDate": "2026-04-06", "endDate": "2026-04-10"}}})
    assert status == 201 and series["type"] == "seriesMaster"
    window = "startDateTime=2026-04-01T00:00:00Z&endDateTime=2026-05-01T00:00:00Z"
    _, view, _ = await raw.call("GET", f"{raw.user}/calendarView?{window}")
    occ = view["value"]
    assert [o["start"]["dateTime"][:10] for o in occ] == [f"2026-04-{d:02d}" for d in range(6, 11)]
    status, exc, _ = await raw.call("PATCH", f"{raw.user}/events/{occ[2]['id']}", {
        "subject": "Daily (moved)", "start": {"dateTime": "2026-04-08T10:00:00", "timeZone": "UTC"},
        "end": {"dateTime": "2026-04-08T10:15:00", "timeZone": "UTC"}})
    assert status == 200 and exc["type"] == "exception" and exc["seriesMasterId"] == series["id"]
    _, view, _ = await raw.call("GET", f"{raw.user}/calendarView?{window}",
                                Prefer='outlook.timezone="Pacific Standard Time"')
    moved = next(o for o in view["value"] if o["id"] == occ[2]["id"])
    assert moved["subject"] == "Daily (moved)" and moved["type"] == "exception"
    assert moved["start"] == {"dateTime": "2026-04-08T03:00:00.0000000", "timeZone": "Pacific Standard Time"}
    status, err, _ = await raw.call("POST", raw.user + "/events", {
        "subject": "bad all-day", "isAllDay": True, "start": {"dateTime": "2026-04-06T08:00:00", "timeZone": "UTC"},
        "end": {"dateTime": "2026-04-07T00:00:00", "timeZone": "UTC"}})
    assert status == 400 and err["error"]["code"] == "ErrorPropertyValidationFailure"


async def test_event_transaction_id_is_kept_and_duplicates_rejected(raw: Raw) -> None:
    ev = {"subject": "x", "transactionId": "tx-1", "start": {"dateTime": "2026-04-06T08:00:00", "timeZone": "UTC"},
          "end": {"dateTime": "2026-04-06T09:00:00", "timeZone": "UTC"}}
    status, created, _ = await raw.call("POST", raw.user + "/events", ev)
    assert status == 201 and created["transactionId"] == "tx-1"
    status, err, _ = await raw.call("POST", raw.user + "/events", ev)
    assert status == 400 and err["error"]["code"] == "ErrorDuplicateTransactionId"


async def test_batch_limits_and_dependencies(raw: Raw) -> None:
    def req(i: int, **extra: Any) -> dict[str, Any]:
        return {"id": str(i), "method": "POST", "url": f"/users/{MAILBOX}/contacts",
                "headers": {"content-type": "application/json"}, "body": {"givenName": f"B{i}"}, **extra}

    status, err, _ = await raw.call("POST", raw.api + "/$batch", {"requests": [req(i) for i in range(21)]})
    assert status == 400 and err["error"]["code"] == "BadRequest"
    status, err, _ = await raw.call("POST", raw.api + "/$batch", {"requests": [req(1), {**req(2), "id": "1"}]})
    assert status == 400 and "unique" in err["error"]["message"]
    _, listed, _ = await raw.call("GET", raw.user + "/contacts")
    assert listed["value"] == []

    batch = {"requests": [
        {"id": "a", "method": "GET", "url": f"/users/{MAILBOX}/contacts/missing"},
        {**req(2), "id": "b", "dependsOn": ["a"]},
        {**req(3), "id": "c", "depends_on": ["b"]},
        {**req(4), "id": "d"},
    ]}
    status, body, _ = await raw.call("POST", raw.api + "/$batch", batch)
    assert status == 200
    by_id = {r["id"]: r for r in body["responses"]}
    assert by_id["a"]["status"] == 404
    assert by_id["b"]["status"] == 424 and by_id["c"]["status"] == 424
    assert by_id["d"]["status"] == 201 and by_id["d"]["body"]["givenName"] == "B4"

    await raw.admin.faults(throttle={"count": 1, "retry_after": 2})
    _, body, _ = await raw.call("POST", raw.api + "/$batch", {"requests": [req(5), req(6)]})
    statuses = {r["id"]: (r["status"], r["headers"].get("Retry-After")) for r in body["responses"]}
    assert statuses == {"5": (429, "2"), "6": (201, None)}
    counters = await raw.admin.counters(MAILBOX)
    assert counters["batch_calls"] == 2 and counters["throttled"] == 1


async def test_concurrency_limit_per_app_and_mailbox(raw: Raw) -> None:
    await raw.admin.faults(delay_ms=800)
    results = await asyncio.gather(*(raw.call("GET", raw.user + "/contacts") for _ in range(5)))
    statuses = sorted(s for s, _, _ in results)
    assert statuses == [200, 200, 200, 200, 429]
    throttled = next((b, h) for s, b, h in results if s == 429)
    assert throttled[0]["error"]["code"] == "ApplicationThrottled" and throttled[1]["Retry-After"] == "1"
    await raw.admin.faults(concurrency_limit=None)
    results = await asyncio.gather(*(raw.call("GET", raw.user + "/contacts") for _ in range(6)))
    assert {s for s, _, _ in results} == {200}


async def test_attachment_limits_and_upload_ranges(raw: Raw) -> None:
    _, msg, _ = await raw.call("POST", raw.user + "/mailFolders/inbox/messages", {"subject": "files"})
    big = base64.b64encode(b"x" * (3 * 1024 * 1024)).decode()
    status, _, _ = await raw.call("POST", f"{raw.user}/messages/{msg['id']}/attachments", {
        "@odata.type": "#microsoft.graph.fileAttachment", "name": "big", "contentBytes": big})
    assert status == 413
    _, session, _ = await raw.call("POST", f"{raw.user}/messages/{msg['id']}/attachments/createUploadSession",
                                   {"AttachmentItem": {"attachmentType": "file", "name": "f.bin", "size": 10}})
    assert session["nextExpectedRanges"] == ["0-"]
    put = raw.http.put
    async with put(session["uploadUrl"], data=b"abcd", headers={"Content-Range": "bytes 2-5/10"}) as r:
        assert r.status == 416
    async with put(session["uploadUrl"], data=b"abcd", headers={"Content-Range": "bytes 0-3/10"}) as r:
        assert r.status == 200 and (await r.json())["nextExpectedRanges"] == ["4"]
    async with put(session["uploadUrl"], data=b"efghij", headers={"Content-Range": "bytes 4-9/10"}) as r:
        assert r.status == 201 and "attachments" in r.headers["Location"]
    _, atts, _ = await raw.call("GET", f"{raw.user}/messages/{msg['id']}/attachments")
    assert base64.b64decode(atts["value"][0]["contentBytes"]) == b"abcdefghij"


async def test_admin_counters_and_reset(raw: Raw) -> None:
    await raw.call("GET", raw.user + "/contacts")
    await raw.call("POST", raw.user + "/contacts", {"givenName": "c"})
    counters = await raw.admin.counters(MAILBOX)
    assert counters["total"] == 2 and counters["by_method"] == {"GET": 1, "POST": 1}
    await raw.admin.reset()
    assert (await raw.admin.counters(MAILBOX))["total"] == 0
    _, listed, _ = await raw.call("GET", raw.user + "/contacts")
    assert listed["value"] == []


async def test_messages_delta_change_type_option(raw: Raw) -> None:
    folder = raw.user + "/mailFolders/inbox/messages"
    _, old, _ = await raw.call("POST", folder, {"subject": "old"})
    _, first, _ = await raw.call("GET", folder + "/delta()?changeType=created")
    assert [m["id"] for m in first["value"]] == [old["id"]]
    await raw.call("PATCH", f"{raw.user}/messages/{old['id']}", {"isRead": True})
    _, new, _ = await raw.call("POST", folder, {"subject": "new"})
    _, later, _ = await raw.call("GET", first["@odata.deltaLink"])
    assert [m["id"] for m in later["value"]] == [new["id"]]  # the option is carried in the token
