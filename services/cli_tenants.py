"""`exsf tenants put | list | show | remove | validate`: the life of a tenant config on the
compacted topic exsf.tenants, on whichever bus the environment names (embedded or Kafka)."""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from services.cli_common import CliError, print_fields, print_json, print_table
from services.core.config import BusConfig, open_bus
from services.core.tenant_registry import TenantRegistry
from services.core.tenants import Problem, Tenant, TenantConfigError, literal_secret_problems

ONLINE_NOT_DONE = (
    "online checks (Graph and Salesforce credentials and permissions, the external id field, "
    "mailboxes and users reachable) were not done"
)


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise CliError(f"{path}: cannot read ({exc.strerror or exc})") from None


def _parse(path: str) -> tuple[Tenant | None, list[Problem]]:
    """Every offline problem of a tenant file: its JSON, each field, the secret references."""
    try:
        tenant = Tenant.from_json(_read(path))
    except TenantConfigError as exc:
        return None, exc.problems
    return tenant, literal_secret_problems(tenant)


def load_tenant_file(path: str) -> Tenant:
    tenant, problems = _parse(path)
    if tenant is None or problems:
        raise CliError(f"{path}: {TenantConfigError(problems)}")
    return tenant


def _masked(ref: str) -> str:
    # A literal: reference is the secret itself (demo only): show that there is one, not it.
    return "literal:***" if ref.startswith("literal:") else ref


def tenant_view(t: Tenant) -> dict[str, Any]:
    d = asdict(t)
    d["graph"]["client_secret_ref"] = _masked(t.graph.client_secret_ref)
    d["salesforce"]["client_secret_ref"] = _masked(t.salesforce.client_secret_ref)
    d["salesforce"]["password_ref"] = _masked(t.salesforce.password_ref)
    return d


class _Registry:
    """The registry on the configured bus, started and stopped around one command."""

    def __init__(self) -> None:
        cfg = BusConfig.from_env()
        self.bus = open_bus(cfg)
        self.topic = cfg.topic_prefix + "exsf.tenants"
        self.registry = TenantRegistry(self.bus, self.topic)

    async def __aenter__(self) -> TenantRegistry:
        await self.bus.start()
        return self.registry

    async def __aexit__(self, *exc: object) -> None:
        await self.bus.stop()


async def _get(reg: TenantRegistry, tenant_id: str) -> Tenant:
    tenants = await reg.load()
    if tenant_id not in tenants:
        known = ", ".join(sorted(tenants)) or "none"
        raise CliError(f"no tenant {tenant_id!r} on {reg.topic} (enrolled: {known})")
    return tenants[tenant_id]


async def put(args: argparse.Namespace) -> int:
    tenant = load_tenant_file(args.file)
    async with _Registry() as reg:
        await reg.put(tenant)
    if args.json:
        print_json({"tenant_id": tenant.tenant_id, "users": len(tenant.users), "put": True})
    else:
        print(f"tenant {tenant.tenant_id}: {len(tenant.users)} users enrolled")
    return 0


async def list_(args: argparse.Namespace) -> int:
    async with _Registry() as reg:
        tenants = sorted((await reg.load()).values(), key=lambda t: t.tenant_id)
    if args.json:
        print_json([
            {"tenant_id": t.tenant_id, "users": [u.mailbox for u in t.users], "policy": t.conflict_policy,
             "entities": list(t.entities)}
            for t in tenants
        ])
    elif not tenants:
        print(f"no tenants on {reg.topic}")
    else:
        print_table(
            ("TENANT", "USERS", "POLICY", "ENTITIES"),
            [(t.tenant_id, len(t.users), t.conflict_policy, ",".join(t.entities)) for t in tenants],
        )
    return 0


async def show(args: argparse.Namespace) -> int:
    async with _Registry() as reg:
        t = await _get(reg, args.tenant)
    if args.json:
        print_json(tenant_view(t))
        return 0
    g, s = t.graph, t.salesforce
    print_fields([
        ("tenant", t.tenant_id),
        ("conflict policy", t.conflict_policy),
        ("entities", ", ".join(t.entities)),
        ("timing", f"poll every {t.poll_seconds}s, safety sweep every {t.safety_sweep_seconds}s, "
                   f"deleted pairs remembered {t.tombstone_days} days"),
        ("graph", f"{g.base_url} (authority {g.authority}, directory {g.azure_tenant_id or '-'}, "
                  f"app {g.client_id or '-'}, secret {_masked(g.client_secret_ref) or '-'})"),
        ("salesforce", f"{s.login_url} (API {s.api_version}, app {s.client_id or '-'}, user {s.username or '-'}, "
                       f"external id {s.external_id_field})"),
        ("salesforce secrets",
         f"client {_masked(s.client_secret_ref) or '-'}, password {_masked(s.password_ref) or '-'}"),
        ("users", len(t.users)),
    ])
    print_table(("MAILBOX", "SALESFORCE USER"), [(u.mailbox, u.salesforce_user_id) for u in t.users], indent="  ")
    return 0


def _confirmed(t: Tenant) -> bool:
    if not sys.stdin.isatty():
        raise CliError(f"tenants remove {t.tenant_id}: not confirmed (stdin is not a terminal): pass --yes")
    answer = input(
        f"Remove tenant {t.tenant_id} ({len(t.users)} users)? Its sync stops; links already made stay. [y/N] "
    )
    return answer.strip().lower() in ("y", "yes")


async def remove(args: argparse.Namespace) -> int:
    async with _Registry() as reg:
        t = await _get(reg, args.tenant)
        if not args.yes and not _confirmed(t):
            print("not removed")
            return 1
        # A tombstone: compaction then drops the config, and every service that reads the
        # topic sees the tenant go.
        await reg.remove(t.tenant_id)
    if args.json:
        print_json({"tenant_id": t.tenant_id, "removed": True})
    else:
        print(f"tenant {t.tenant_id} removed (tombstone on {reg.topic})")
    return 0


async def validate(args: argparse.Namespace) -> int:
    tenant, problems = _parse(args.file)
    checks = []
    if tenant is not None and not problems and args.online:
        from services.tenant_online import online_checks

        checks = await online_checks(tenant)
    failed = [c for c in checks if c.result == "failed"]
    if args.json:
        print_json({
            "file": args.file,
            "tenant_id": tenant.tenant_id if tenant else None,
            "valid": not problems and not failed,
            "problems": [{"path": p.path, "message": p.message} for p in problems],
            "online_checks": [{"check": c.name, "result": c.result, "detail": c.detail} for c in checks]
            if args.online and not problems else "not done",
        })
    if problems:
        if not args.json:
            for p in problems:
                print(f"exsf: {args.file}: {p}", file=sys.stderr)
        else:
            print(f"exsf: {args.file}: {len(problems)} problems", file=sys.stderr)
        return 2
    assert tenant is not None
    if not args.json:
        print(f"{args.file}: tenant {tenant.tenant_id}, {len(tenant.users)} users: every field is valid")
        if args.online:
            print_table(("CHECK", "RESULT", "DETAIL"), [(c.name, c.result, c.detail) for c in checks])
        else:
            print(f"note: {ONLINE_NOT_DONE} (--online does them)")
    # The file is fine but the tenant's setup is not: a failed operation, not bad input.
    return 1 if failed else 0


def add_commands(sub: Any) -> None:
    tenants = sub.add_parser(
        "tenants", help="enrol, list, show, remove and validate tenants", description="Tenant configs on exsf.tenants."
    )
    tnsub = tenants.add_subparsers(dest="tenants_command", metavar="ACTION")

    def action(name: str, handler: Any, help_: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = tnsub.add_parser(name, help=help_, description=help_[0].upper() + help_[1:] + ".")
        p.add_argument("--json", action="store_true", help="print JSON for scripts instead of a table")
        p.set_defaults(handler=handler)
        return p

    action("put", put, "add or replace a tenant from a JSON file (secret references only)").add_argument(
        "file", help="tenant JSON (see README: Configuration)"
    )
    action("list", list_, "list enrolled tenants")
    action("show", show, "show one tenant's config (secret references, never secrets)").add_argument(
        "tenant", help="tenant id"
    )
    rm = action("remove", remove, "remove a tenant: a tombstone on exsf.tenants stops its sync")
    rm.add_argument("tenant", help="tenant id")
    rm.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    va = action("validate", validate, "check a tenant file field by field without enrolling it")
    va.add_argument("file", help="tenant JSON")
    va.add_argument(
        "--online",
        action="store_true",
        help="also try its credentials: Graph token and mailboxes, Salesforce token, the external id field, users "
        "(CDC channels and the event series setting are not checked yet)",
    )
