"""Process runtime shared by every service: logging, bus, side server, graceful shutdown.

`exsf run <service>` builds a `Service` and hands it to `serve`. SIGTERM (Kubernetes) and
SIGINT stop the service, which finishes its current batch and commits before the bus
closes, so a rolling update loses nothing and repeats nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Awaitable, Callable
from typing import Protocol

import structlog

from services.core.bus.base import Bus
from services.core.config import BusConfig, open_bus
from services.core.sideserver import Health, SideServer
from services.core.topics import Topics

log = structlog.get_logger(__name__)


class Service(Protocol):
    async def run(self) -> None: ...

    def stop(self) -> None: ...


ServiceFactory = Callable[[Bus, Topics, Health], Awaitable[Service]]


async def serve(
    name: str, factory: ServiceFactory, *, cfg: BusConfig | None = None, drain_seconds: float = 50.0
) -> int:
    cfg = cfg or BusConfig.from_env()
    health = Health()
    side = SideServer(
        health, host=os.environ.get("EXSF_SIDE_HOST", "0.0.0.0"), port=int(os.environ.get("EXSF_SIDE_PORT", "9000"))
    )
    await side.start()
    bus = open_bus(cfg)
    await bus.start()
    topics = Topics.with_prefix(cfg.topic_prefix)
    service = await factory(bus, topics, health)
    task = asyncio.create_task(service.run(), name=name)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    health.set_ready(True)
    log.info("service.started", service=name, bus=bus.name, side_port=side.port)
    stopper = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    rc = 0
    if task in done:
        # The service ended on its own: that is a failure for a long-running service.
        exc = task.exception()
        log.error("service.exited", service=name, error=repr(exc) if exc else "returned")
        rc = 1
    else:
        log.info("service.stopping", service=name)
        health.set_ready(False, "draining")
        service.stop()
        try:
            await asyncio.wait_for(task, drain_seconds)
        except TimeoutError:
            log.error("service.drain_timeout", service=name, seconds=drain_seconds)
            task.cancel()
            rc = 1
    stopper.cancel()
    await bus.stop()
    await side.stop()
    log.info("service.stopped", service=name, rc=rc)
    return rc
