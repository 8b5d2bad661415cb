"""Helpers shared by the resource routes: mailbox lookup, collection paging, item I/O."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from services.emulators.graph.odata import item_filter, page_size, render_item
from services.emulators.graph.store import Item, Mailbox
from services.emulators.graph.wire import Ctx, GraphError, Resp


def mailbox_of(ctx: Ctx) -> Mailbox:
    return ctx.state.store.mailbox(ctx.params["user"])


def paged(ctx: Ctx, values: list[dict[str, Any]], context: str) -> Resp:
    """A collection page; $skip-based nextLink when more values remain (order is stable)."""
    size = page_size(ctx, ctx.state.config.default_page_size)
    try:
        skip = int(ctx.q("$skip") or 0)
    except ValueError:
        raise GraphError(400, "BadRequest", "$skip must be an integer.") from None
    page = values[skip : skip + size]
    body: dict[str, Any] = {"@odata.context": f"{ctx.base_url}/$metadata#{context}", "value": page}
    if skip + size < len(values):
        query = {k: v for k, v in ctx.query.items() if k != "$skip"}
        query["$skip"] = str(skip + size)
        body["@odata.nextLink"] = f"{ctx.base_url}{ctx.path.split('?')[0]}?{urlencode(query)}"
    return Resp(200, body)


def list_items(ctx: Ctx, items: list[Item], context: str) -> Resp:
    keep = item_filter(ctx.query)
    chosen = sorted((it for it in items if keep(it)), key=lambda i: (i.created, i.id))
    return paged(ctx, [render_item(ctx.query, it) for it in chosen], context)


def item_resp(ctx: Ctx, it: Item, status: int = 200) -> Resp:
    return Resp(status, render_item(ctx.query, it), {"ETag": it.etag})


def immutable_ids(ctx: Ctx) -> bool:
    return 'idtype="immutableid"' in (ctx.header("prefer") or "").lower().replace(" ", "")
