from __future__ import annotations

import re

import orjson
import pytest

from services.core.tenant_registry import check_no_inline_secrets
from services.core.tenants import Tenant, TenantConfigError

CFG = {
    "tenant_id": "contoso",
    "users": [{"mailbox": "alice@contoso.test", "salesforce_user_id": "005000000000001AAA"}],
    "graph": {"base_url": "http://127.0.0.1:8081/v1.0", "client_secret_ref": "env:GRAPH_SECRET"},
    "salesforce": {"login_url": "http://localhost:8082", "password_ref": "file:/run/secrets/sf"},
    "conflict_policy": "salesforce-wins",
}


def test_tenant_round_trip_and_lookups() -> None:
    t = Tenant.from_json(orjson.dumps(CFG))
    assert Tenant.from_json(t.to_json()) == t
    assert t.user_by_mailbox("ALICE@contoso.test") is not None
    assert t.user_by_salesforce_id("005000000000001") is not None  # 15-char form
    assert t.user_by_salesforce_id("005000000000002AAA") is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"conflict_policy": "coin-flip"}, '$.conflict_policy: "coin-flip" is not one of latest-wins'),
        ({"entities": ["contact", "lead"]}, '$.entities[1]: "lead": unknown entities'),
        ({"users": [{"mailbox": "x"}]}, '$.users[0].mailbox: "x" is not an email address'),
        ({"users": [{"mailbox": "a@b.test"}]}, "$.users[0]: missing 'salesforce_user_id'"),
        ({"users": []}, "$.users: is empty"),
        ({"users": {"mailbox": "a@b.test"}}, "$.users: must be an array of users, not an object"),
        ({"users": [CFG["users"][0], {"mailbox": "ALICE@contoso.test", "salesforce_user_id": "005000000000009"}]},
         r'\$.users\[1\].mailbox: "ALICE@contoso.test" is already enrolled at \$.users\[0\]'),
        ({"users": [{"mailbox": "a@b.test", "salesforce_user_id": "003000000000001AAA"}]},
         r"\$.users\[0\].salesforce_user_id: .* is not a Salesforce user id"),
        ({"users": [{**CFG["users"][0], "role": "admin"}]}, r"\$.users\[0\].role: unknown key"),
        ({"tombstone_days": 0}, "$.tombstone_days: must be a positive whole number, not 0"),
        ({"tombstone_days": "soon"}, '$.tombstone_days: must be a positive whole number, not "soon"'),
        ({"poll_seconds": "abc"}, '$.poll_seconds: must be a positive whole number, not "abc"'),
        ({"poll_seconds": True}, "$.poll_seconds: must be a positive whole number, not true"),
        ({"poll_secs": 5}, r"\$.poll_secs: unknown key \(known keys: tenant_id, users"),
        ({"tenant_id": "a/b"}, r'\$.tenant_id: "a/b" is not a tenant id'),
        ({"tenant_id": 7}, r"\$.tenant_id: must be a string, not a number"),
        ({"graph": {"base_url": "graph.microsoft.com"}}, r'\$.graph.base_url: "graph.microsoft.com" is not an http'),
        ({"graph": []}, r"\$.graph: must be a JSON object, not an array"),
        ({"salesforce": {"api_version": "v60"}}, r'\$.salesforce.api_version: "v60" is not a Salesforce API version'),
        ({"salesforce": {"external_id_field": "Link"}}, r"\$.salesforce.external_id_field: .* custom field"),
        ({"salesforce": {"password_ref": "env:"}}, r"\$.salesforce.password_ref: must be a secret reference"),
        ({"salesforce": {"password_ref": "file:relative"}}, r"\$.salesforce.password_ref: must be a secret reference"),
        # A trailing line break passes a regex's `$`: values and keys are matched whole,
        # and an odd key is shown escaped, so the message stays one line (found by the fuzz).
        ({"A\n": None}, r'\$\["A\\n"\]: unknown key'),
        ({"users": [{"mailbox": "a@b.test\n", "salesforce_user_id": "005000000000001"}]},
         r"\$.users\[0\].mailbox: .* is not an email address"),
        ({"salesforce": {"password_ref": "env:PW\n"}}, r"\$.salesforce.password_ref: must be a secret reference"),
    ],
)
def test_bad_tenant_config_names_the_field_by_its_json_path(change: dict[str, object], message: str) -> None:
    with pytest.raises(TenantConfigError, match=message if "\\" in message else re.escape(message)):
        Tenant.from_json({**CFG, **change})


def test_every_problem_is_reported_and_the_first_is_the_message() -> None:
    with pytest.raises(TenantConfigError) as err:
        Tenant.from_json({"tenant_id": "t", "users": [{"mailbox": "bob"}], "colour": 1})
    assert [str(p) for p in err.value.problems] == [
        "$.colour: unknown key (known keys: tenant_id, users, graph, salesforce, conflict_policy, entities, "
        "safety_sweep_seconds, poll_seconds, tombstone_days)",
        '$.users[0].mailbox: "bob" is not an email address',
        "$.users[0]: missing 'salesforce_user_id'",
    ]
    assert str(err.value).endswith("(and 2 more)")


@pytest.mark.parametrize(
    ("raw", "message"),
    [(b"{bad", "$: not valid JSON"), (b"[1, 2]", "$: must be a JSON object, not an array"), (b"", "$: not valid JSON")],
)
def test_a_document_that_is_no_object_is_a_clear_error(raw: bytes, message: str) -> None:
    with pytest.raises(TenantConfigError, match=re.escape(message)):
        Tenant.from_json(raw)


def test_a_secret_value_is_refused_without_being_repeated() -> None:
    with pytest.raises(TenantConfigError) as err:
        Tenant.from_json({**CFG, "graph": {"client_secret_ref": "hunter2"}})
    assert "$.graph.client_secret_ref: must be a secret reference" in str(err.value)
    assert "hunter2" not in str(err.value)


def test_literal_references_only_for_endpoints_on_this_machine() -> None:
    local = Tenant.from_json({**CFG, "graph": {"base_url": "http://127.0.0.1:1/v1.0", "authority": "http://127.0.0.1:1",
                                               "client_secret_ref": "literal:x"}})
    check_no_inline_secrets(local)  # the demo and the emulators
    remote = Tenant.from_json({**CFG, "salesforce": {"password_ref": "literal:pw"}})
    with pytest.raises(TenantConfigError, match=re.escape("$.salesforce.password_ref: literal: references are only")):
        check_no_inline_secrets(remote)
    half = Tenant.from_json({**CFG, "graph": {"base_url": "http://127.0.0.1:1/v1.0", "client_secret_ref": "literal:x"}})
    with pytest.raises(TenantConfigError, match=re.escape("$.graph.client_secret_ref")):
        check_no_inline_secrets(half)  # the token authority is still login.microsoftonline.com


def test_the_readme_tenant_example_is_valid() -> None:
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    blocks = re.findall(r"```json\n(.*?)```", readme, re.DOTALL)
    examples = [b for b in blocks if '"tenant_id"' in b]
    assert examples, "README has no tenant example"
    for text in examples:
        t = Tenant.from_json(text)
        check_no_inline_secrets(t)
        assert t.users
