"""The world the ingest-exchange pod tests share: a Graph emulator (real msgraph-sdk over
HTTP), the topics of one test namespace on the real broker, one enrolled tenant whose
mailboxes the emulator serves, and a round-robin front that spreads Graph's POSTs over the
pods as a k8s Service does. Plus starting `exsf run ingest-exchange` as an OS process in
that world, and reading the JSON events such a process logged.

Used by tests/integration/test_ingest_exchange_pods.py and test_subscription_orphans.py.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from services.core.bus.kafka import KafkaBus, KafkaSettings
from services.core.tenant_registry import TenantRegistry
from services.core.tenants import GraphEndpoint, Tenant, User
from services.core.topics import Topics, topic_specs
from services.emulators.graph.admin_client import GraphAdminClient
from services.emulators.graph.app import serve
from services.emulators.graph.config import GraphEmulatorConfig
from tests.support.front import RoundRobinFront
from tests.support.processes import Proc, free_port
from tests.support.waiting import topics_visible

TENANT_ID = "contoso"
PARTITIONS = 2
CLIENT_ID, CLIENT_SECRET = "exsf-app", "s3cret"


@dataclass
class ExchangeWorld:
    bootstrap: str
    prefix: str
    topics: Topics
    admin: GraphAdminClient  # the emulator's admin API: create items, list subscriptions
    front: RoundRobinFront  # Graph's notificationUrl; `front.ports` are the pods' webhooks
    setup: KafkaBus  # a started bus for the test's own reads and writes
    tenant: Tenant


@contextlib.asynccontextmanager
async def exchange_world(
    bootstrap: str, prefix: str, *, mailboxes: Sequence[str], entities: tuple[str, ...]
) -> AsyncIterator[ExchangeWorld]:
    cfg = GraphEmulatorConfig(mailboxes=tuple(mailboxes), client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
    runner, url = await serve(config=cfg)
    admin = GraphAdminClient(url)
    topics = Topics.with_prefix(prefix)
    setup = KafkaBus(KafkaSettings(bootstrap_servers=bootstrap))
    front = RoundRobinFront([])
    try:
        await setup.start()
        await setup.create_topics(topic_specs(PARTITIONS, prefix))
        await topics_visible(
            setup, topics.cursors, topics.tenants, topics.subscriptions, topics.notifications, partitions=PARTITIONS
        )
        tenant = Tenant(
            TENANT_ID,
            tuple(User(m, f"00500000000000{i + 1}AAA") for i, m in enumerate(mailboxes)),
            graph=GraphEndpoint(
                base_url=url + "/v1.0",
                authority=url,
                azure_tenant_id=cfg.tenant_id,
                client_id=CLIENT_ID,
                client_secret_ref=f"literal:{CLIENT_SECRET}",
            ),
            poll_seconds=3600,  # only a notification can make a change arrive quickly
            entities=entities,
        )
        await TenantRegistry(setup, topics.tenants).put(tenant)
        await front.start()
        yield ExchangeWorld(bootstrap, prefix, topics, admin, front, setup, tenant)
    finally:
        await front.stop()
        await setup.stop()
        await admin.close()
        await runner.cleanup()


def start_ingest_exchange(w: ExchangeWorld, tmp: Path, name: str, extra: dict[str, str] | None = None) -> Proc:
    """`exsf run ingest-exchange` as an OS process of this world, logging JSON to
    tmp/<name>.log; the front sends Graph's POSTs to it alone from now on."""
    side, hook = free_port(), free_port()
    env = {
        "EXSF_BUS": "kafka",
        "KAFKA_BOOTSTRAP_SERVERS": w.bootstrap,
        "EXSF_TOPIC_PREFIX": w.prefix,
        "EXSF_PARTITIONS": str(PARTITIONS),
        "EXSF_WEBHOOK_PUBLIC_URL": w.front.url,
        "EXSF_SIDE_PORT": str(side),
        "EXSF_WEBHOOK_PORT": str(hook),
        "EXSF_STATE_DIR": str(tmp / "state"),
        **(extra or {}),
    }
    w.front.ports = [hook]
    return Proc(name, ["run", "ingest-exchange"], env, tmp / f"{name}.log", side_port=side).start()


def logged_events(log: Path) -> list[str]:
    """The `event` of every JSON line a process logged (other lines skipped)."""
    out = []
    for line in log.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError, AttributeError):
            out.append(str(json.loads(line).get("event")))
    return out
