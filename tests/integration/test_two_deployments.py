"""Two complete deployments side by side on one Kafka broker (issue 11, deliverable 6), as
staging and production sharing a cluster: every service of each as a separate OS process,
each deployment with its own emulators, its own EXSF_TOPIC_PREFIX and the SAME tenant id,
so without the prefix on consumer groups and transactional ids they would join each other's
groups and fence each other's producers (`exsf-reconciler-0` for both).

Shown: each deployment syncs exactly its own contacts both ways while the other runs its
own load; no contact crosses; each deployment's consumer groups hold offsets only for its
own topics; no process of either was ever fenced; and a clean stop (SIGTERM) of every
process exits 0 and logs no ERROR line and no traceback.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from services.emulators.graph.admin_client import GraphAdminClient
from services.emulators.salesforce.admin_client import SalesforceAdmin
from tests.support.contacts import ContactLoad, GraphReader, diff, salesforce_view
from tests.support.front import RoundRobinFront
from tests.support.pipeline import Pipeline
from tests.support.processes import Proc, free_port, wait_http

pytestmark = [pytest.mark.e2e, pytest.mark.kafka]

TENANT = "contoso"  # the same in both: only the prefix keeps them apart
LOAD_S = 15.0
CONVERGE_S = 120.0  # a bound for a slow shared 2-core machine, not a performance claim


@dataclass
class Deployment:
    name: str
    prefix: str
    mailboxes: list[str]
    run_dir: Path
    bootstrap: str
    first_contact: int  # contact numbers (and emails) of this deployment start here
    emulators: list[Proc] = field(default_factory=list)
    pipeline: Pipeline | None = None
    front: RoundRobinFront | None = None
    graph: GraphAdminClient | None = None
    salesforce: SalesforceAdmin | None = None
    reader: GraphReader | None = None
    sf_ids: dict[str, str] = field(default_factory=dict)
    load: ContactLoad | None = None

    @property
    def env(self) -> dict[str, str]:
        return {"KAFKA_BOOTSTRAP_SERVERS": self.bootstrap, "EXSF_BUS": "kafka", "EXSF_TOPIC_PREFIX": self.prefix,
                "EXSF_PARTITIONS": "2"}

    def _once(self, name: str, args: list[str]) -> None:
        p = Proc(f"{self.name}-{name}", args, self.env, self.run_dir / f"{name}.log").start()
        assert p.popen is not None and p.popen.wait(120) == 0, p.log_tail()

    async def start(self) -> None:
        gport, sport = free_port(), free_port()
        mb_args = [a for mb in self.mailboxes for a in ("--mailbox", mb)]
        user_args = [a for mb in self.mailboxes for a in ("--user", mb)]
        self.emulators = [
            Proc(f"{self.name}-graph", ["emulate", "graph", "--port", str(gport), *mb_args], self.env,
                 self.run_dir / "graph.log").start(),
            Proc(f"{self.name}-salesforce", ["emulate", "salesforce", "--port", str(sport), *user_args], self.env,
                 self.run_dir / "salesforce.log").start(),
        ]
        groot, sroot = f"http://127.0.0.1:{gport}", f"http://localhost:{sport}"
        await wait_http(f"{groot}/_admin/counters", 60, self.emulators[0])
        await wait_http(f"{sroot}/_admin/counters", 60, self.emulators[1])
        self.graph, self.salesforce = GraphAdminClient(groot), SalesforceAdmin(sroot)
        self.reader = GraphReader(groot, self.graph)
        self.sf_ids = await self.salesforce.users()
        self.front = RoundRobinFront([])
        await self.front.start()
        self._once("topics", ["topics", "create"])
        tenant = {
            "tenant_id": TENANT,
            "users": [{"mailbox": mb, "salesforce_user_id": self.sf_ids[mb]} for mb in self.mailboxes],
            "graph": {"base_url": groot + "/v1.0", "authority": groot, "azure_tenant_id": "t", "client_id": "x",
                      "client_secret_ref": "literal:x"},
            "salesforce": {"login_url": sroot, "client_id": "x", "username": self.mailboxes[0],
                           "client_secret_ref": "literal:x", "password_ref": "literal:password"},
            "entities": ["contact"], "poll_seconds": 5,
        }
        (self.run_dir / "tenant.json").write_text(json.dumps(tenant))
        self._once("put", ["tenants", "put", str(self.run_dir / "tenant.json")])
        self.pipeline = Pipeline({**self.env, "EXSF_WEBHOOK_PUBLIC_URL": self.front.url}, self.run_dir / "run",
                                 {"ingest-exchange": 1, "ingest-salesforce": 1, "reconciler": 2, "writer": 1})
        self.pipeline.start()
        self.front.ports = self.pipeline.webhook_ports()

    async def prepared(self) -> bool:
        assert self.graph is not None
        for mb in self.mailboxes:
            if not any(c.get("displayName") == "Salesforce Contacts" for c in await self.graph.containers(mb)):
                return False
        return True

    async def run_load(self, seed: int) -> None:
        assert self.graph is not None and self.salesforce is not None
        self.load = ContactLoad(self.graph, self.salesforce, self.sf_ids, random.Random(seed),
                                _n=self.first_contact)
        t0 = time.monotonic()
        while time.monotonic() - t0 < LOAD_S:
            await self.load.step()
            await asyncio.sleep(0.3)

    async def problems(self) -> list[str]:
        assert self.load is not None and self.salesforce is not None and self.reader is not None
        expected = self.load.expected.view()
        sf, sf_dupes = await salesforce_view(self.salesforce, self.sf_ids)
        ol, ol_dupes = await self.reader.view(self.mailboxes)
        deleted = self.load.expected.deleted
        return ([f"{self.name} salesforce {p}" for p in diff(expected, sf, sf_dupes, deleted)]
                + [f"{self.name} outlook {p}" for p in diff(expected, ol, ol_dupes, deleted)])

    def logs(self) -> list[Path]:
        return sorted((self.run_dir / "run" / "logs").glob("*.log")) + [p.log_path for p in self.emulators]

    async def close(self) -> None:
        if self.pipeline is not None:
            self.pipeline.stop()
        for p in self.emulators:
            p.kill9()
        for c in (self.reader, self.graph, self.salesforce):
            if c is not None:
                await c.close()
        if self.front is not None:
            await self.front.stop()


def _bad_lines(log: Path) -> list[str]:
    """ERROR or worse, tracebacks, and any fencing: none may appear in a clean run."""
    out = []
    for line in log.read_text(errors="replace").splitlines():
        level = ""
        try:
            level = str(json.loads(line).get("level", "")).lower()
        except (ValueError, AttributeError):
            pass
        if (level in ("error", "critical", "exception") or "Traceback" in line or " ERROR " in line
                or "ProducerFenced" in line or "partition.fenced" in line):
            out.append(f"{log.name}: {line[:300]}")
    return out


async def _group_topics(bootstrap: str) -> dict[str, set[str]]:
    """Every consumer group on the broker -> the topics it has committed offsets for."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        out: dict[str, set[str]] = {}
        for g in await admin.list_consumer_groups():
            gid = str(g[0])
            offsets = await admin.list_consumer_group_offsets(gid)
            out[gid] = {tp.topic for tp in offsets}
        return out
    finally:
        await admin.close()


async def test_two_deployments_on_one_broker_neither_disturbs_the_other(kafka_bootstrap: str,
                                                                        tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:6]
    a = Deployment("staging", f"stg{tag}.", ["alice@contoso.test", "bob@contoso.test"], tmp_path / "staging",
                   kafka_bootstrap, first_contact=0)
    b = Deployment("production", f"prd{tag}.", ["alice@contoso.test", "carol@contoso.test"],
                   tmp_path / "production", kafka_bootstrap, first_contact=100000)
    try:
        await asyncio.gather(a.start(), b.start())
        assert a.pipeline is not None and b.pipeline is not None
        await asyncio.gather(a.pipeline.wait_ready(180), b.pipeline.wait_ready(180))
        deadline = time.monotonic() + 120
        while not (await a.prepared() and await b.prepared()):
            assert time.monotonic() < deadline, "mailboxes were never prepared"
            await asyncio.sleep(0.5)

        await asyncio.gather(a.run_load(21), b.run_load(22))
        assert a.load is not None and b.load is not None
        problems: list[str] = []
        deadline = time.monotonic() + CONVERGE_S
        while time.monotonic() < deadline:
            problems = await a.problems() + await b.problems()
            if not problems:
                break
            await asyncio.sleep(1)
        assert not problems, f"{len(problems)} differences:\n" + "\n".join(problems[:40])
        # Both really did work on both sides, and no contact of one is in the other:
        # `problems` would list it as "unexpected" (the numbers, hence emails, differ).
        for d in (a, b):
            assert d.load is not None
            ops = d.load.expected.ops
            assert ops["create.exchange"] and ops["create.salesforce"], (d.name, dict(ops))

        # Consumer groups: each deployment's own names, offsets only on its own topics.
        groups = await _group_topics(kafka_bootstrap)
        for d in (a, b):
            # (the ingestors' shard groups commit no offsets: they read exsf.tenants whole)
            mine = {g: t for g, t in groups.items() if g.startswith(d.prefix)}
            assert {f"{d.prefix}exsf-{s}" for s in ("reconciler", "writer", "ingest-exchange",
                                                    "ingest-salesforce")} <= set(mine), groups
            assert all(x.startswith(d.prefix) for t in mine.values() for x in t), (d.name, mine)
            assert mine[f"{d.prefix}exsf-reconciler"], "the reconciler committed offsets"

        crossing = {g: t for g, t in groups.items()
                    if not g.startswith((a.prefix, b.prefix)) and any(x.startswith((a.prefix, b.prefix)) for x in t)}
        assert not crossing, f"a group outside both namespaces consumed their topics: {crossing}"

        # A clean stop of every exsf process: exit code 0, and no ERROR anywhere.
        codes: dict[str, int | None] = {}
        for d in (a, b):
            assert d.pipeline is not None
            for pod in reversed(d.pipeline.pods):
                codes[f"{d.name}/{pod.name}"] = await asyncio.to_thread(pod.terminate, 60)
        # The emulators stand in for Graph and Salesforce, not for exsf: they just go (their
        # logs are still checked below).
        for d in (a, b):
            for emu in d.emulators:
                await asyncio.to_thread(emu.terminate, 30)
        assert all(c == 0 for c in codes.values()), sorted(codes.items())
        bad = [line for d in (a, b) for log in d.logs() for line in _bad_lines(log)]
        assert not bad, f"{len(bad)} ERROR/fenced lines:\n" + "\n".join(bad[:30])
        # The logs checked are real: every pod logged its clean stop.
        stopped = [log for d in (a, b) for log in d.logs() if "service.stopping" in log.read_text(errors="replace")]
        assert len(stopped) >= 10, [p.name for p in stopped]
    finally:
        await a.close()
        await b.close()
