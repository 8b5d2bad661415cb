"""Shared world for the writer tests: both emulators over real HTTP, a tenant on exsf.tenants,
a producer for commands and readers for exsf.results and exsf.deadletter."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from services.core.bus.base import Bus, Consumer, Producer, TopicPartition
from services.core.envelopes import Command, CommandContext, CommandResult, decode_command_result, encode
from services.core.tenant_registry import TenantRegistry
from services.core.tenants import GraphEndpoint, SalesforceEndpoint, Tenant, User
from services.core.topics import Topics, tenant_key, topic_specs
from services.emulators.graph.admin_client import GraphAdminClient
from services.emulators.graph.app import serve as serve_graph
from services.emulators.graph.app import state_of
from services.emulators.graph.config import GraphEmulatorConfig
from services.emulators.graph.state import EmulatorState
from services.emulators.salesforce import SalesforceEmulatorConfig
from services.emulators.salesforce import serve as serve_salesforce
from services.emulators.salesforce.admin_client import SalesforceAdmin
from services.writer.config import WriterSettings
from services.writer.service import WriterService
from tests.support.waiting import eventually, topics_visible

ALICE, BOB, CAROL = "alice@contoso.test", "bob@contoso.test", "carol@fabrikam.test"
PARTITIONS = 2

FAST = WriterSettings(
    max_attempts=3,
    backoff_base_s=0.05,
    backoff_max_s=0.2,
    throttle_default_s=0.3,
    request_limit_backoff_s=0.3,
    graph_max_retries=1,
    graph_retry_delay_s=0.0,
    tenant_reload_s=3600.0,
)

CONTACT = {"given_name": "Ann", "family_name": "Lee", "email": "ann@example.test", "job_title": "CTO"}
EVENT = {"subject": "Kick-off", "start": "2026-12-01T10:00:00Z", "end": "2026-12-01T11:00:00Z",
         "time_zone": "UTC", "location": "Room 1"}
TASK = {"subject": "Send the offer", "status": "not_started", "priority": "high", "due_date": "2026-12-05"}


@dataclass
class World:
    bus: Bus
    topics: Topics
    prefix: str
    graph: EmulatorState
    graph_admin: GraphAdminClient
    sf_admin: SalesforceAdmin
    sf_ids: dict[str, str]
    contoso: Tenant
    fabrikam: Tenant
    producer: Producer
    results_reader: Consumer
    dead_reader: Consumer
    results: list[CommandResult] = field(default_factory=list)
    dead: list[dict[str, Any]] = field(default_factory=list)
    writers: list[tuple[WriterService, asyncio.Task[None]]] = field(default_factory=list)

    # --- writer ----------------------------------------------------------------------------
    def writer(self, settings: WriterSettings = FAST, bus: Bus | None = None) -> WriterService:
        return WriterService(bus or self.bus, self.topics, settings=settings, group_id=f"{self.prefix}writer",
                             transactional_prefix=f"{self.prefix}writer")

    async def start_writer(self, settings: WriterSettings = FAST, bus: Bus | None = None) -> WriterService:
        w = self.writer(settings, bus)
        self.writers.append((w, asyncio.create_task(w.run())))
        await eventually(lambda: _assigned(w), "writer owns its partitions")
        return w

    async def stop_writer(self, w: WriterService) -> None:
        for pair in list(self.writers):
            if pair[0] is w:
                w.stop()
                await pair[1]
                self.writers.remove(pair)

    # --- commands and results ----------------------------------------------------------------
    async def send(self, *commands: Command) -> None:
        for c in commands:
            await self.producer.send_and_wait(self.topics.commands_for(c.target), encode(c),
                                              key=tenant_key(c.tenant_id))

    async def send_raw(self, target: str, value: bytes, tenant_id: str = "contoso") -> None:
        await self.producer.send_and_wait(self.topics.commands_for(target), value, key=tenant_key(tenant_id))

    async def pull(self) -> None:
        for msgs in (await self.results_reader.getmany(timeout_ms=100)).values():
            self.results.extend(decode_command_result(m.value or b"") for m in msgs)
        for msgs in (await self.dead_reader.getmany(timeout_ms=100)).values():
            self.dead.extend(orjson.loads(m.value or b"{}") for m in msgs)

    async def results_for(self, n: int, *, what: str = "results") -> list[CommandResult]:
        async def enough() -> bool:
            await self.pull()
            return len(self.results) >= n

        await eventually(enough, f"{n} {what} (have {len(self.results)})")
        return self.results

    def result_of(self, command_id: str) -> list[CommandResult]:
        return [r for r in self.results if r.command_id == command_id]

    # --- target state ------------------------------------------------------------------------
    def graph_items(self, mailbox: str, kind: str) -> list[Any]:
        return [it for it in self.graph.store.mailbox(mailbox).items.values() if it.kind == kind]

    def graph_container(self, mailbox: str, container_id: str) -> Any:
        return self.graph.store.mailbox(mailbox).containers[container_id]

    async def sf_records(self, sobject: str) -> list[dict[str, Any]]:
        return await self.sf_admin.records(sobject)


async def _assigned(w: WriterService) -> bool:
    return len(w.processor._parts) == PARTITIONS


def command(entity: str, target: str, link_id: str, fields: dict[str, Any], *, action: str = "create",
            user: str = ALICE, tenant_id: str = "contoso", target_id: str | None = None,
            expected_version: str | None = None, context: CommandContext | None = None) -> Command:
    return Command(tenant_id=tenant_id, user=user, target=target, entity=entity, action=action,  # type: ignore[arg-type]
                   link_id=link_id, target_id=target_id, fields=fields, expected_version=expected_version,
                   context=context or CommandContext())


@contextlib.asynccontextmanager
async def make_world(bus: Bus, prefix: str, *, graph_config: GraphEmulatorConfig | None = None,
                     sf_config: SalesforceEmulatorConfig | None = None) -> AsyncIterator[World]:
    gcfg = graph_config or GraphEmulatorConfig(mailboxes=(ALICE, BOB, CAROL), client_id="exsf-app",
                                               client_secret="s3cret")
    grunner, gurl = await serve_graph(config=gcfg)
    srunner, surl = await serve_salesforce(users=(ALICE, BOB, CAROL),
                                           config=sf_config or SalesforceEmulatorConfig(long_poll_timeout_s=1.0))
    graph_admin = GraphAdminClient(gurl)
    sf_admin = SalesforceAdmin(surl)
    ids = await sf_admin.users()
    topics = Topics.with_prefix(prefix)
    await bus.create_topics(topic_specs(PARTITIONS, prefix))

    await topics_visible(bus, topics.tenants, topics.commands_exchange, topics.commands_salesforce, topics.results,
                         topics.deadletter, topics.state, partitions=PARTITIONS)

    def tenant(tid: str, users: tuple[User, ...], sf_user: str) -> Tenant:
        return Tenant(
            tid,
            users,
            graph=GraphEndpoint(base_url=gurl + "/v1.0", authority=gurl, azure_tenant_id=gcfg.tenant_id,
                                client_id="exsf-app", client_secret_ref="literal:s3cret"),
            salesforce=SalesforceEndpoint(login_url=surl, client_id="exsf", username=sf_user,
                                          client_secret_ref="literal:x", password_ref="literal:password"),
        )

    contoso = tenant("contoso", (User(ALICE, ids[ALICE]), User(BOB, ids[BOB])), ALICE)
    fabrikam = tenant("fabrikam", (User(CAROL, ids[CAROL]),), CAROL)
    registry = TenantRegistry(bus, topics.tenants)
    await registry.put(contoso)
    await registry.put(fabrikam)
    producer = bus.producer()
    await producer.start()
    readers = []
    for topic in (topics.results, topics.deadletter):
        r = bus.consumer([topic], group_id=None, assign=[TopicPartition(topic, p) for p in range(PARTITIONS)])
        await r.start()
        for p in range(PARTITIONS):
            r.seek(TopicPartition(topic, p), 0)
        readers.append(r)
    w = World(bus, topics, prefix, state_of(grunner), graph_admin, sf_admin, ids, contoso, fabrikam, producer,
              readers[0], readers[1])
    try:
        yield w
    finally:
        for svc, task in w.writers:
            svc.stop()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 30)
        for r in readers:
            await r.stop()
        await producer.stop()
        await graph_admin.close()
        await sf_admin.close()
        await srunner.cleanup()
        await grunner.cleanup()
