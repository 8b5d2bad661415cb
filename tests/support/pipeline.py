"""The whole pipeline as separate OS processes, several pods per service, for scale-out tests.

Each pod gets its own side port, state dir, log file (and, for ingest-exchange, webhook port),
so any pod can be SIGKILLed, SIGTERMed or restarted alone. The broker can be restarted on the
same port and data dir when it was started from a run dir of tools/kafka-broker.sh.

Used by tests/e2e/test_scaled_out.py and tests/integration/test_two_deployments.py.
"""

from __future__ import annotations

import asyncio
import random
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.processes import Proc, free_port

SERVICES = ("ingest-exchange", "ingest-salesforce", "reconciler", "writer")
BROKER_SCRIPT = Path(__file__).resolve().parents[2] / "tools" / "kafka-broker.sh"


@dataclass
class Pod:
    service: str
    index: int
    base_env: dict[str, str]
    run_dir: Path
    proc: Proc | None = None
    generation: int = 0
    webhook_port: int | None = None

    @property
    def name(self) -> str:
        return f"{self.service}-{self.index}"

    def start(self) -> Pod:
        """Start (or restart) this pod: a new side port each time, the same state dir, so a
        restarted reconciler finds its local store as a restarted pod with a volume would."""
        self.generation += 1
        side = free_port()
        env = {**self.base_env, "EXSF_SIDE_PORT": str(side),
               "EXSF_STATE_DIR": str(self.run_dir / "state" / self.name)}
        if self.service == "ingest-exchange":
            self.webhook_port = free_port()
            env["EXSF_WEBHOOK_PORT"] = str(self.webhook_port)
        log = self.run_dir / "logs" / f"{self.name}.{self.generation}.log"
        self.proc = Proc(self.name, ["run", self.service], env, log, side_port=side).start()
        return self

    def kill9(self) -> None:
        if self.proc is not None:
            self.proc.kill9()

    def terminate(self, timeout: float = 60) -> int | None:
        return self.proc.terminate(timeout) if self.proc is not None else None

    async def wait_ready(self, timeout: float = 90) -> None:
        assert self.proc is not None
        await self.proc.wait_ready(timeout)


@dataclass
class Pipeline:
    """Every service with `replicas[service]` pods against one bus environment."""

    env: dict[str, str]
    run_dir: Path
    replicas: dict[str, int]
    pods: list[Pod] = field(default_factory=list)

    def start(self) -> None:
        for service in SERVICES:
            for i in range(self.replicas.get(service, 1)):
                self.pods.append(Pod(service, i, self.env, self.run_dir).start())

    async def wait_ready(self, timeout: float = 120) -> None:
        await asyncio.gather(*(p.wait_ready(timeout) for p in self.pods))

    def of(self, service: str) -> list[Pod]:
        return [p for p in self.pods if p.service == service]

    async def kill_random(self, rng: random.Random) -> Pod:
        """SIGKILL one pod and start its replacement at once (what a crashed pod's restart is)."""
        pod = rng.choice(self.pods)
        await asyncio.to_thread(pod.kill9)
        pod.start()
        return pod

    async def rolling_restart(self, service: str, timeout: float = 120) -> None:
        """SIGTERM one pod at a time; the next only once the replacement answers /readyz."""
        for pod in self.of(service):
            await asyncio.to_thread(pod.terminate)
            pod.start()
            await pod.wait_ready(timeout)

    def stop(self) -> None:
        for p in reversed(self.pods):
            p.kill9()

    def webhook_ports(self) -> list[int]:
        return [p.webhook_port for p in self.of("ingest-exchange") if p.webhook_port is not None]


def broker_restart(broker_run_dir: Path) -> str:
    """Stop and start the broker of a tools/kafka-broker.sh run dir, same port and data."""
    out = subprocess.run([str(BROKER_SCRIPT), "restart", str(broker_run_dir)], check=True,
                         capture_output=True, text=True, timeout=180)
    return out.stdout.strip()
