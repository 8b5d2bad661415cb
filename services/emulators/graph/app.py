"""The aiohttp application: API under /v1.0, token endpoint, upload URLs, admin API;
plus `serve` for tests and `run_forever` / `main_args` for the CLI."""

from __future__ import annotations

import asyncio
import re
from typing import Any

from aiohttp import web

from services.emulators.graph import routes_calendar, routes_items, subscriptions
from services.emulators.graph.admin import add_admin_routes
from services.emulators.graph.batch import run_batch
from services.emulators.graph.config import GraphEmulatorConfig
from services.emulators.graph.ids import new_id
from services.emulators.graph.pipeline import execute
from services.emulators.graph.state import STATE_KEY, EmulatorState
from services.emulators.graph.store import Attachment
from services.emulators.graph.tokens import token_endpoint
from services.emulators.graph.wire import Ctx, GraphError, Resp, Router, normalise_segments, parse_query

ROUTER_KEY: web.AppKey[Router] = web.AppKey("graph_emulator_router", Router)
API_ROOT = "/v1.0"


def build_router() -> Router:
    router = Router()
    routes_items.register(router)
    routes_calendar.register(router)
    subscriptions.register(router)
    return router


def _to_web(resp: Resp) -> web.Response:
    headers = dict(resp.headers)
    if resp.body is None:
        return web.Response(status=resp.status, headers=headers)
    return web.Response(status=resp.status, body=resp.body_bytes(), headers=headers, content_type=resp.content_type)


def _ctx(request: web.Request, body: bytes, app_id: str) -> Ctx:
    raw_path, _, raw_query = request.raw_path.partition("?")
    path = raw_path[len(API_ROOT) :] if raw_path.startswith(API_ROOT) else raw_path
    path = re.sub(r"/{2,}", "/", path)
    return Ctx(method=request.method, segments=normalise_segments(path), query=parse_query(raw_query),
               headers={k.lower(): v for k, v in request.headers.items()}, body=body,
               base_url=f"{request.scheme}://{request.host}{API_ROOT}", app_id=app_id,
               state=request.app[STATE_KEY], path=path)


async def api_handler(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    app_id = state.tokens.app_of(request.headers.get("Authorization"))
    if app_id is None:
        err = GraphError(401, "InvalidAuthenticationToken", "Access token is empty or invalid.",
                         {"WWW-Authenticate": 'Bearer realm="", authorization_uri="emulator", client_id="emulator"'})
        return _to_web(err.to_resp())
    ctx = _ctx(request, await request.read(), app_id)
    router = request.app[ROUTER_KEY]
    if ctx.segments == ["$batch"] and ctx.method == "POST":
        try:
            return _to_web(await run_batch(router, ctx))
        except GraphError as exc:
            return _to_web(exc.to_resp())
    return _to_web(await execute(router, ctx))


_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+)")


async def upload_handler(request: web.Request) -> web.Response:
    """The pre-authenticated uploadUrl of an attachment upload session (Authorization ignored)."""
    state = request.app[STATE_KEY]
    token = request.match_info["token"]
    session = state.uploads.get(token)
    if session is None:
        return _to_web(GraphError(404, "ErrorItemNotFound", "The upload session was not found.").to_resp())
    if request.method == "DELETE":
        del state.uploads[token]
        return web.Response(status=204)
    chunk = await request.read()
    m = _RANGE.match(request.headers.get("Content-Range", ""))
    if not m:
        return _to_web(GraphError(400, "InvalidContentRange", "Content-Range is required.").to_resp())
    start, end, total = (int(x) for x in m.groups())
    if total != session.size or start != len(session.data) or end - start + 1 != len(chunk):
        return _to_web(GraphError(416, "InvalidRange", "The Content-Range does not match the expected range.",
                                  ).to_resp())
    if len(chunk) > state.config.upload_chunk_limit:
        return _to_web(GraphError(413, "RequestEntityTooLarge", "A chunk may be at most 4 MB.").to_resp())
    session.data.extend(chunk)
    if len(session.data) < session.size:
        # Outlook reports the next offset without a trailing "-" (msgraph-core relies on that).
        return web.json_response({"expirationDateTime": session.expires,
                                  "nextExpectedRanges": [str(len(session.data))]})
    del state.uploads[token]
    mb = state.store.mailbox(session.mailbox)
    it = mb.item(session.message_id)
    att = Attachment(new_id("AAMkA"), session.name, session.content_type, bytes(session.data))
    state.store.add_attachment(mb, it, att)
    location = (f"{request.scheme}://{request.host}{API_ROOT}/users('{mb.user_id}')/messages('{it.id}')"
                f"/attachments('{att.id}')")
    return web.Response(status=201, headers={"Location": location})


async def _close_state(app: web.Application) -> None:
    await app[STATE_KEY].close()


def create_app(config: GraphEmulatorConfig) -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[STATE_KEY] = EmulatorState(config)
    app[ROUTER_KEY] = build_router()
    app.router.add_post("/{tenant}/oauth2/v2.0/token", token_endpoint)
    app.router.add_route("PUT", "/_upload/{token}", upload_handler)
    app.router.add_route("DELETE", "/_upload/{token}", upload_handler)
    add_admin_routes(app)
    app.router.add_route("*", API_ROOT + "/{tail:.*}", api_handler)
    app.on_cleanup.append(_close_state)
    return app


async def serve(host: str = "127.0.0.1", port: int = 0, mailboxes: tuple[str, ...] | list[str] = (),
                config: GraphEmulatorConfig | None = None) -> tuple[web.AppRunner, str]:
    """Start the emulator; returns the runner (call `await runner.cleanup()`) and the server
    root URL, e.g. http://127.0.0.1:54321 (API at root + /v1.0). port=0 picks a free port."""
    cfg = config or GraphEmulatorConfig()
    if mailboxes:
        cfg.mailboxes = tuple(mailboxes)
    runner = web.AppRunner(create_app(cfg))
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    server: Any = site._server
    sockets = server.sockets if server is not None else []
    bound = sockets[0].getsockname()[1] if sockets else port
    return runner, f"http://{host}:{bound}"


def state_of(runner: web.AppRunner) -> EmulatorState:
    return runner.app[STATE_KEY]


def main_args(port: int, mailboxes: list[str] | tuple[str, ...], host: str = "127.0.0.1") -> dict[str, Any]:
    """Arguments for `run_forever`, for the CLI (`exsf emulate graph --port 8081 --mailbox a@b`)."""
    return {"host": host, "port": port, "mailboxes": tuple(mailboxes) or GraphEmulatorConfig().mailboxes}


async def run_forever(host: str = "127.0.0.1", port: int = 8081, mailboxes: tuple[str, ...] = (),
                      config: GraphEmulatorConfig | None = None) -> None:
    runner, url = await serve(host, port, mailboxes, config)
    print(f"Graph emulator at {url}{API_ROOT} (token: {url}/<tenant>/oauth2/v2.0/token, admin: {url}/_admin)",
          flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
