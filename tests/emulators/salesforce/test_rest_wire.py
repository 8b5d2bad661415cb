"""REST and OAuth wire shapes of the emulator, checked with plain aiohttp requests."""

from __future__ import annotations

from tests.emulators.salesforce.conftest import Sf, login


async def test_token_reply_and_oauth_errors(sf: Sf) -> None:
    ok = await login(sf.http, sf.base)
    assert ok["_status"] == 200 and ok["token_type"] == "Bearer" and ok["instance_url"] == sf.base
    assert ok["id"].startswith(f"{sf.base}/id/00D") and ok["issued_at"].isdigit() and ok["signature"]
    assert "refresh_token" not in ok  # the password flow issues none
    bob = await login(sf.http, sf.base, "bob@contoso.test", "bobs-pw")
    assert bob["_status"] == 200 and bob["id"].endswith((await sf.admin.users())["bob@contoso.test"])
    bad = await login(sf.http, sf.base, password="nope")
    assert (bad["_status"], bad["error"], bad["error_description"]) == (400, "invalid_grant", "authentication failure")
    async with sf.http.post(sf.base + "/services/oauth2/token", data={"grant_type": "magic"}) as r:
        assert r.status == 400 and (await r.json())["error"] == "unsupported_grant_type"


async def test_expired_session_and_limit_header(sf: Sf) -> None:
    status, body, headers = await sf.call("GET", "/limits")
    assert status == 200 and headers["Sforce-Limit-Info"] == "api-usage=1/100000"
    await sf.admin.expire_tokens()
    status, body, headers = await sf.call("GET", "/limits")
    assert status == 401 and body == [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID",
                                       "fields": []}]
    assert "Sforce-Limit-Info" in headers


async def test_create_read_errors_and_deleted_records(sf: Sf) -> None:
    status, body, _ = await sf.call("POST", "/sobjects/Contact", {"FirstName": "No"})
    assert status == 400 and body[0]["errorCode"] == "REQUIRED_FIELD_MISSING" and body[0]["fields"] == ["LastName"]
    status, body, _ = await sf.call("POST", "/sobjects/Contact", {"LastName": "A", "Bogus": 1})
    assert status == 400 and body[0]["errorCode"] == "INVALID_FIELD"
    status, body, _ = await sf.call("POST", "/sobjects/Contact", {"LastName": "A", "CreatedDate": "2020-01-01"})
    assert status == 400 and body[0]["errorCode"] == "INVALID_FIELD_FOR_INSERT_UPDATE"
    status, body, _ = await sf.call("POST", "/sobjects/Contact", {"LastName": "A", "MailingCity": "Oslo"})
    assert status == 201 and body["success"] is True and body["errors"] == []
    cid = body["id"]
    status, rec, _ = await sf.call("GET", f"/sobjects/Contact/{cid}")
    assert rec["attributes"] == {"type": "Contact", "url": f"/services/data/v60.0/sobjects/Contact/{cid}"}
    assert rec["MailingAddress"]["city"] == "Oslo" and rec["IsDeleted"] is False
    assert (await sf.call("DELETE", f"/sobjects/Contact/{cid}"))[0] == 204
    status, body, _ = await sf.call("GET", f"/sobjects/Contact/{cid}")
    assert status == 404 and body[0]["errorCode"] == "ENTITY_IS_DELETED"
    status, body, _ = await sf.call("PATCH", f"/sobjects/Contact/{cid}", {"LastName": "B"})
    assert status == 404 and body[0]["errorCode"] == "ENTITY_IS_DELETED"
    restored = await sf.admin.undelete("Contact", cid)
    assert restored["IsDeleted"] is False
    events = await sf.admin.events()
    assert [e["payload"]["ChangeEventHeader"]["changeType"] for e in events] == ["CREATE", "DELETE", "UNDELETE"]
    assert events[1]["payload"].keys() == {"ChangeEventHeader"}
    assert events[2]["payload"]["MailingAddress"] == {"City": "Oslo"}


async def test_upsert_statuses_and_non_external_field(sf: Sf) -> None:
    status, body, _ = await sf.call("PATCH", "/sobjects/Task/exsf_Link_Id__c/L1", {"Subject": "s"})
    assert status == 201 and body["created"] is True
    status, body2, _ = await sf.call("PATCH", "/sobjects/Task/exsf_Link_Id__c/L1", {"Subject": "t"})
    assert status == 200 and body2 == {"id": body["id"], "success": True, "errors": [], "created": False}
    status, body, _ = await sf.call("PATCH", "/sobjects/Task/Subject/x", {"Priority": "High"})
    assert status == 404 and body[0]["errorCode"] == "NOT_FOUND"
    status, _, _ = await sf.call("PATCH", "/sobjects/Task/exsf_Link_Id__c/L2?updateOnly=true", {"Subject": "s"})
    assert status == 404


async def test_collections_limits_and_shapes(sf: Sf) -> None:
    records = [{"attributes": {"type": "Task"}, "Subject": str(i)} for i in range(201)]
    status, body, _ = await sf.call("POST", "/composite/sobjects", {"records": records})
    assert status == 400 and body[0]["errorCode"] == "EXCEEDED_ID_LIMIT"
    status, body, _ = await sf.call("POST", "/composite/sobjects", {"allOrNone": False, "records": [
        {"attributes": {"type": "Task"}, "Subject": "ok"},
        {"attributes": {"type": "Task"}, "Priority": "Urgent"},
    ]})
    assert status == 200 and body[0]["success"] is True
    assert body[1] == {"success": False, "errors": [{"statusCode": "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                       "message": "Priority: bad value for restricted picklist field: Urgent",
                       "fields": ["Priority"]}]}
    status, got, _ = await sf.call("GET", f"/composite/sobjects/Task?ids={body[0]['id']},00TDn0000000zzzIAA"
                                   "&fields=Id,Subject")
    assert got[0]["Subject"] == "ok" and got[1] is None


async def test_event_times_and_task_status_are_derived(sf: Sf) -> None:
    status, body, _ = await sf.call("POST", "/sobjects/Event", {"Subject": "m", "StartDateTime":
                                    "2024-05-01T11:00:00+02:00", "EndDateTime": "2024-05-01T10:30:00Z"})
    eid = body["id"]
    _, ev, _ = await sf.call("GET", f"/sobjects/Event/{eid}")
    assert (ev["StartDateTime"], ev["ActivityDateTime"], ev["DurationInMinutes"], ev["ActivityDate"]) == (
        "2024-05-01T09:00:00.000+0000", "2024-05-01T09:00:00.000+0000", 90, "2024-05-01")
    await sf.call("PATCH", f"/sobjects/Event/{eid}", {"StartDateTime": "2024-05-02T09:00:00Z"})
    _, ev, _ = await sf.call("GET", f"/sobjects/Event/{eid}")
    assert ev["EndDateTime"] == "2024-05-02T10:30:00.000+0000"  # a moved start keeps the duration
    status, body, _ = await sf.call("POST", "/sobjects/Event", {"IsAllDayEvent": True, "ActivityDate": "2024-06-03",
                                                                "DurationInMinutes": 2880})
    _, day, _ = await sf.call("GET", f"/sobjects/Event/{body['id']}")
    assert (day["StartDateTime"], day["EndDateTime"], day["EndDate"]) == (
        "2024-06-03T00:00:00.000+0000", "2024-06-04T00:00:00.000+0000", "2024-06-04")
    status, body, _ = await sf.call("POST", "/sobjects/Event", {"Subject": "no start"})
    assert status == 400 and body[0]["errorCode"] == "REQUIRED_FIELD_MISSING"

    _, body, _ = await sf.call("POST", "/sobjects/Task", {"Subject": "t", "Priority": "High"})
    _, task, _ = await sf.call("GET", f"/sobjects/Task/{body['id']}")
    assert (task["Status"], task["IsClosed"], task["IsHighPriority"], task["CompletedDateTime"]) == (
        "Not Started", False, True, None)
    await sf.call("PATCH", f"/sobjects/Task/{body['id']}", {"Status": "Completed"})
    _, task, _ = await sf.call("GET", f"/sobjects/Task/{body['id']}")
    assert task["IsClosed"] is True and task["CompletedDateTime"].endswith("+0000")


async def test_faults_counters_and_reset(sf: Sf) -> None:
    await sf.admin.faults(request_limit=1, unavailable=1)
    status, body, _ = await sf.call("GET", "/limits")
    assert status == 403 and body[0] == {"message": "TotalRequests Limit exceeded.",
                                         "errorCode": "REQUEST_LIMIT_EXCEEDED", "fields": []}
    assert (await sf.call("GET", "/limits"))[0] == 503
    assert (await sf.call("GET", "/limits"))[0] == 200
    await sf.call("POST", "/sobjects/Contact", {"LastName": "x"}, **{"Sforce-Call-Options": "client=writer-7"})
    counters = await sf.admin.counters()
    assert counters["rest_calls"] == 4 and counters["write_clients"] == {"writer-7": 1}
    assert await sf.admin.writes() == [{"method": "POST", "kind": "create", "path": "/services/data/v60.0/sobjects/"
                                        "Contact", "client": "writer-7"}]
    users_before = await sf.admin.users()
    await sf.admin.reset()
    assert await sf.admin.users() == users_before
    assert (await sf.admin.counters())["rest_calls"] == 0 and await sf.admin.records("Contact") == []
    assert (await sf.call("GET", "/limits"))[0] == 200  # tokens survive a reset


async def test_files_and_attachments(sf: Sf) -> None:
    import base64

    _, task, _ = await sf.call("POST", "/sobjects/Task", {"Subject": "with files"})
    status, att, _ = await sf.call("POST", "/sobjects/Attachment", {
        "ParentId": task["id"], "Name": "n.txt", "ContentType": "text/plain",
        "Body": base64.b64encode(b"hi there").decode()})
    assert status == 201 and att["id"].startswith("00P")
    _, rec, _ = await sf.call("GET", f"/sobjects/Attachment/{att['id']}")
    assert rec["BodyLength"] == 8 and rec["Body"].endswith(f"/Attachment/{att['id']}/Body")
    async with sf.http.get(sf.api + f"/sobjects/Attachment/{att['id']}/Body", headers=sf.headers()) as r:
        assert r.content_type == "text/plain" and await r.read() == b"hi there"

    status, cv, _ = await sf.call("POST", "/sobjects/ContentVersion", {
        "PathOnClient": "deck.pptx", "FirstPublishLocationId": task["id"],
        "VersionData": base64.b64encode(b"\x00\x01").decode()})
    _, ver, _ = await sf.call("GET", f"/sobjects/ContentVersion/{cv['id']}")
    assert (ver["Title"], ver["FileExtension"], ver["ContentSize"]) == ("deck", "pptx", 2)
    _, doc, _ = await sf.call("GET", f"/sobjects/ContentDocument/{ver['ContentDocumentId']}")
    assert doc["LatestPublishedVersionId"] == cv["id"]
    status, q, _ = await sf.call("GET", "/query?q=SELECT+LinkedEntityId+FROM+ContentDocumentLink+WHERE+"
                                 f"ContentDocumentId+=+'{ver['ContentDocumentId']}'")
    users = await sf.admin.users()
    assert sorted(r["LinkedEntityId"] for r in q["records"]) == sorted([task["id"], users["alice@contoso.test"]])
    status, body, _ = await sf.call("POST", "/sobjects/ContentVersion", {"PathOnClient": "x.txt",
                                                                         "VersionData": "not base64!"})
    assert status == 400 and body[0]["errorCode"] == "JSON_PARSER_ERROR"


async def test_describe_lists_the_external_id_field(sf: Sf) -> None:
    status, body, _ = await sf.call("GET", "/sobjects/Event/describe")
    fields = {f["name"]: f for f in body["fields"]}
    assert status == 200 and fields["exsf_Link_Id__c"]["externalId"] is True
    assert fields["Id"]["updateable"] is False and "RecurrenceDayOfWeekMask" in fields


async def test_run_forever_serves_until_cancelled() -> None:
    import asyncio
    import socket

    import aiohttp

    from services.emulators.salesforce import run_forever

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    task = asyncio.create_task(run_forever("localhost", port, ["carol@contoso.test"]))
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(200):
                try:
                    async with http.get(f"http://localhost:{port}/services/data") as r:
                        versions = await r.json()
                        break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.05)
            assert versions[0]["version"] == "60.0"
            async with http.get(f"http://localhost:{port}/_admin/users") as r:
                assert [u["username"] for u in await r.json()] == ["carol@contoso.test"]
    finally:
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
