"""`exsf` command line: one entry point for operators, developers and the demo.

Subcommands import their service lazily so `exsf --help` stays fast and a missing optional
piece only affects the command that needs it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import orjson

from services.core.bus.base import BusError
from services.core.config import BusConfig, ConfigError, open_bus
from services.core.logging import configure_logging
from services.core.secrets import SecretError
from services.core.tenants import Tenant, TenantConfigError
from services.core.topics import topic_specs

Handler = Callable[[argparse.Namespace], Coroutine[Any, Any, int]]

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


async def _tenants_put(args: argparse.Namespace) -> int:
    from services.core.tenant_registry import TenantRegistry

    raw = Path(args.file).read_bytes()
    tenant = Tenant.from_json(raw)
    cfg = BusConfig.from_env()
    bus = open_bus(cfg)
    await bus.start()
    try:
        await TenantRegistry(bus, cfg.topic_prefix + "exsf.tenants").put(tenant)
    finally:
        await bus.stop()
    print(f"tenant {tenant.tenant_id}: {len(tenant.users)} users enrolled")
    return 0


async def _tenants_list(args: argparse.Namespace) -> int:
    from services.core.tenant_registry import TenantRegistry

    cfg = BusConfig.from_env()
    bus = open_bus(cfg)
    await bus.start()
    try:
        tenants = await TenantRegistry(bus, cfg.topic_prefix + "exsf.tenants").load()
    finally:
        await bus.stop()
    for t in sorted(tenants.values(), key=lambda t: t.tenant_id):
        print(
            orjson.dumps(
                {"tenant_id": t.tenant_id, "users": [u.mailbox for u in t.users], "policy": t.conflict_policy}
            ).decode()
        )
    return 0


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
    tc.add_argument("--partitions", type=int, default=None, help="partitions per topic (default EXSF_PARTITIONS or 12)")
    tc.add_argument("--prefix", default=None, help="topic name prefix (default EXSF_TOPIC_PREFIX or none)")
    tc.set_defaults(handler=_topics_create)

    tenants = sub.add_parser("tenants", help="enrol and list tenants", description="Tenant configs on exsf.tenants.")
    tnsub = tenants.add_subparsers(dest="tenants_command", metavar="ACTION")
    tp = tnsub.add_parser("put", help="add or replace a tenant from a JSON file (secret references only)")
    tp.add_argument("file", help="tenant JSON (see README: Configuration)")
    tp.set_defaults(handler=_tenants_put)
    tl = tnsub.add_parser("list", help="list enrolled tenants")
    tl.set_defaults(handler=_tenants_list)

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
    _load_extensions()
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        # A group without an action: show that group's help.
        parser.parse_args([*(argv if argv is not None else sys.argv[1:]), "--help"])
        return 2
    configure_logging(args.log_level, json=args.log_format == "json")
    try:
        return asyncio.run(handler(args))
    except (ConfigError, SecretError, TenantConfigError, FileNotFoundError, BusError) as exc:
        print(f"exsf: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    # Run through the imported module, not __main__, so subcommands registered by
    # services.cli_services land on the same registry.
    from services.cli import main as _main

    raise SystemExit(_main())
