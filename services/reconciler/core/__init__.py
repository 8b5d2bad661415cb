"""The reconcile core: pure decisions over per-tenant link state (docs/design.md §7).

`reconcile(state, tenant, item, now) -> Decision` and `sweep(state, tenant, now)`; the
service persists `Decision.changes` to exsf.state and applies them with
`TenantState.apply`, then sends `Decision.commands` and `Decision.audit`.
"""

from services.reconciler.core.decide import reconcile, sweep
from services.reconciler.core.state import (
    CopyRecord,
    LinkRecord,
    Pending,
    Record,
    SideState,
    TenantState,
    record_from_dict,
    state_key,
)
from services.reconciler.core.work import Decision

__all__ = [
    "CopyRecord",
    "Decision",
    "LinkRecord",
    "Pending",
    "Record",
    "SideState",
    "TenantState",
    "reconcile",
    "record_from_dict",
    "state_key",
    "sweep",
]
