"""The Salesforce emulator's write ledger (/_admin/ledger) sees what the writer's idempotency
rests on: inserts per external id, creates applied again (an upsert that found its record),
updates that changed nothing; UI (admin) writes are not counted."""

from __future__ import annotations

from tests.emulators.salesforce.conftest import Sf


async def test_salesforce_ledger_counts_inserts_reapplied_creates_and_repeated_updates(sf: Sf) -> None:
    status, made, _ = await sf.call("PATCH", "/sobjects/Contact/exsf_Link_Id__c/L1", {"LastName": "Lee"})
    assert status == 201
    # The create redelivered: the upsert finds its record (a create applied again, changing nothing).
    await sf.call("PATCH", "/sobjects/Contact/exsf_Link_Id__c/L1", {"LastName": "Lee"})
    rows_in = [{"attributes": {"type": "Contact"}, "exsf_Link_Id__c": lid, "LastName": name}
               for lid, name in (("L1", "Lee"), ("L2", "Ng"))]
    status, rows, _ = await sf.call("PATCH", "/composite/sobjects/Contact/exsf_Link_Id__c",
                                    {"allOrNone": False, "records": rows_in})
    assert status == 200 and [r["created"] for r in rows] == [False, True]
    await sf.call("PATCH", f"/sobjects/Contact/{made['id']}", {"Title": "CTO"})  # a real change
    await sf.admin.create("Contact", {"LastName": "UI"}, as_user="alice@contoso.test")  # a person: not counted
    await sf.admin.update("Contact", made["id"], {"Title": "CTO"})

    ledger = await sf.admin.ledger()
    assert ledger["inserts"] == 2
    assert ledger["inserts_by_external_id"] == {"Contact.exsf_Link_Id__c=L1": 1, "Contact.exsf_Link_Id__c=L2": 1}
    assert ledger["inserted_twice"] == []
    assert ledger["reapplied_creates"] == ["Contact.exsf_Link_Id__c=L1"] * 2
    assert ledger["updates"] == 3
    assert [u["id"] for u in ledger["repeated_updates"]] == [made["id"]] * 2
