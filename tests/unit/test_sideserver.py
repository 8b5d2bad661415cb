from __future__ import annotations

import aiohttp
from prometheus_client import CollectorRegistry, Counter

from services.core.sideserver import Health, SideServer


async def test_metrics_health_and_readiness() -> None:
    reg = CollectorRegistry()
    c = Counter("exsf_test_things_total", "things", registry=reg)
    c.inc(3)
    health = Health()
    server = SideServer(health, host="127.0.0.1", port=0, registry=reg)
    port = await server.start()
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as s:
            async with s.get(f"{base}/metrics") as r:
                assert r.status == 200 and "exsf_test_things_total 3.0" in await r.text()
            async with s.get(f"{base}/healthz") as r:
                assert r.status == 200
            async with s.get(f"{base}/readyz") as r:
                assert r.status == 503 and (await r.json())["detail"] == "starting"
            health.set_ready(True)
            bus_ok = False
            health.add_check("bus", lambda: bus_ok)
            async with s.get(f"{base}/readyz") as r:
                assert r.status == 503 and "bus" in (await r.json())["detail"]
            bus_ok = True
            async with s.get(f"{base}/readyz") as r:
                assert r.status == 200
    finally:
        await server.stop()


async def test_readyz_names_partitions_still_restoring() -> None:
    health = Health()
    health.set_ready(True)
    server = SideServer(health, host="127.0.0.1", port=0, registry=CollectorRegistry())
    port = await server.start()
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as s:
            health.mark_pending("reconciler/partition-3")
            health.mark_pending("reconciler/partition-1")
            async with s.get(f"{base}/readyz") as r:
                body = await r.json()
                assert r.status == 503
                assert body["pending"] == ["reconciler/partition-1", "reconciler/partition-3"]
            health.mark_done("reconciler/partition-1")
            async with s.get(f"{base}/readyz") as r:
                assert r.status == 503 and (await r.json())["pending"] == ["reconciler/partition-3"]
            health.mark_done("reconciler/partition-3")
            async with s.get(f"{base}/readyz") as r:
                assert r.status == 200 and "pending" not in await r.json()
    finally:
        await server.stop()
