"""Delta tokens and paging.

A round starts from a sequence number (0 for the initial round) and snapshots the entries
to return (full objects with @odata.etag, or `@removed` stubs). Pages are cut by
`Prefer: odata.maxpagesize`; each page but the last carries a nextLink with a $skiptoken,
the last a deltaLink with a $deltatoken whose round starts where this one started
looking. Tokens are opaque, URL-safe and live in a bounded cache: the oldest are evicted,
as Outlook does, and an unknown token answers 410.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from services.emulators.graph.ids import new_token
from services.emulators.graph.odata import page_size
from services.emulators.graph.wire import Ctx, GraphError, Resp

# Builds a round's entries from (since, params); returns (entries, upto_seq).
RoundBuilder = Callable[[int, dict[str, str]], tuple[list[dict[str, Any]], int]]

_CARRIED = ("$select", "$expand", "$filter", "startdatetime", "enddatetime", "changetype", "$top")


@dataclass
class DeltaState:
    scope: str  # identifies the tracked collection, e.g. "contact:<mailbox>:<folder>"
    since: int
    params: dict[str, str]
    page_size: int | None
    pending: list[dict[str, Any]] | None = None  # remaining entries of a round (skip tokens)
    upto: int = 0


@dataclass
class DeltaTokens:
    capacity: int
    _states: OrderedDict[str, DeltaState] = field(default_factory=OrderedDict)

    def put(self, state: DeltaState) -> str:
        token = new_token()
        self._states[token] = state
        while len(self._states) > self.capacity:
            self._states.popitem(last=False)
        return token

    def get(self, token: str) -> DeltaState | None:
        return self._states.get(token)

    def evict_all(self) -> int:
        n = len(self._states)
        self._states.clear()
        return n


def _link_base(ctx: Ctx) -> str:
    path = re.sub(r"delta(\(\))?$", "delta", ctx.path.split("?")[0])
    path = path.replace("/microsoft.graph.delta", "/delta")
    return ctx.base_url + path


def run_delta(ctx: Ctx, scope: str, build: RoundBuilder, context: str) -> Resp:
    state = ctx.state
    tokens: DeltaTokens = state.delta_tokens
    skip, dtok = ctx.q("$skiptoken"), ctx.q("$deltatoken")
    requested = page_size(ctx, 0) or None
    if skip is not None or dtok is not None:
        st = tokens.get(skip if skip is not None else dtok or "")
        if st is None or st.scope != scope:
            code = state.faults.delta_gone_code
            raise GraphError(410, code, "The sync state generation is not found; generation=0;[highest=0]")
        size = requested or st.page_size or state.config.default_page_size
        if skip is not None:
            entries, upto, params = list(st.pending or []), st.upto, st.params
        else:
            params = st.params
            entries, upto = build(st.since, params)
    else:
        params = {k: v for k, v in ctx.query.items() if k in _CARRIED}
        size = requested or state.config.default_page_size
        entries, upto = build(0, params)
    page, rest = entries[:size], entries[size:]
    body: dict[str, Any] = {"@odata.context": f"{ctx.base_url}/$metadata#{context}", "value": page}
    base = _link_base(ctx)
    if rest:
        tok = tokens.put(DeltaState(scope, since=0, params=params, page_size=requested, pending=rest, upto=upto))
        body["@odata.nextLink"] = f"{base}?$skiptoken={tok}"
    else:
        tok = tokens.put(DeltaState(scope, since=upto, params=params, page_size=requested))
        body["@odata.deltaLink"] = f"{base}?$deltatoken={tok}"
    return Resp(200, body)


def removed_entry(odata_type: str, item_id: str) -> dict[str, Any]:
    return {"@odata.type": odata_type, "id": item_id, "@removed": {"reason": "deleted"}}
