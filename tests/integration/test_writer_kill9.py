"""`exsf run writer` killed with SIGKILL after its Graph writes began but before it could
commit its results; a fresh `exsf run writer` on the same group re-reads the commands and
leaves exactly one item per command. Real Kafka (the kill is about its transactions)."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.connectors.exchange.models import link_id_of
from services.core.bus.kafka import KafkaBus
from services.core.envelopes import encode
from services.core.topics import tenant_key
from tests.integration.writer_support import ALICE, CONTACT, PARTITIONS, World, command, make_world
from tests.support.processes import Proc, free_port
from tests.support.waiting import eventually


@pytest.fixture
async def world(kafka_bus: KafkaBus, topic_prefix: str) -> AsyncIterator[World]:
    async with make_world(kafka_bus, topic_prefix) as w:
        yield w


def _writer(w: World, kafka_bootstrap: str, tmp_path: Path, name: str) -> Proc:
    side = free_port()
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "EXSF_BUS": "kafka",
        "EXSF_TOPIC_PREFIX": w.prefix,
        "EXSF_PARTITIONS": str(PARTITIONS),
        "EXSF_SIDE_PORT": str(side),
        "EXSF_SIDE_HOST": "127.0.0.1",
        "EXSF_WRITER_GRAPH_RETRY_DELAY_S": "0",
        "EXSF_WRITER_BACKOFF_BASE_S": "0.05",
        "EXSF_WRITER_THROTTLE_DEFAULT_S": "0.3",
    }
    return Proc(name, ["run", "writer"], env, tmp_path / f"{name}.log", side_port=side).start()


def _links(w: World) -> Counter[str]:
    out: Counter[str] = Counter()
    for it in w.graph_items(ALICE, "contact"):
        link = link_id_of({"singleValueExtendedProperties": [{"id": p, "value": v} for p, v in it.ext.values()]})
        if link:
            out[link] += 1
    return out


async def test_sigkill_between_api_writes_and_commit(world: World, kafka_bootstrap: str, tmp_path: Path) -> None:
    w = world
    cmds = [command("contact", "exchange", f"K9-{n}", {**CONTACT, "given_name": f"N{n}"}) for n in range(30)]
    # Slow Graph down so the kill lands while the batch's writes are under way.
    await w.graph_admin.faults(delay_ms=150)
    first = _writer(w, kafka_bootstrap, tmp_path, "writer-1")
    second: Proc | None = None
    try:
        await first.wait_ready()
        p = w.bus.producer(transactional_id=f"{w.prefix}test-producer")
        await p.start()
        try:
            async with p.transaction():
                for c in cmds:
                    await p.send(w.topics.commands_exchange, encode(c), key=tenant_key(c.tenant_id))
        finally:
            await p.stop()

        async def some_written() -> bool:
            return sum(_links(w).values()) >= 3

        await eventually(some_written, "the first writer's first creates")
        first.kill9()
        await w.pull()
        assert not w.results, "killed before its transaction committed"
        assert 0 < sum(_links(w).values()) < len(cmds), "killed in the middle of the batch"

        await w.graph_admin.faults(delay_ms=0)
        second = _writer(w, kafka_bootstrap, tmp_path, "writer-2")
        rs = await w.results_for(len(cmds))
        assert {r.status for r in rs} == {"applied"}, [r.error for r in rs if r.error]
        assert {r.command_id for r in rs} == {c.command_id for c in cmds}
        links = _links(w)
        assert all(links[c.link_id] == 1 for c in cmds), links
        by_link = {r.link_id: r.target_id for r in rs}
        assert len(set(by_link.values())) == len(cmds)
    finally:
        first.kill9()
        if second is not None:
            second.terminate(30)
