"""Shared fixtures: the bus backends and the Kafka broker the test command provides.

Kafka tests are never skipped silently: without KAFKA_BOOTSTRAP_SERVERS (set by
tools/test.sh, which starts a broker) and without a Docker engine for testcontainers, the
`kafka_bootstrap` fixture fails with the reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from services.core.bus.base import Bus
from services.core.bus.embedded import EmbeddedBus
from services.core.bus.kafka import KafkaBus, KafkaSettings


def _docker_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    env = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if env:
        yield env
        return
    if _docker_answers():
        from testcontainers.community.kafka import KafkaContainer

        # Confluent's image is the one testcontainers' KRaft wiring is written for.
        with KafkaContainer("confluentinc/cp-kafka:7.6.0").with_kraft() as kafka:
            yield kafka.get_bootstrap_server()
        return
    pytest.fail(
        "No Kafka broker: set KAFKA_BOOTSTRAP_SERVERS, run a Docker engine for testcontainers, "
        "or use the README's test command (tools/test.sh), which starts a local KRaft broker.",
        pytrace=False,
    )


@pytest.fixture
def topic_prefix() -> str:
    # Every test gets its own topic namespace, so tests never see each other's records
    # on a shared broker.
    return f"t{uuid.uuid4().hex[:10]}."


@pytest.fixture(params=["embedded", "kafka"])
async def bus(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Bus]:
    b: Bus
    if request.param == "embedded":
        b = EmbeddedBus(tmp_path_factory.mktemp("bus") / "bus.sqlite", poll_interval_s=0.02)
    else:
        b = KafkaBus(KafkaSettings(bootstrap_servers=request.getfixturevalue("kafka_bootstrap")))
    await b.start()
    try:
        yield b
    finally:
        await b.stop()


@pytest.fixture
async def kafka_bus(kafka_bootstrap: str) -> AsyncIterator[KafkaBus]:
    b = KafkaBus(KafkaSettings(bootstrap_servers=kafka_bootstrap))
    await b.start()
    try:
        yield b
    finally:
        await b.stop()
