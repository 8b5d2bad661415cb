"""EXSF_TOPIC_PREFIX namespaces every consumer group and transactional id, not only topics,
so two deployments on one cluster never join each other's groups or fence each other."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.core.bus.embedded import EmbeddedBus
from services.core.sideserver import Health
from services.core.topics import Namespace, Topics
from services.ingest_exchange import service as ingest_exchange
from services.ingest_salesforce import service as ingest_salesforce
from services.reconciler import service as reconciler
from services.writer import service as writer


def test_empty_prefix_keeps_the_historical_names() -> None:
    ns = Topics.with_prefix("").namespace
    assert ns == Namespace("")
    assert ns.group("reconciler") == "exsf-reconciler"
    assert ns.transactional_id("ingest-exchange", 3) == "exsf-ingest-exchange-3"


async def test_every_service_prefixes_its_group_and_transactional_ids(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EXSF_STATE_DIR", str(tmp_path))
    bus = EmbeddedBus(tmp_path / "bus.sqlite")
    topics = Topics.with_prefix("staging.")
    assert topics.namespace.prefix == "staging."
    health = Health()
    rec = await reconciler.create(bus, topics, health)
    wr = await writer.create(bus, topics, health)
    ix = await ingest_exchange.create(bus, topics, health)
    isf = await ingest_salesforce.create(bus, topics, health)
    for proc in (rec.processor, wr.processor):
        assert proc.group_id.startswith("staging.exsf-"), proc.group_id
        assert proc.txn_prefix.startswith("staging.exsf-"), proc.txn_prefix
    for shards in (ix.shards, isf.shards):
        assert shards.group_id.startswith("staging.exsf-ingest-"), shards.group_id
        assert shards.namespace == "staging."
    rec.store.close()
