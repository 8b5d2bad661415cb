"""JSON batching: POST /$batch with at most 20 sub-requests, each run through the same
pipeline as a top-level request (so each can be throttled on its own)."""

from __future__ import annotations

import base64
import binascii
from typing import Any
from urllib.parse import urlsplit

import orjson

from services.emulators.graph.pipeline import execute
from services.emulators.graph.wire import Ctx, GraphError, Resp, Router, normalise_segments, parse_query


def _sub_ctx(outer: Ctx, req: dict[str, Any]) -> Ctx:
    url = str(req.get("url") or "")
    parts = urlsplit(url)
    path = parts.path
    marker = "/v1.0"
    if marker in path:
        path = path.split(marker, 1)[1]
    if not path.startswith("/"):
        path = "/" + path
    headers = {str(k).lower(): str(v) for k, v in (req.get("headers") or {}).items()}
    body = req.get("body")
    raw: bytes
    if body is None:
        raw = b""
    elif isinstance(body, dict | list):
        raw = orjson.dumps(body)
    elif isinstance(body, str):
        try:
            raw = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raw = body.encode()
    else:
        raise GraphError(400, "BadRequest", "Invalid batch request body.")
    if raw and "content-type" not in headers:
        raise GraphError(400, "BadRequest", "Content-Type header must be specified for a request with a body.")
    return Ctx(method=str(req.get("method") or "GET").upper(), segments=normalise_segments(path),
               query=parse_query(parts.query), headers=headers, body=raw, base_url=outer.base_url,
               app_id=outer.app_id, state=outer.state, path=path)


def _response(req_id: str, resp: Resp) -> dict[str, Any]:
    headers = {k: v for k, v in resp.headers.items()}
    out: dict[str, Any] = {"id": req_id, "status": resp.status, "headers": headers}
    if resp.body is not None:
        if isinstance(resp.body, bytes | bytearray):
            out["body"] = base64.b64encode(bytes(resp.body)).decode()
        else:
            out["body"] = resp.body
        headers.setdefault("Content-Type", resp.content_type)
    return out


async def run_batch(router: Router, outer: Ctx) -> Resp:
    requests = outer.json().get("requests")
    limit = outer.state.config.batch_limit
    if not isinstance(requests, list) or not requests:
        raise GraphError(400, "BadRequest", "Invalid batch payload format.")
    if len(requests) > limit:
        raise GraphError(400, "BadRequest", f"Maximum number of requests in a batch is {limit}.")
    ids = [str(r.get("id", "")) for r in requests if isinstance(r, dict)]
    if len(ids) != len(requests) or any(not i for i in ids):
        raise GraphError(400, "BadRequest", "Every batch request needs an id.")
    if len({i.lower() for i in ids}) != len(ids):
        raise GraphError(400, "BadRequest", "Batch request ids must be unique.")
    by_id = {str(r["id"]): r for r in requests}
    deps: dict[str, list[str]] = {}
    for r in requests:
        d = r.get("dependsOn") or r.get("depends_on") or []
        if not isinstance(d, list) or any(str(x) not in by_id for x in d):
            raise GraphError(400, "BadRequest", "dependsOn names a request that is not in the batch.")
        deps[str(r["id"])] = [str(x) for x in d]

    mailboxes: set[str] = set()
    results: dict[str, dict[str, Any]] = {}
    visiting: set[str] = set()

    async def run(req_id: str) -> dict[str, Any]:
        if req_id in results:
            return results[req_id]
        if req_id in visiting:
            raise GraphError(400, "BadRequest", "dependsOn forms a cycle.")
        visiting.add(req_id)
        failed = False
        for dep in deps[req_id]:
            if (await run(dep))["status"] >= 400:
                failed = True
        if failed:
            err = GraphError(424, "FailedDependency",
                             "The request was not executed because a request it depends on failed.")
            results[req_id] = _response(req_id, err.to_resp())
        else:
            try:
                ctx = _sub_ctx(outer, by_id[req_id])
                if len(ctx.segments) >= 2 and ctx.segments[0].lower() == "users":
                    mailboxes.add(ctx.segments[1].lower())
                results[req_id] = _response(req_id, await execute(router, ctx))
            except GraphError as exc:
                results[req_id] = _response(req_id, exc.to_resp())
        return results[req_id]

    for req_id in by_id:
        await run(req_id)
    outer.state.counters.batch(mailboxes)
    return Resp(200, {"responses": [results[i] for i in by_id]})
