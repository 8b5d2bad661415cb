"""`exsf demo`: the whole pipeline in one process, with nothing else installed.

Both emulators, the embedded bus (SQLite) and all four services start here; a small story
then plays out on both sides - Salesforce contacts arriving in Outlook, an Outlook contact
arriving in Salesforce, edits on both sides merging, a conflict resolved with an audit
record, an email filed with its attachment, a delete - and each step reports how long the
sync took to converge. Exit code 0 means every step converged.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import orjson
import structlog

from services.core.bus.base import TopicPartition
from services.core.bus.embedded import EmbeddedBus
from services.core.sideserver import Health, SideServer
from services.core.state_store import StateStore
from services.core.tenant_registry import TenantRegistry
from services.core.tenants import GraphEndpoint, SalesforceEndpoint, Tenant, User
from services.core.topics import Topics, topic_specs
from services.emulators.graph.admin_client import GraphAdminClient
from services.emulators.graph.app import serve as serve_graph
from services.emulators.graph.app import state_of
from services.emulators.graph.config import GraphEmulatorConfig
from services.emulators.salesforce import SalesforceEmulatorConfig
from services.emulators.salesforce import serve as serve_salesforce
from services.emulators.salesforce.admin_client import SalesforceAdmin

ALICE, BOB = "alice@contoso.test", "bob@contoso.test"
STEP_TIMEOUT_S = 60.0


class Step:
    def __init__(self, n: int, total: int, title: str) -> None:
        self.n, self.total, self.title = n, total, title

    async def until(self, check: Callable[[], Awaitable[bool]], timeout: float = STEP_TIMEOUT_S) -> float:
        print(f"[{self.n}/{self.total}] {self.title} ...", end="", flush=True)
        t0 = time.monotonic()
        while not await check():
            if time.monotonic() - t0 > timeout:
                print(" did not converge")
                raise TimeoutError(f"step {self.n} ({self.title}) did not converge within {timeout:.0f}s")
            await asyncio.sleep(0.1)
        took = time.monotonic() - t0
        print(f" converged in {took:.1f}s")
        return took


def _next_run(root: Path) -> str:
    """The namespace of this run in a kept data dir: run1., run2., ..."""
    n = 1 + max((int(p.name[3:]) for p in root.glob("run*") if p.is_dir() and p.name[3:].isdigit()), default=0)
    return f"run{n}."


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def run_demo(seconds: float = 0, data_dir: str | None = None, verbose: bool = False) -> int:
    from services.ingest_exchange.service import ExchangeIngestService
    from services.ingest_salesforce.service import SalesforceIngestService
    from services.reconciler.service import ReconcilerService
    from services.writer.service import create as create_writer

    tmp = tempfile.TemporaryDirectory(prefix="exsf-demo-") if data_dir is None else None
    root = Path(data_dir or (tmp.name if tmp else "."))
    root.mkdir(parents=True, exist_ok=True)
    # The emulators start empty on every run, so cursors, replay ids and links kept from an
    # earlier run describe a world that is gone. Each run therefore gets its own namespace
    # in DIR (topics, groups and transactional ids under "runN.", state in DIR/runN): the
    # new run starts clean and earlier runs stay there to inspect.
    run = _next_run(root) if data_dir is not None else ""
    run_root = root / run.rstrip(".") if run else root
    run_root.mkdir(parents=True, exist_ok=True)
    where = f"{root}, run {run[3:-1]}" if run else str(root)
    print(f"exsf demo: emulators, embedded bus and all services in one process (data in {where})")
    logs = None if verbose else DemoLogs.open(run_root / "demo.log" if data_dir is not None else None)
    if logs is not None:
        print(f"  logs: {logs.path} (--verbose shows them here instead)")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        # Ctrl-C stops the story and shuts everything down in order (no KeyboardInterrupt
        # tearing through half-stopped services).
        loop.add_signal_handler(sig, stop.set)

    graph_runner, graph_url = await serve_graph(config=GraphEmulatorConfig(mailboxes=(ALICE, BOB)))
    sf_cfg = SalesforceEmulatorConfig(long_poll_timeout_s=5)
    sf_runner, sf_url = await serve_salesforce(users=(ALICE, BOB), config=sf_cfg)
    gadmin, sadmin = GraphAdminClient(graph_url), SalesforceAdmin(sf_url)
    sf_ids = await sadmin.users()
    print(f"  Graph emulator      {graph_url}/v1.0   mailboxes: {ALICE}, {BOB}")
    print(f"  Salesforce emulator {sf_url}   users: {ALICE}, {BOB}")

    bus = EmbeddedBus(root / "bus.sqlite")
    await bus.start()
    topics = Topics.with_prefix(run)
    await bus.create_topics(topic_specs(4, run))
    tenant = Tenant(
        "demo",
        (User(ALICE, sf_ids[ALICE]), User(BOB, sf_ids[BOB])),
        graph=GraphEndpoint(
            base_url=graph_url + "/v1.0",
            authority=graph_url,
            azure_tenant_id=state_of(graph_runner).config.tenant_id,
            client_id="exsf-demo",
            client_secret_ref="literal:demo",
        ),
        salesforce=SalesforceEndpoint(
            login_url=sf_url,
            client_id="exsf-demo",
            username=ALICE,
            client_secret_ref="literal:demo",
            password_ref="literal:password",
        ),
        poll_seconds=30,
    )
    # Seed Salesforce before anything runs: the first sync must bring these to Outlook.
    seeded = [
        await sadmin.create("Contact", {"FirstName": f, "LastName": last, "Email": e, "Phone": p}, as_user=ALICE)
        for f, last, e, p in [
            ("Grace", "Hopper", "grace@navy.test", "+1 555 0100"),
            ("Ada", "Lovelace", "ada@engine.test", "+44 20 0000"),
            ("Alan", "Turing", "alan@bletchley.test", "+44 1908 000"),
        ]
    ]
    await TenantRegistry(bus, topics.tenants).put(tenant)

    health = Health()
    side = SideServer(health, host="127.0.0.1", port=0)
    side_url = f"http://127.0.0.1:{await side.start()}"
    webhook_port = _free_port()
    os.environ.setdefault("EXSF_STATE_DIR", str(run_root / "state"))
    services: list[Any] = [
        ExchangeIngestService(
            bus,
            topics,
            health,
            webhook_host="127.0.0.1",
            webhook_port=webhook_port,
            public_url=f"http://127.0.0.1:{webhook_port}",
        ),
        SalesforceIngestService(bus, topics, health, long_poll_timeout_s=15.0),
        ReconcilerService(
            bus,
            topics,
            health,
            store=StateStore(run_root / "reconciler.sqlite"),
            group_id=topics.namespace.group("reconciler"),
        ),
        await create_writer(bus, topics, health),
    ]
    tasks = [asyncio.create_task(s.run()) for s in services]
    health.set_ready(True)
    store = state_of(graph_runner).store

    def mailbox_items(mailbox: str, kind: str) -> list[dict[str, Any]]:
        mb = store.mailbox(mailbox)
        return [dict(it.data, id=it.id, container=it.container) for it in mb.items.values() if it.kind == kind]

    def folder_id(mailbox: str, name: str) -> str:
        mb = store.mailbox(mailbox)
        return next((c.id for c in mb.containers.values() if c.data.get("displayName") == name), "")

    async def sf_contacts() -> list[dict[str, Any]]:
        return [r for r in await sadmin.records("Contact") if not r.get("IsDeleted")]

    def outlook_contact(email: str) -> dict[str, Any] | None:
        folder = folder_id(ALICE, "Salesforce Contacts")
        for c in mailbox_items(ALICE, "contact"):
            addrs = [a.get("address", "").lower() for a in c.get("emailAddresses") or []]
            if c["container"] == folder and email in addrs:
                return c
        return None

    total = 6

    async def story() -> None:
        async def seeded_in_outlook() -> bool:
            return all(outlook_contact(e) for e in ("grace@navy.test", "ada@engine.test", "alan@bletchley.test"))

        await Step(1, total, "3 Salesforce contacts owned by Alice appear in her 'Salesforce Contacts' folder").until(
            seeded_in_outlook
        )

        await gadmin.create_item(
            ALICE,
            "contact",
            {
                "givenName": "Katherine",
                "surname": "Johnson",
                "jobTitle": "Mathematician",
                "emailAddresses": [{"address": "katherine@nasa.test", "name": "Katherine Johnson"}],
            },
            container="Salesforce Contacts",
        )

        async def in_salesforce() -> bool:
            return any(
                (r.get("Email") or "").lower() == "katherine@nasa.test" and r.get("OwnerId") == sf_ids[ALICE]
                for r in await sf_contacts()
            )

        await Step(2, total, "a contact Alice adds in Outlook becomes a Salesforce Contact she owns").until(
            in_salesforce
        )

        grace = outlook_contact("grace@navy.test")
        assert grace is not None
        await gadmin.update_item(ALICE, grace["id"], {"jobTitle": "Rear Admiral"})
        await sadmin.update("Contact", seeded[0], {"MobilePhone": "+1 555 0199"})

        async def merged() -> bool:
            sf = await sadmin.record("Contact", seeded[0])
            ol = outlook_contact("grace@navy.test") or {}
            return sf.get("Title") == "Rear Admiral" and ol.get("mobilePhone") == "+1 555 0199"

        await Step(
            3, total, "edits to different fields on both sides merge (title in Outlook, mobile in Salesforce)"
        ).until(merged)

        ada = outlook_contact("ada@engine.test")
        assert ada is not None
        # A slow Graph (1.5 s per call) makes the two edits truly concurrent: neither side's
        # change can reach the other before the second edit lands.
        await gadmin.faults(delay_ms=1500)
        await gadmin.update_item(ALICE, ada["id"], {"department": "Analytical Engines (Outlook)"})
        await asyncio.sleep(0.05)
        await sadmin.update("Contact", seeded[1], {"Department": "Analytical Engines (Salesforce)"})
        await asyncio.sleep(0.5)
        await gadmin.faults(delay_ms=0)

        async def conflict_resolved() -> bool:
            sf = await sadmin.record("Contact", seeded[1])
            ol = outlook_contact("ada@engine.test") or {}
            return bool(sf.get("Department")) and sf.get("Department") == ol.get("department")

        await Step(4, total, "the same field edited on both sides: latest change wins, the other is audited").until(
            conflict_resolved
        )
        winner = (await sadmin.record("Contact", seeded[1])).get("Department")
        audit = await _audit(bus, topics)
        conflicts = [a for a in audit if a.get("kind") == "conflict"]
        print(f"      winner: {winner!r}")
        for a in conflicts:
            print(
                f"      audit: field {a.get('field')!r} exchange={a.get('exchange_value')!r} "
                f"salesforce={a.get('salesforce_value')!r} -> {a.get('winner')} wins ({a.get('policy')})"
            )

        msg = await gadmin.create_item(
            ALICE,
            "message",
            {
                "subject": "Contract draft",
                "body": {"contentType": "text", "content": "Please review."},
                "from": {"emailAddress": {"address": "katherine@nasa.test", "name": "Katherine Johnson"}},
                "toRecipients": [{"emailAddress": {"address": ALICE}}],
                "internetMessageId": "<contract-1@nasa.test>",
                "sentDateTime": "2026-11-29T09:00:00Z",
            },
            container="inbox",
        )
        await gadmin.add_attachment(
            ALICE, msg["id"], "contract.txt", "text/plain", base64.b64encode(b"terms and conditions").decode()
        )
        await gadmin.move_item(ALICE, msg["id"], "Salesforce Emails")

        async def email_task() -> bool:
            tasks_ = [t for t in await sadmin.records("Task") if t.get("TaskSubtype") == "Email"]
            if not tasks_ or tasks_[0].get("Status") != "Completed":
                return False
            files = [r for r in await sadmin.records("ContentVersion")]
            return any(f.get("Title", "").startswith("contract") for f in files)

        await Step(
            5, total, "an email moved to 'Salesforce Emails' becomes a completed Task with its attachment"
        ).until(email_task)

        await sadmin.delete("Contact", seeded[2])

        async def deleted() -> bool:
            return outlook_contact("alan@bletchley.test") is None

        await Step(6, total, "a contact deleted in Salesforce disappears from Outlook").until(deleted)

        g = await gadmin.counters()
        s = await sadmin.counters()
        print("\nAll steps converged. Nothing was created twice:")
        folder = folder_id(ALICE, "Salesforce Contacts")
        in_folder = [c for c in mailbox_items(ALICE, "contact") if c["container"] == folder]
        n_sf = len(await sf_contacts())
        print(f"  Salesforce contacts: {n_sf}, Outlook contacts in Alice's folder: {len(in_folder)}")
        graph_calls = sum(int(v.get("total", 0)) for k, v in g.items() if k != "_global")
        print(
            f"  API calls: Graph {graph_calls}, Salesforce REST {s.get('rest_calls', '?')} "
            f"(of which sObject Collections {s.get('collections_calls', '?')})"
        )

    rc = 0
    try:
        rc = await _until_stopped(story(), stop)
        if rc == 0 and seconds:
            print(f"\nStill running for {seconds:.0f}s (Ctrl-C stops it). Try these while it runs:")
            for what, url in (
                ("exsf metrics", f"{side_url}/metrics"),
                ("exsf readiness", f"{side_url}/readyz"),
                ("Graph emulator mailboxes", f"{graph_url}/_admin/mailboxes"),
                ("Graph API calls so far", f"{graph_url}/_admin/counters"),
                ("Salesforce contacts", f"{sf_url}/_admin/records/Contact"),
                ("Salesforce API calls so far", f"{sf_url}/_admin/counters"),
            ):
                print(f"  {what:28} {url}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), seconds)
    except (TimeoutError, AssertionError) as exc:
        print(f"\nexsf demo failed: {exc}")
        rc = 1
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        health.set_ready(False, "stopping")
        for s in services:
            s.stop()
        for t in tasks:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(t, 30)
        await side.stop()
        await gadmin.close()
        await sadmin.close()
        await bus.stop()
        await graph_runner.cleanup()
        await sf_runner.cleanup()
        if tmp is not None:
            tmp.cleanup()
        if logs is not None:
            logs.close()
    if rc == 130:
        print("\nexsf demo: interrupted, everything stopped cleanly.")
    if rc == 1 and logs is not None:
        print(f"The services' logs are in {logs.path}.")
    print(NEXT_STEPS)
    return rc


NEXT_STEPS = (
    "\nWhat next: `exsf demo --seconds 600` keeps it all running to explore (metrics, the emulators' "
    "data); to sync your own org, write a tenant file (README: Configuration), check it with "
    "`exsf tenants validate tenant.json` and enrol it with `exsf tenants put tenant.json` "
    "(README: Operating exsf)."
)


async def _until_stopped(story: Coroutine[Any, Any, None], stop: asyncio.Event) -> int:
    """Run the story unless stopped first: 0 when it played out, 130 when interrupted."""
    task = asyncio.ensure_future(story)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        done, _ = await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
    if task in done:
        task.result()  # a failed step raises here
        return 0
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return 130


@dataclass
class DemoLogs:
    """The services' logs sent to a file, so the terminal shows the story alone."""

    path: Path
    file: TextIO

    @classmethod
    def open(cls, path: Path | None) -> DemoLogs:
        if path is None:  # a throwaway data dir: keep the log after it is removed
            fd, name = tempfile.mkstemp(prefix="exsf-demo-", suffix=".log")
            os.close(fd)
            path = Path(name)
        f = path.open("a", encoding="utf-8")
        cls._point(f)
        return cls(path, f)

    @staticmethod
    def _point(stream: TextIO) -> None:
        # configure_logging (services.core.logging) writes structlog output and library
        # logs to stderr; only their destination changes here, format and redaction stay.
        structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=stream))
        for h in logging.getLogger().handlers:
            if isinstance(h, logging.StreamHandler):
                h.setStream(stream)

    def close(self) -> None:
        self._point(sys.stderr)
        self.file.close()


async def _audit(bus: EmbeddedBus, topics: Topics) -> list[dict[str, Any]]:
    n = await bus.partitions_for(topics.audit)
    c = bus.consumer([topics.audit], group_id=None, assign=[TopicPartition(topics.audit, p) for p in range(n)])
    await c.start()
    for p in range(n):
        c.seek(TopicPartition(topics.audit, p), 0)
    out: list[dict[str, Any]] = []
    for _ in range(3):
        for msgs in (await c.getmany(timeout_ms=100)).values():
            out.extend(orjson.loads(m.value or b"{}") for m in msgs)
    await c.stop()
    return out
