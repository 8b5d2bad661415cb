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
    assert first.stdout.count(" created ") == 10 and "exsf.state" in first.stdout
    assert "exsf.state                       created  partitions=3 cleanup=compact" in first.stdout
    second = exsf("topics", "create", "--partitions", "3", env=env)
    assert second.returncode == 0 and second.stdout.count(" exists ") == 10
    mismatch = exsf("topics", "create", "--partitions", "5", env=env)
    assert mismatch.returncode == 1 and "expected 5" in mismatch.stdout


def test_bad_configuration_is_one_clear_line(tmp_path: Path) -> None:
    r = exsf("topics", "create", env={"EXSF_BUS": "kafka", "KAFKA_BOOTSTRAP_SERVERS": ""})
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "exsf: EXSF_BUS=kafka needs KAFKA_BOOTSTRAP_SERVERS (host:port[,host:port])"
    ]
    bad = tmp_path / "tenant.json"
    bad.write_text('{"tenant_id": "t", "conflict_policy": "dice"}')
    r = exsf("tenants", "put", str(bad), env={"EXSF_BUS": "embedded", "EXSF_EMBEDDED_PATH": str(tmp_path / "b.sqlite")})
    assert r.returncode == 2 and "conflict_policy" in r.stderr and "Traceback" not in r.stderr
