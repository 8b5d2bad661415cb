"""End-to-end benchmark on the four-process pipeline (issue 11, deliverable 8).

    KAFKA_BOOTSTRAP_SERVERS=... python -m bench.e2e [--contacts 2000] [--events 500] \
        [--samples 20] [--poll-seconds 60] [--out bench/results/e2e.json]

Every exsf service runs as its own OS process (tests/support/pipeline.py, one pod each), with
both emulators as processes too and Graph's notifications delivered through one front, as a
k8s Service would. Measured, in this order:

1. Initial sync: the contacts and events exist before exsf starts, half in the two
   mailboxes, half in Salesforce; seconds from the pipeline's start until both sides hold
   every one, and the API calls each side's emulator counted meanwhile, per item synced.
2. Edit-to-applied latency, p50/p90/p99, for contacts, in each direction:
   Outlook -> Salesforce through change notifications, then with every notification dropped
   (the emulator's fault switch), so only the stream's poll finds the edit; Salesforce ->
   Outlook through Change Data Capture (ingest-salesforce has no polling mode: CDC is its
   only live path). An edit is applied when the other side's record holds the new value,
   polled every 50 ms.
3. Graph calls per mailbox per idle hour: the Graph emulator's request counter over one
   idle minute, scaled by 60.

Needs a Kafka broker (KAFKA_BOOTSTRAP_SERVERS). Prints one JSON object, with the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import random
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from services.emulators.graph.admin_client import GraphAdminClient
from services.emulators.graph.config import GraphEmulatorConfig
from services.emulators.salesforce.admin_client import SalesforceAdmin
from tests.support.front import RoundRobinFront
from tests.support.graph_api import GraphApi as Graph
from tests.support.pipeline import Pipeline
from tests.support.processes import Proc, free_port, wait_http

MAILBOXES = ["alice@contoso.test", "bob@contoso.test"]
FOLDER = "Salesforce Contacts"


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (no interpolation: with 20 samples p99 is the maximum)."""
    s = sorted(values)
    return round(s[max(0, min(len(s) - 1, math.ceil(q / 100 * len(s)) - 1))], 2)


def summary(values: list[float]) -> dict[str, Any]:
    return {"samples": len(values), "p50_s": pct(values, 50), "p90_s": pct(values, 90), "p99_s": pct(values, 99),
            "mean_s": round(statistics.fmean(values), 2)}


async def graph_total(admin: GraphAdminClient) -> dict[str, int]:
    snap = await admin.counters()
    return {mb: int(c.get("total", 0)) for mb, c in snap.items()}


async def sf_total(admin: SalesforceAdmin) -> int:
    return int((await admin.counters())["rest_calls"])


async def main(contacts: int, events: int, samples: int, poll_seconds: int) -> dict[str, Any]:
    boot = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if not boot:
        raise SystemExit("bench.e2e needs a Kafka broker: set KAFKA_BOOTSTRAP_SERVERS")
    tmp = Path(tempfile.mkdtemp(prefix="bench-e2e-"))
    env = {"KAFKA_BOOTSTRAP_SERVERS": boot, "EXSF_BUS": "kafka", "EXSF_TOPIC_PREFIX": f"b{uuid.uuid4().hex[:8]}.",
           "EXSF_PARTITIONS": "4", "EXSF_LOG_LEVEL": "WARNING"}
    gport, sport = free_port(), free_port()
    mb_args = [a for mb in MAILBOXES for a in ("--mailbox", mb)]
    user_args = [a for mb in MAILBOXES for a in ("--user", mb)]
    emus = [Proc("graph", ["emulate", "graph", "--port", str(gport), *mb_args], env, tmp / "graph.log").start(),
            Proc("salesforce", ["emulate", "salesforce", "--port", str(sport), *user_args], env,
                 tmp / "sf.log").start()]
    groot, sroot = f"http://127.0.0.1:{gport}", f"http://localhost:{sport}"
    gadmin, sadmin, graph = GraphAdminClient(groot), SalesforceAdmin(sroot), Graph(groot)
    front = RoundRobinFront([])
    pipeline: Pipeline | None = None
    try:
        await wait_http(f"{groot}/_admin/counters", 60, emus[0])
        await wait_http(f"{sroot}/_admin/counters", 60, emus[1])
        sf_ids = await sadmin.users()
        await front.start()
        for args in (["topics", "create"],):
            p = Proc("topics", args, env, tmp / "topics.log").start()
            assert p.popen is not None and p.popen.wait(120) == 0, p.log_tail()
        tenant = {
            "tenant_id": "contoso",
            "users": [{"mailbox": mb, "salesforce_user_id": sf_ids[mb]} for mb in MAILBOXES],
            "graph": {"base_url": groot + "/v1.0", "authority": groot,
                      "azure_tenant_id": GraphEmulatorConfig().tenant_id, "client_id": "x",
                      "client_secret_ref": "literal:x"},
            "salesforce": {"login_url": sroot, "client_id": "x", "username": MAILBOXES[0],
                           "client_secret_ref": "literal:x", "password_ref": "literal:password"},
            "entities": ["contact", "event"], "poll_seconds": poll_seconds,
        }
        (tmp / "tenant.json").write_text(json.dumps(tenant))
        p = Proc("put", ["tenants", "put", str(tmp / "tenant.json")], env, tmp / "put.log").start()
        assert p.popen is not None and p.popen.wait(120) == 0, p.log_tail()

        # --- data that exists before exsf starts: half in Outlook, half in Salesforce --------
        day = datetime.now(UTC).replace(hour=9, minute=0, second=0, microsecond=0) + timedelta(days=1)
        outlook_contacts, sf_contacts = contacts // 2, contacts - contacts // 2
        outlook_events, sf_events = events // 2, events - events // 2
        sem = asyncio.Semaphore(16)
        for mb in MAILBOXES:
            # The folder exsf syncs, made by the user beforehand (exsf finds it by name).
            await graph.call("POST", f"/users/{mb}/contactFolders", {"displayName": FOLDER})

        async def outlook_contact(i: int) -> None:
            async with sem:
                mb = MAILBOXES[i % 2]
                await gadmin.create_item(mb, "contact", {
                    "givenName": f"O{i}", "surname": "Bench", "jobTitle": "v0",
                    "emailAddresses": [{"address": f"o{i}@bench.test", "name": f"O{i} Bench"}]}, container=FOLDER)

        async def outlook_event(i: int) -> None:
            async with sem:
                start = day + timedelta(days=i % 60, hours=i % 8)
                await gadmin.create_item(MAILBOXES[i % 2], "event", {
                    "subject": f"Bench event O{i}", "categories": ["Salesforce"],
                    "start": {"dateTime": start.strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"},
                    "end": {"dateTime": (start + timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M:%S"),
                            "timeZone": "UTC"}})

        await asyncio.gather(*(outlook_contact(i) for i in range(outlook_contacts)),
                             *(outlook_event(i) for i in range(outlook_events)))
        for k, mb in enumerate(MAILBOXES):
            await sadmin.seed("Contact", [
                {"FirstName": f"S{i}", "LastName": "Bench", "Email": f"s{i}@bench.test", "Title": "v0"}
                for i in range(k, sf_contacts, 2)], as_user=mb)
            await sadmin.seed("Event", [
                {"Subject": f"Bench event S{i}",
                 "StartDateTime": (day + timedelta(days=i % 60, hours=i % 8)).strftime("%Y-%m-%dT%H:%M:%S.000+0000"),
                 "EndDateTime": (day + timedelta(days=i % 60, hours=i % 8, minutes=30)
                                 ).strftime("%Y-%m-%dT%H:%M:%S.000+0000")}
                for i in range(k, sf_events, 2)], as_user=mb)

        # --- 1. initial sync ---------------------------------------------------------------
        g0, s0, mine0 = await graph_total(gadmin), await sf_total(sadmin), graph.requests
        t0 = time.monotonic()
        pipeline = Pipeline({**env, "EXSF_WEBHOOK_PUBLIC_URL": front.url}, tmp / "run",
                            {"ingest-exchange": 1, "ingest-salesforce": 1, "reconciler": 1, "writer": 1})
        pipeline.start()
        front.ports = pipeline.webhook_ports()

        async def counts() -> dict[str, int]:
            ol_c = ol_e = 0
            for mb in MAILBOXES:
                folder = next(c["id"] for c in await gadmin.containers(mb) if c.get("displayName") == FOLDER)
                ol_c += len(await graph.all(f"/users/{mb}/contactFolders/{folder}/contacts?$select=id"))
                ol_e += len(await graph.all(f"/users/{mb}/events?$select=id"))
            sf_c = len([r for r in await sadmin.records("Contact") if not r.get("IsDeleted")])
            sf_e = len([r for r in await sadmin.records("Event") if not r.get("IsDeleted")])
            return {"outlook_contacts": ol_c, "outlook_events": ol_e, "salesforce_contacts": sf_c,
                    "salesforce_events": sf_e}

        want = {"outlook_contacts": contacts, "outlook_events": events, "salesforce_contacts": contacts,
                "salesforce_events": events}
        seen: dict[str, int] = {}
        while True:
            # Salesforce first (its admin reads are not API calls); Outlook, read through
            # Graph, only once Salesforce is complete, so the reads add few calls.
            sf_c = len([r for r in await sadmin.records("Contact") if not r.get("IsDeleted")])
            sf_e = len([r for r in await sadmin.records("Event") if not r.get("IsDeleted")])
            if (sf_c, sf_e) == (contacts, events):
                seen = await counts()
                if seen == want:
                    break
            else:
                seen = {"salesforce_contacts": sf_c, "salesforce_events": sf_e}
            if time.monotonic() - t0 > 1800:
                raise SystemExit(f"initial sync incomplete after 30 min: {seen} != {want}")
            await asyncio.sleep(1.0)
        sync_s = time.monotonic() - t0
        g1, s1 = await graph_total(gadmin), await sf_total(sadmin)
        # The emulator also counted this benchmark's own reads: take them out exactly.
        graph_calls = sum(g1.values()) - sum(g0.values()) - (graph.requests - mine0)
        sf_calls = s1 - s0
        items = contacts + events
        initial = {
            "contacts": contacts, "events": events,
            "created_in_outlook": {"contacts": outlook_contacts, "events": outlook_events},
            "created_in_salesforce": {"contacts": sf_contacts, "events": sf_events},
            "seconds": round(sync_s, 1),
            "items_per_s": round(items / sync_s, 1),
            "graph_calls": graph_calls,
            "graph_calls_per_item": round(graph_calls / items, 3),
            "salesforce_calls": sf_calls,
            "salesforce_calls_per_item": round(sf_calls / items, 3),
            "note": "seconds from starting the 4 processes (including their start-up) to both sides complete",
        }
        await pipeline.wait_ready(120)

        # --- 2. latency --------------------------------------------------------------------
        sf_by_email = {str(r.get("Email")).lower(): r for r in await sadmin.records("Contact")
                       if not r.get("IsDeleted")}
        ol_by_email: dict[str, tuple[str, str]] = {}
        for mb in MAILBOXES:
            folder = next(c["id"] for c in await gadmin.containers(mb) if c.get("displayName") == FOLDER)
            for c in await graph.all(f"/users/{mb}/contactFolders/{folder}/contacts?$select=id,emailAddresses"):
                ol_by_email[str(c["emailAddresses"][0]["address"]).lower()] = (mb, str(c["id"]))
        rng = random.Random(8)
        o_emails = [f"o{i}@bench.test" for i in range(outlook_contacts)]
        s_emails = [f"s{i}@bench.test" for i in range(sf_contacts)]

        async def outlook_to_sf(email: str, delay: float = 0.0) -> float:
            await asyncio.sleep(delay)
            mb, oid = ol_by_email[email]
            sf_id = str(sf_by_email[email]["Id"])
            marker = f"v{uuid.uuid4().hex[:8]}"
            t = time.monotonic()
            await gadmin.update_item(mb, oid, {"jobTitle": marker})
            while (await sadmin.record("Contact", sf_id)).get("Title") != marker:
                if time.monotonic() - t > 600:
                    raise SystemExit(f"edit of {email} never reached Salesforce")
                await asyncio.sleep(0.05)
            return time.monotonic() - t

        async def sf_to_outlook(email: str) -> float:
            mb, oid = ol_by_email[email]
            sf_id = str(sf_by_email[email]["Id"])
            marker = f"v{uuid.uuid4().hex[:8]}"
            t = time.monotonic()
            await sadmin.update("Contact", sf_id, {"Title": marker})
            while (await gadmin.get_item(mb, oid)).get("jobTitle") != marker:
                if time.monotonic() - t > 600:
                    raise SystemExit(f"edit of {email} never reached Outlook")
                await asyncio.sleep(0.05)
            return time.monotonic() - t

        picks = rng.sample(o_emails, samples * 2)
        notified = [await outlook_to_sf(e) for e in picks[:samples]]
        cdc = [await sf_to_outlook(e) for e in rng.sample(s_emails, samples)]
        # Only the poll can find these: every notification is dropped; the edits are spread
        # over one poll interval, as real edits land anywhere in it.
        await gadmin.faults(drop_notifications=-1)
        polled = list(await asyncio.gather(*(outlook_to_sf(e, rng.uniform(0, poll_seconds))
                                              for e in picks[samples:])))
        await gadmin.faults(drop_notifications=0)
        latency = {
            "outlook_to_salesforce": {"notifications": summary(notified), "polling": summary(polled)},
            "salesforce_to_outlook": {"change_data_capture": summary(cdc), "polling": None},
            "poll_seconds": poll_seconds,
            "note": "contacts; an edit of one field, applied when the other side holds the new value "
                    "(polled every 50 ms). Salesforce has no polling path: CDC is the only one.",
        }

        # --- 3. idle Graph calls -----------------------------------------------------------
        await asyncio.sleep(5)  # let the last rounds settle
        i0, ti = await graph_total(gadmin), time.monotonic()
        await asyncio.sleep(60)
        i1, idle_s = await graph_total(gadmin), time.monotonic() - ti
        per_mailbox = {mb: round((i1.get(mb, 0) - i0.get(mb, 0)) * 3600 / idle_s) for mb in MAILBOXES}
        idle = {
            "measured_s": round(idle_s, 1),
            "graph_calls_per_mailbox_per_hour": per_mailbox,
            "streams_per_mailbox": 3,
            "poll_seconds": poll_seconds,
            "note": "one idle minute scaled to an hour: one delta round per stream per poll interval "
                    "(subscription renewals are daily and do not show in a minute)",
        }
        return {
            "benchmark": "e2e",
            "bus": "kafka",
            "pipeline": {"processes": {"ingest-exchange": 1, "ingest-salesforce": 1, "reconciler": 1, "writer": 1},
                         "partitions": 4, "mailboxes": len(MAILBOXES), "webhook_front": True},
            "initial_sync": initial,
            "latency": latency,
            "idle": idle,
            "machine": {
                "nproc": os.cpu_count(),
                "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
                "python": platform.python_version(),
                "note": "2 cores shared with other work while it ran; emulators and broker on the same machine",
            },
        }
    finally:
        if pipeline is not None:
            pipeline.stop()
        for e in emus:
            e.kill9()
        await graph.close()
        await gadmin.close()
        await sadmin.close()
        await front.stop()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--contacts", type=int, default=2000)
    ap.add_argument("--events", type=int, default=500)
    ap.add_argument("--samples", type=int, default=20)
    ap.add_argument("--poll-seconds", type=int, default=60)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    result = asyncio.run(main(a.contacts, a.events, a.samples, a.poll_seconds))
    text = json.dumps(result, indent=2)
    print(text)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(text + "\n")
