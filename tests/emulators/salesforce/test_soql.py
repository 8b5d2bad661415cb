"""The SOQL subset, evaluated against an in-memory org (no HTTP needed)."""

from __future__ import annotations

import pytest

from services.emulators.salesforce.errors import SfError
from services.emulators.salesforce.ids import is_valid, suffix, to18
from services.emulators.salesforce.rest import run_query
from services.emulators.salesforce.store import Org, WriteContext


@pytest.fixture
def org() -> Org:
    o = Org(["alice@x.test", "bob@x.test"])
    alice, bob = (u.id for u in o.users.values())
    with o.transaction(WriteContext(alice)) as tx:
        o.create(tx, "Contact", {"FirstName": "Ann", "LastName": "Zed", "Email": "ANN@x.test"})
        o.create(tx, "Contact", {"LastName": "Young", "Title": "CEO", "OwnerId": bob})
        o.create(tx, "Contact", {"FirstName": "Carl", "LastName": "Xu", "Title": "CTO"})
    return o


def names(org: Org, soql: str, *, deleted: bool = False) -> list[str]:
    return [r["LastName"] for r in run_query(org, soql, include_deleted=deleted)]


def test_record_ids_carry_the_case_checksum() -> None:
    # Pairs published with the 15 -> 18 character conversion algorithm.
    assert suffix("0015000000Gv7qJ") == "AAR"
    assert to18("a0D30000001n7Pi") == "a0D30000001n7PiEAI"
    assert is_valid("a0D30000001n7PiEAI") and not is_valid("a0D30000001n7PiAAA") and not is_valid("short")


def test_where_and_or_precedence_in_and_like(org: Org) -> None:
    bob = list(org.users.values())[1].id
    assert names(org, "SELECT LastName FROM Contact WHERE Title = 'CTO' OR Title = 'CEO' AND OwnerId = "
                      f"'{bob}' ORDER BY LastName") == ["Xu", "Young"]
    assert names(org, "SELECT LastName FROM Contact WHERE (Title = 'CTO' OR Title = 'CEO') AND OwnerId = "
                      f"'{bob[:15]}'") == ["Young"]
    # SOQL treats null as a value: NOT IN keeps records without a Title.
    assert names(org, "SELECT LastName FROM Contact WHERE Title NOT IN ('CEO') ORDER BY LastName") == ["Xu", "Zed"]
    assert names(org, "SELECT LastName FROM Contact WHERE Email = 'ann@X.TEST'") == ["Zed"]  # case-insensitive
    assert names(org, "SELECT LastName FROM Contact WHERE LastName LIKE 'y%'") == ["Young"]
    assert names(org, "select LastName from Contact where Title = null") == ["Zed"]


def test_order_by_several_keys_nulls_limit_offset(org: Org) -> None:
    soql = "SELECT LastName FROM Contact ORDER BY Title DESC NULLS LAST, LastName ASC"
    assert names(org, soql) == ["Xu", "Young", "Zed"]
    assert names(org, "SELECT LastName FROM Contact ORDER BY Title ASC") == ["Zed", "Young", "Xu"]
    assert names(org, "SELECT LastName FROM Contact ORDER BY LastName LIMIT 1 OFFSET 1") == ["Young"]


def test_datetime_literals_compare_as_instants(org: Org) -> None:
    recs = run_query(org, "SELECT Id, SystemModstamp FROM Contact ORDER BY SystemModstamp, Id",
                     include_deleted=False)
    middle = recs[1]["SystemModstamp"]  # "....+0000"
    as_z = middle.replace("+0000", "Z")
    assert len(names(org, f"SELECT LastName FROM Contact WHERE SystemModstamp >= {as_z}")) == 2
    assert len(names(org, f"SELECT LastName FROM Contact WHERE SystemModstamp > {middle}")) == 1
    shifted = middle[:-5] + "+01:00"  # the same wall time one hour east is an hour earlier
    assert len(names(org, f"SELECT LastName FROM Contact WHERE SystemModstamp > {shifted}")) == 3


def test_query_excludes_deleted_and_query_all_includes_them(org: Org) -> None:
    rec = org.of_type("Contact")[0]
    with org.transaction(WriteContext(rec.fields["OwnerId"])) as tx:
        org.delete(tx, "Contact", rec.id)
    assert "Zed" not in names(org, "SELECT LastName FROM Contact")
    assert names(org, "SELECT LastName FROM Contact WHERE IsDeleted = true", deleted=True) == ["Zed"]


@pytest.mark.parametrize(
    ("soql", "code"),
    [
        ("SELECT Nope FROM Contact", "INVALID_FIELD"),
        ("SELECT Id FROM Nope", "INVALID_TYPE"),
        ("SELECT Id FROM Contact WHERE SystemModstamp > '2024-01-01T00:00:00Z'", "MALFORMED_QUERY"),
        ("SELECT Id FROM Contact WHERE", "MALFORMED_QUERY"),
        ("SELECT Id Contact", "MALFORMED_QUERY"),
        ("SELECT Id FROM Contact LIMIT x", "MALFORMED_QUERY"),
    ],
)
def test_bad_queries_name_the_problem(org: Org, soql: str, code: str) -> None:
    with pytest.raises(SfError) as exc:
        run_query(org, soql, include_deleted=False)
    assert exc.value.code == code and exc.value.status == 400


def test_count_query(org: Org) -> None:
    from services.emulators.salesforce.rest import count_query

    assert count_query(org, "SELECT COUNT() FROM Contact WHERE Title != null", include_deleted=False) == 2
    assert count_query(org, "SELECT Id FROM Contact", include_deleted=False) is None
