"""The Graph emulator's write ledger (/_admin/ledger) sees what the writer's idempotency rests
on: creates per exsf link id, updates that changed nothing; admin (person) writes are not
counted."""

from __future__ import annotations

from tests.emulators.graph.conftest import MAILBOX, Raw

LINK = "String {66f5a359-4659-4830-9070-00047ec6ac6e} Name exsfLinkId"


async def test_graph_ledger_counts_creates_per_link_and_repeated_updates(raw: Raw) -> None:
    body = {"givenName": "Ann", "singleValueExtendedProperties": [{"id": LINK, "value": "L1"}]}
    status, first, _ = await raw.call("POST", f"{raw.user}/contacts", body)
    assert status == 201
    await raw.call("POST", f"{raw.user}/contacts", body)  # the same create applied twice
    await raw.call("POST", f"{raw.user}/contacts", {"givenName": "No link"})
    tasks_list = (await raw.call("GET", f"{raw.user}/todo/lists"))[1]["value"][0]["id"]
    await raw.call("POST", f"{raw.user}/todo/lists/{tasks_list}/tasks", {
        "title": "t", "linkedResources": [{"applicationName": "exsf", "externalId": "L2", "displayName": "x"}]})
    await raw.admin.create_item(MAILBOX, "contact", {"givenName": "Made in Outlook"})  # a person: not counted

    # A PATCH that changes something, then the same PATCH again (If-Match of the new etag).
    status, changed, _ = await raw.call("PATCH", f"{raw.user}/contacts/{first['id']}", {"jobTitle": "CTO"},
                                        **{"If-Match": first["@odata.etag"]})
    assert status == 200
    await raw.call("PATCH", f"{raw.user}/contacts/{first['id']}", {"jobTitle": "CTO"},
                   **{"If-Match": changed["@odata.etag"]})
    # A stale If-Match is refused, so it is no applied write at all.
    status, _, _ = await raw.call("PATCH", f"{raw.user}/contacts/{first['id']}", {"jobTitle": "CEO"},
                                  **{"If-Match": first["@odata.etag"]})
    assert status == 412

    ledger = await raw.admin.ledger()
    assert ledger["creates"] == 4 and ledger["creates_by_link"] == {"L1": 2, "L2": 1}
    assert ledger["created_twice"] == ["L1"]
    assert ledger["updates"] == 2
    assert [(u["item"], u["link_id"]) for u in ledger["repeated_updates"]] == [(first["id"], "L1")]
    await raw.admin.reset()
    assert (await raw.admin.ledger())["creates"] == 0
