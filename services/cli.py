"""`exsf` command line: one entry point for operators, developers and the demo.

Subcommands import their service lazily so `exsf --help` stays fast and a missing optional
piece only affects the command that needs it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from collections.abc import Callable, Coroutine
from typing import Any

import structlog

from services.cli_common import CliError
from services.cli_tenants import add_commands as add_tenant_commands
from services.core.bus.base import BusError
from services.core.config import BusConfig, ConfigError, open_bus
from services.core.logging import configure_logging, redact_text
from services.core.secrets import SecretError
from services.core.tenants import TenantConfigError
from services.core.topics import topic_specs

Handler = Callable[[argparse.Namespace], Coroutine[Any, Any, int]]

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1 (argparse turns the ValueError into a usage error)."""
    n = int(text)
    if n < 1:
        raise ValueError(text)
    return n


def port(text: str) -> int:
    n = int(text)
    if not 0 <= n <= 65535:
        raise ValueError(text)
    return n


BUS_HELP = (
    "The bus comes from the environment: KAFKA_BOOTSTRAP_SERVERS (then EXSF_BUS=kafka by default), "
    "or EXSF_BUS=embedded with EXSF_EMBEDDED_PATH (default ./exsf-bus.sqlite). "
    "EXSF_PARTITIONS sets the partition count (default 12), EXSF_TOPIC_PREFIX a topic name prefix."
)


async def _topics_create(args: argparse.Namespace) -> int:
    cfg = BusConfig.from_env()
    partitions = args.partitions or cfg.partitions
    bus = open_bus(cfg)
    await bus.start()
    try:
        specs = topic_specs(partitions, args.prefix if args.prefix is not None else cfg.topic_prefix)
        created = await bus.create_topics(specs)
        actual = {s.name: await bus.partitions_for(s.name) for s in specs if s.name not in created}
    finally:
        await bus.stop()
    mismatched = False
    for s in specs:
        state = "created" if s.name in created else "exists"
        policy = "compact" if s.compacted else "delete"
        n = actual.get(s.name, s.partitions)
        note = ""
        if n != partitions:
            mismatched = True
            note = f"  (!) expected {partitions}: tenant shards only line up when every topic has the same count"
        print(f"{s.name:32} {state:8} partitions={n} cleanup={policy}{note}")
    return 1 if mismatched else 0


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("exsf")
    except PackageNotFoundError:  # running from a checkout that was never installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="exsf",
        description="Two-way sync between Exchange / Microsoft 365 mailboxes and Salesforce, "
        "as streaming services on Kafka.",
        epilog=BUS_HELP,
    )
    p.add_argument(
        "--log-level",
        default=os.environ.get("EXSF_LOG_LEVEL", "INFO"),
        help="DEBUG, INFO, WARNING (default EXSF_LOG_LEVEL or INFO)",
    )
    p.add_argument("--log-format", choices=["json", "console"], default="json", help="log format (default json)")
    p.add_argument("--version", action="version", version=f"exsf {_version()}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    topics = sub.add_parser("topics", help="manage the Kafka topics", description="Manage the exsf topics.")
    tsub = topics.add_subparsers(dest="topics_command", metavar="ACTION")
    tc = tsub.add_parser(
        "create",
        help="create the exsf topics (idempotent)",
        description="Create every exsf topic of the design (changes, commands, results, cursors, state, "
        "tenants, audit, dead letters) with one partition count and the right cleanup policy. "
        "Existing topics are left as they are, so running it again is safe.",
        epilog=BUS_HELP,
    )
    tc.add_argument(
        "--partitions", type=positive_int, default=None, help="partitions per topic (default EXSF_PARTITIONS or 12)"
    )
    tc.add_argument("--prefix", default=None, help="topic name prefix (default EXSF_TOPIC_PREFIX or none)")
    tc.set_defaults(handler=_topics_create)

    add_tenant_commands(sub)

    for register in _EXTENSIONS:
        register(sub)
    return p


# Services register their own subcommands here (run, emulate, demo, state ...), keeping this
# module free of their imports.
_EXTENSIONS: list[Callable[[Any], None]] = []


def _load_extensions() -> None:
    import importlib

    for mod in ("services.cli_services",):
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            if exc.name != mod:
                raise


def register(fn: Callable[[Any], None]) -> Callable[[Any], None]:
    _EXTENSIONS.append(fn)
    return fn


def main(argv: list[str] | None = None) -> int:
    """Exit codes: 0 done, 1 the operation failed (said why), 2 bad input (one line on
    stderr, never a traceback), 130 interrupted."""
    _load_extensions()
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help, --version (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else 2
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        # A group without an action: that group's help, and a last line saying what is missing.
        with contextlib.suppress(SystemExit), contextlib.redirect_stdout(sys.stderr):
            parser.parse_args([*argv, "--help"])
        what = "an action" if getattr(args, "command", None) else "a command"
        where = f"{' '.join(argv)}: " if argv else ""
        print(f"exsf: {where}name {what} (see the list above)", file=sys.stderr)
        return 2
    if args.log_level.upper() not in LOG_LEVELS:
        print(f"exsf: --log-level {args.log_level!r} is not one of {', '.join(LOG_LEVELS)}", file=sys.stderr)
        return 2
    configure_logging(args.log_level, json=args.log_format == "json")
    try:
        return asyncio.run(handler(args))
    except (CliError, ConfigError, SecretError, TenantConfigError, BusError) as exc:
        print(f"exsf: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        # Not bad input but a bug or an outage: still one line for the operator; the
        # traceback goes to the log, where --log-level DEBUG shows it.
        structlog.get_logger(__name__).debug("cli.failed", exc_info=True)
        # Redacted like a log line: an unexpected message may quote a URL or a header.
        print(f"exsf: {args.command} failed: {type(exc).__name__}: {redact_text(str(exc))}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    # Run through the imported module, not __main__, so subcommands registered by
    # services.cli_services land on the same registry.
    from services.cli import main as _main

    raise SystemExit(_main())
