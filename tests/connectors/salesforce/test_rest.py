"""Our REST client against the emulator over HTTP: CRUD, upsert, collections, SOQL paging,
conditional updates, faults, token refresh, files, limits."""

from __future__ import annotations

import asyncio

import pytest

from services.connectors.salesforce.auth import SalesforceAuth
from services.connectors.salesforce.rest import SalesforceRest
from services.core.errors import AuthError, NotFoundError, PermanentError, PreconditionFailed, TransientError
from services.core.secrets import Secret
from services.emulators.salesforce import SalesforceEmulatorConfig
from tests.connectors.salesforce.conftest import USERS, Org

LINK = "exsf_Link_Id__c"


async def test_crud_roundtrip_and_deleted_records(org: Org, rest: SalesforceRest) -> None:
    cid = await rest.create("Contact", {"FirstName": "Jane", "LastName": "Doe", "Email": "jane@x.test"})
    assert cid.startswith("003") and len(cid) == 18
    rec = await rest.get("Contact", cid, ["Id", "Name", "Email", "OwnerId", "SystemModstamp"])
    assert rec["Name"] == "Jane Doe"
    assert rec["OwnerId"] == org.user_ids[USERS[0]]  # records default to the caller as owner
    assert rec["SystemModstamp"].endswith("+0000")

    await rest.update("Contact", cid, {"Email": None, "Title": "CTO"})
    rec = await rest.get("Contact", cid)
    assert rec["Email"] is None and rec["Title"] == "CTO"

    await rest.delete("Contact", cid)
    with pytest.raises(NotFoundError) as exc:
        await rest.get("Contact", cid)
    assert exc.value.code == "ENTITY_IS_DELETED"
    live = [r async for r in rest.query(f"SELECT Id FROM Contact WHERE Id = '{cid}'")]
    assert live == []
    everything = [r async for r in rest.query_all(f"SELECT Id, IsDeleted FROM Contact WHERE Id = '{cid}'")]
    assert [(r["Id"], r["IsDeleted"]) for r in everything] == [(cid, True)]
    with pytest.raises(NotFoundError) as exc:
        await rest.get("Contact", "003Dn0000000zzzIAA")
    assert exc.value.code == "NOT_FOUND"


async def test_validation_errors_become_permanent_errors(rest: SalesforceRest) -> None:
    with pytest.raises(PermanentError) as exc:
        await rest.create("Contact", {"FirstName": "NoLast"})
    assert exc.value.code == "REQUIRED_FIELD_MISSING"
    with pytest.raises(PermanentError) as exc:
        await rest.create("Contact", {"LastName": "X", "Nope__c": 1})
    assert exc.value.code == "INVALID_FIELD"
    with pytest.raises(PermanentError) as exc:
        await rest.create("Task", {"Subject": "x", "WhoId": "not-an-id"})
    assert exc.value.code == "MALFORMED_ID"


async def test_upsert_creates_then_updates_the_same_record(rest: SalesforceRest) -> None:
    rid, created = await rest.upsert("Contact", LINK, "link-1", {"LastName": "First"})
    assert created is True
    rid2, created2 = await rest.upsert("Contact", LINK, "link-1", {"LastName": "Second"})
    assert (rid2, created2) == (rid, False)
    rec = await rest.get("Contact", rid, ["LastName", LINK])
    assert rec["LastName"] == "Second" and rec[LINK] == "link-1"
    by_ext = await rest.get_by_external_id("Contact", LINK, "link-1", ["Id"])
    assert by_ext["Id"] == rid


async def test_collections_partial_failure_keeps_the_good_rows(rest: SalesforceRest) -> None:
    results = await rest.create_many(
        "Contact", [{"LastName": "A"}, {"FirstName": "missing last name"}, {"LastName": "C"}]
    )
    assert [r.success for r in results] == [True, False, True]
    assert results[1].error_code == "REQUIRED_FIELD_MISSING" and results[1].id is None
    names = sorted([r["LastName"] async for r in rest.query("SELECT LastName FROM Contact")])
    assert names == ["A", "C"]

    updates = await rest.update_many("Contact", [{"Id": results[0].id, "Title": "T"}, {"Id": "bogus", "Title": "T"}])
    assert [u.success for u in updates] == [True, False]
    assert updates[1].error_code == "MALFORMED_ID"
    deleted = await rest.delete_many([results[2].id or "", results[2].id or ""])
    assert [d.success for d in deleted] == [True, False]
    assert deleted[1].error_code == "ENTITY_IS_DELETED"
    assert deleted[0].to_error() is None and isinstance(deleted[1].to_error(), NotFoundError)
    assert isinstance(updates[1].to_error(), PermanentError)


async def test_collections_all_or_none_rolls_everything_back(org: Org, rest: SalesforceRest) -> None:
    before = len(await org.admin.events())
    results = await rest.upsert_many(
        "Contact", LINK, [{LINK: "a", "LastName": "A"}, {LINK: "b"}, {LINK: "c", "LastName": "C"}], all_or_none=True
    )
    assert [r.success for r in results] == [False, False, False]
    assert [r.error_code for r in results] == [
        "ALL_OR_NONE_OPERATION_ROLLED_BACK",
        "REQUIRED_FIELD_MISSING",
        "ALL_OR_NONE_OPERATION_ROLLED_BACK",
    ]
    assert [r async for r in rest.query_all("SELECT Id FROM Contact")] == []
    assert len(await org.admin.events()) == before  # a rolled-back transaction publishes no CDC event

    ok = await rest.upsert_many("Contact", LINK, [{LINK: "a", "LastName": "A"}, {LINK: "b", "LastName": "B"}],
                                all_or_none=True)
    assert [(r.success, r.created) for r in ok] == [(True, True), (True, True)]
    again = await rest.upsert_many("Contact", LINK, [{LINK: "b", "LastName": "B2"}, {LINK: "d", "LastName": "D"}])
    assert (again[0].id, again[0].created) == (ok[1].id, False)
    assert again[1].created is True


async def test_query_follows_next_records_url_over_three_pages(org: Org) -> None:
    owner = org.user_ids[USERS[1]]
    await org.admin.seed("Contact", [{"LastName": f"P{i:03d}", "OwnerId": owner} for i in range(450)])
    await org.admin.seed("Contact", [{"LastName": "other"}])
    auth = org.auth()
    async with SalesforceRest(auth, query_batch_size=200) as rest:
        names = [r["LastName"] async for r in rest.query(
            f"SELECT Id, LastName FROM Contact WHERE OwnerId IN ('{owner}') ORDER BY LastName DESC")]
    await auth.close()
    assert len(names) == 450
    assert names[0] == "P449" and names[-1] == "P000"
    kinds = (await org.admin.counters())["rest_by_kind"]
    assert kinds["query"] == 1 and kinds["query_more"] == 2


async def test_if_unmodified_since_detects_a_concurrent_edit(org: Org, rest: SalesforceRest) -> None:
    cid = await rest.create("Contact", {"LastName": "Base"})
    version = (await rest.get("Contact", cid, ["LastModifiedDate"]))["LastModifiedDate"]
    await rest.update("Contact", cid, {"Title": "ok"}, if_unmodified_since=version)
    version = (await rest.get("Contact", cid, ["LastModifiedDate"]))["LastModifiedDate"]
    # HTTP dates have whole seconds: the concurrent edit must be in a later second.
    await org.admin.advance_clock(5)
    await org.admin.update("Contact", cid, {"Title": "someone else"})
    with pytest.raises(PreconditionFailed):
        await rest.update("Contact", cid, {"Title": "mine"}, if_unmodified_since=version)
    assert (await rest.get("Contact", cid, ["Title"]))["Title"] == "someone else"


async def test_throttling_and_unavailability_are_transient(org: Org, rest: SalesforceRest) -> None:
    cid = await rest.create("Contact", {"LastName": "X"})
    await org.admin.faults(request_limit=1)
    with pytest.raises(TransientError) as exc:
        await rest.get("Contact", cid)
    assert exc.value.code == "REQUEST_LIMIT_EXCEEDED" and exc.value.status == 403
    await org.admin.faults(unavailable=1)
    with pytest.raises(TransientError) as exc:
        await rest.get("Contact", cid)
    assert exc.value.status == 503
    assert (await rest.get("Contact", cid, ["LastName"]))["LastName"] == "X"


async def test_expired_token_is_refreshed_transparently(org: Org, rest: SalesforceRest) -> None:
    cid = await rest.create("Contact", {"LastName": "X"})
    assert rest.auth.token_requests == 1
    assert await org.admin.expire_tokens() == 1
    assert (await rest.get("Contact", cid, ["LastName"]))["LastName"] == "X"
    assert rest.auth.token_requests == 2


async def test_refresh_token_flow_and_revoked_refresh_token(org: Org) -> None:
    refresh = await org.admin.refresh_token(USERS[1])
    auth = SalesforceAuth(org.endpoint(), refresh_token=Secret(refresh))
    async with SalesforceRest(auth) as rest:
        cid = await rest.create("Contact", {"LastName": "R"})
        assert (await rest.get("Contact", cid, ["OwnerId"]))["OwnerId"] == org.user_ids[USERS[1]]
        await org.admin.expire_tokens(refresh_tokens=True)
        with pytest.raises(AuthError) as exc:
            await rest.get("Contact", cid)
    await auth.close()
    assert refresh not in str(exc.value)


async def test_client_credentials_and_bad_password(org: Org) -> None:
    cc = SalesforceAuth(org.endpoint(), client_secret=Secret("s3cret"), flow="client_credentials")
    token = await cc.token()
    assert token.user_id == org.user_ids[USERS[0]]
    assert token.instance_url == org.base_url
    await cc.close()
    bad = SalesforceAuth(org.endpoint(), client_secret=Secret("s3cret"), password=Secret("wrong-pw-xyz"))
    with pytest.raises(AuthError) as exc:
        await bad.token()
    assert exc.value.code == "invalid_grant" and "wrong-pw-xyz" not in str(exc.value)
    await bad.close()


async def test_limit_header_and_client_id_are_tracked(org: Org, rest: SalesforceRest) -> None:
    await rest.create("Contact", {"LastName": "X"})
    await rest.create("Contact", {"LastName": "Y"})
    assert rest.api_usage_used == 2 and rest.api_usage_max == org.emulator.config.daily_api_limit
    assert (await org.admin.counters())["write_clients"] == {"exsf": 2}


async def test_a_thousand_creates_take_five_collection_calls(org: Org, rest: SalesforceRest) -> None:
    results = await rest.create_many("Task", [{"Subject": f"t{i}"} for i in range(1000)])
    assert len(results) == 1000 and all(r.success for r in results)
    assert len({r.id for r in results}) == 1000
    counters = await org.admin.counters()
    assert counters["collections_calls"] == 5 and counters["rest_calls"] == 5


async def test_rest_update_emits_cdc_update_with_only_changed_fields(org: Org, rest: SalesforceRest) -> None:
    cid = await rest.create("Contact", {"FirstName": "A", "LastName": "B", "Email": "a@x.test", "Title": "T"})
    await rest.update("Contact", cid, {"LastName": "C", "Email": None, "Title": "T"})
    ev = (await org.admin.events())[-1]["payload"]
    header = ev.pop("ChangeEventHeader")
    assert header["changeType"] == "UPDATE" and header["recordIds"] == [cid]
    assert header["changeOrigin"] == "com/salesforce/api/rest/60.0;client=exsf"
    assert sorted(header["changedFields"]) == ["Email", "LastModifiedDate", "Name.LastName"]
    assert ev["Name"] == {"LastName": "C"} and ev["Email"] is None and "Title" not in ev


async def test_upload_file_links_it_to_the_parent(org: Org, rest: SalesforceRest) -> None:
    task_id = await rest.create("Task", {"Subject": "mail", "Status": "Completed", "TaskSubtype": "Email"})
    data = bytes(range(256)) * 10
    ref = await rest.upload_file(task_id, "report.pdf", "application/pdf", data)
    assert ref.content_version_id.startswith("068") and ref.content_document_id.startswith("069")
    links = [r async for r in rest.query(
        f"SELECT ContentDocumentId, ShareType FROM ContentDocumentLink WHERE LinkedEntityId = '{task_id}'")]
    assert [r["ContentDocumentId"] for r in links] == [ref.content_document_id]
    assert await rest.download_file(ref.content_version_id) == data
    att = await rest.upload_attachment(task_id, "a.txt", "text/plain", b"hello")
    assert att.startswith("00P")


@pytest.mark.parametrize("emulator_config", [SalesforceEmulatorConfig(session_timeout_s=0.5)])
async def test_sessions_time_out_and_are_renewed(rest: SalesforceRest) -> None:
    cid = await rest.create("Contact", {"LastName": "S"})
    await asyncio.sleep(0.7)
    assert (await rest.get("Contact", cid, ["LastName"]))["LastName"] == "S"
    assert rest.auth.token_requests == 2


async def test_get_updated_and_get_deleted(rest: SalesforceRest) -> None:
    keep = await rest.create("Contact", {"LastName": "keep"})
    gone = await rest.create("Contact", {"LastName": "gone"})
    start = (await rest.get("Contact", keep, ["CreatedDate"]))["CreatedDate"]
    await rest.delete("Contact", gone)
    updated, covered = await rest.get_updated("Contact", start, "2100-01-01T00:00:00Z")
    assert updated == [keep] and covered.endswith("+0000")
    deleted = await rest.get_deleted("Contact", start, "2100-01-01T00:00:00Z")
    assert [d[0] for d in deleted] == [gone]
    with pytest.raises(PermanentError) as exc:
        await rest.get_updated("Contact", "2001-01-01T00:00:00Z", "2100-01-01T00:00:00Z")
    assert exc.value.code == "INVALID_REPLICATION_DATE"


def test_http_date_accepts_salesforce_and_http_forms() -> None:
    from services.connectors.salesforce.rest import http_date

    assert http_date("2024-04-26T18:38:05.500+0000") == "Fri, 26 Apr 2024 18:38:05 GMT"
    assert http_date("2024-04-26T20:38:05+02:00") == "Fri, 26 Apr 2024 18:38:05 GMT"
    assert http_date("Fri, 26 Apr 2024 18:38:05 GMT") == "Fri, 26 Apr 2024 18:38:05 GMT"
