"""CLI subcommands that start services, emulators and the demo.

Each service package exposes `create(bus, topics, health) -> Service` in its `service`
module; `exsf run NAME` hands it to the shared runtime.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import socket
from typing import Any

from services.cli import port, register
from services.cli_common import CliError

SERVICES = {
    "ingest-exchange": "services.ingest_exchange.service",
    "ingest-salesforce": "services.ingest_salesforce.service",
    "reconciler": "services.reconciler.service",
    "writer": "services.writer.service",
}


def _env_port(name: str, default: str) -> int:
    text = os.environ.get(name, default)
    try:
        return port(text)
    except ValueError:
        raise CliError(f"{name}={text!r} is not a port number (0-65535)") from None


def check_listen(host: str, number: int, what: str) -> None:
    """Fail before starting anything when a port we must listen on is taken: the operator
    gets one line naming the setting instead of a bind traceback from deep inside aiohttp."""
    if number == 0:
        return
    try:
        infos = socket.getaddrinfo(host or None, number, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise CliError(f"{what}: cannot listen on {host}:{number} ({exc.strerror})") from None
    for family, kind, proto, _, addr in infos[:1]:
        with socket.socket(family, kind, proto) as s:
            # asyncio servers set SO_REUSEADDR too, so a port in TIME_WAIT is not "in use".
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(addr)
            except OSError as exc:
                reason = "the port is in use" if exc.errno == errno.EADDRINUSE else exc.strerror
                raise CliError(f"{what}: cannot listen on {host}:{number} ({reason})") from None


async def _run(args: argparse.Namespace) -> int:
    from services.core.runtime import serve

    side_host = os.environ.get("EXSF_SIDE_HOST", "0.0.0.0")
    check_listen(side_host, _env_port("EXSF_SIDE_PORT", "9000"), "EXSF_SIDE_PORT (metrics and probes)")
    if args.service == "ingest-exchange":
        check_listen("0.0.0.0", _env_port("EXSF_WEBHOOK_PORT", "8080"), "EXSF_WEBHOOK_PORT (Graph notifications)")
    module = importlib.import_module(SERVICES[args.service])
    return await serve(args.service, module.create)


async def _emulate(args: argparse.Namespace) -> int:
    check_listen(args.host, args.port, f"exsf emulate {args.system} --port")
    if args.system == "graph":
        from services.emulators.graph import app as graph_app

        await graph_app.run_forever(args.host, args.port, tuple(args.mailbox or ["alice@contoso.test"]))
    else:
        from services.emulators.salesforce import app as sf_app

        await sf_app.run_forever(args.host if args.host != "127.0.0.1" else "localhost", args.port,
                                 args.user or ["alice@contoso.test"])
    return 0


async def _demo(args: argparse.Namespace) -> int:
    from services.demo import run_demo

    return await run_demo(seconds=args.seconds, data_dir=args.data_dir, verbose=args.verbose)


async def _state_rebuild(args: argparse.Namespace) -> int:
    from services.reconciler.service import rebuild_state

    return await rebuild_state(args.partitions, args.state_dir)


def non_negative_int(text: str) -> int:
    n = int(text)
    if n < 0:
        raise ValueError(text)
    return n


def non_negative_float(text: str) -> float:
    x = float(text)
    if not 0 <= x < float("inf"):  # also refuses nan
        raise ValueError(text)
    return x


@register
def _add(sub: Any) -> None:
    run = sub.add_parser(
        "run",
        help="run one service (one per pod in production)",
        description="Run one exsf service until SIGTERM/SIGINT; it drains and commits before exiting. "
        "Side server: EXSF_SIDE_PORT (default 9000) serves /metrics, /healthz, /readyz.",
    )
    run.add_argument("service", choices=sorted(SERVICES))
    run.set_defaults(handler=_run)

    emu = sub.add_parser(
        "emulate",
        help="run a local Microsoft Graph or Salesforce emulator",
        description="Serve a local emulator speaking the real wire protocol (for tests and the demo).",
    )
    emu.add_argument("system", choices=["graph", "salesforce"])
    emu.add_argument("--host", default="127.0.0.1")
    emu.add_argument("--port", type=port, required=True)
    emu.add_argument("--mailbox", action="append", help="graph: a mailbox that exists (repeatable)")
    emu.add_argument("--user", action="append", help="salesforce: a user that exists (repeatable)")
    emu.set_defaults(handler=_emulate)

    demo = sub.add_parser(
        "demo",
        help="run the whole pipeline locally against the emulators (nothing else needed)",
        description="Start both emulators, every service and the embedded bus in one process, seed a "
        "mailbox and an org, make edits on both sides and show them converge.",
    )
    demo.add_argument(
        "--seconds", type=non_negative_float, default=0, help="keep running this long after the demo (0: exit)"
    )
    demo.add_argument(
        "--verbose", action="store_true", help="show the services' logs on the terminal (default: a log file)"
    )
    demo.add_argument("--data-dir", default=None, help="where to keep the embedded bus (default: a temp dir)")
    demo.set_defaults(handler=_demo)

    state = sub.add_parser("state", help="reconciler state tools")
    ssub = state.add_subparsers(dest="state_command", metavar="ACTION")
    rb = ssub.add_parser(
        "rebuild",
        help="restore the reconciler's local store from exsf.state",
        description="Rebuild the reconciler's local SQLite store from the compacted exsf.state topic.",
    )
    rb.add_argument(
        "--partitions", type=non_negative_int, nargs="*", default=None, help="partitions to rebuild (default: all)"
    )
    rb.add_argument("--state-dir", default=None, help="store directory (default EXSF_STATE_DIR or ./state)")
    rb.set_defaults(handler=_state_rebuild)
