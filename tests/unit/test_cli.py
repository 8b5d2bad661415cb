from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def exsf(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
        cwd=cwd,
    )


def test_help_describes_the_commands() -> None:
    r = exsf("--help")
    assert r.returncode == 0 and "topics" in r.stdout and "KAFKA_BOOTSTRAP_SERVERS" in r.stdout
    r = exsf("topics", "create", "--help")
    assert r.returncode == 0 and "idempotent" not in r.stderr and "--partitions" in r.stdout
    assert "safe" in r.stdout


def test_topics_create_is_idempotent_on_the_embedded_bus(tmp_path: Path) -> None:
    env = {"EXSF_BUS": "embedded", "EXSF_EMBEDDED_PATH": str(tmp_path / "bus.sqlite"), "KAFKA_BOOTSTRAP_SERVERS": ""}
    first = exsf("topics", "create", "--partitions", "3", env=env)
    assert first.returncode == 0, first.stderr
    assert first.stdout.count(" created ") == 12 and "exsf.state" in first.stdout
    assert "exsf.state                       created  partitions=3 cleanup=compact" in first.stdout
    second = exsf("topics", "create", "--partitions", "3", env=env)
    assert second.returncode == 0 and second.stdout.count(" exists ") == 12
    mismatch = exsf("topics", "create", "--partitions", "5", env=env)
    assert mismatch.returncode == 1 and "expected 5" in mismatch.stdout


def test_bad_configuration_is_one_clear_line(tmp_path: Path) -> None:
    r = exsf("topics", "create", env={"EXSF_BUS": "kafka", "KAFKA_BOOTSTRAP_SERVERS": ""})
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "exsf: EXSF_BUS=kafka needs KAFKA_BOOTSTRAP_SERVERS (host:port[,host:port])"
    ]
    bad = tmp_path / "tenant.json"
    bad.write_text(
        '{"tenant_id": "t", "users": [{"mailbox": "a@t.test", "salesforce_user_id": "005000000000001"}], '
        '"conflict_policy": "dice"}'
    )
    r = exsf("tenants", "put", str(bad), env={"EXSF_BUS": "embedded", "EXSF_EMBEDDED_PATH": str(tmp_path / "b.sqlite")})
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr == (
        f'exsf: {bad}: $.conflict_policy: "dice" is not one of latest-wins, salesforce-wins, exchange-wins\n'
    )


def test_state_rebuild_restores_the_local_store_from_the_changelog(tmp_path: Path) -> None:
    import asyncio

    from services.core.bus.embedded import EmbeddedBus
    from services.core.state_store import StateStore
    from services.core.topics import STATE, topic_specs

    bus_path = tmp_path / "bus.sqlite"

    async def seed() -> None:
        bus = EmbeddedBus(bus_path)
        await bus.start()
        await bus.create_topics(topic_specs(2))
        p = bus.producer()
        await p.start()
        await p.send_and_wait(STATE, b'{"link": 1}', key=b"t/contact/L1", partition=1)
        await p.send_and_wait(STATE, b'{"link": 2}', key=b"t/contact/L2", partition=1)
        await p.send_and_wait(STATE, None, key=b"t/contact/L2", partition=1)  # tombstone
        await p.stop()
        await bus.stop()

    asyncio.run(seed())
    env = {"EXSF_BUS": "embedded", "EXSF_EMBEDDED_PATH": str(bus_path), "KAFKA_BOOTSTRAP_SERVERS": ""}
    r = exsf("state", "rebuild", "--state-dir", str(tmp_path / "st"), env=env)
    assert r.returncode == 0, r.stderr
    assert "[2/2] partition 1: 1 links restored" in r.stdout
    store = StateStore(tmp_path / "st" / "reconciler.sqlite")
    assert dict(store.items(1)) == {b"t/contact/L1": b'{"link": 1}'}
    bad = exsf("state", "rebuild", "--partitions", "7", "--state-dir", str(tmp_path / "st"), env=env)
    assert bad.returncode == 2 and "do not exist" in bad.stdout
