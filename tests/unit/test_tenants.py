from __future__ import annotations

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
        ({"conflict_policy": "coin-flip"}, "conflict_policy"),
        ({"entities": ["contact", "lead"]}, "unknown entities"),
        ({"users": [{"mailbox": "x"}]}, "contoso"),
        ({"tombstone_days": 0}, "tombstone_days must be a positive"),
        ({"tombstone_days": "soon"}, "tombstone_days must be a positive"),
    ],
)
def test_bad_tenant_config_is_a_clear_error(change: dict[str, object], message: str) -> None:
    with pytest.raises(TenantConfigError, match=message):
        Tenant.from_json({**CFG, **change})


def test_inline_secret_is_refused() -> None:
    t = Tenant.from_json({**CFG, "graph": {"client_secret_ref": "hunter2"}})
    with pytest.raises(TenantConfigError, match="must be a reference"):
        check_no_inline_secrets(t)
