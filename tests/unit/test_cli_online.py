"""`exsf tenants validate --online` against the Graph and Salesforce emulators, run as real
processes (`exsf emulate`), over HTTP with exsf's own auth clients."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from services.emulators.graph.config import GraphEmulatorConfig
from services.emulators.salesforce.admin_client import SalesforceAdmin
from tests.unit.test_cli_errors import run_main

ALICE, BOB = "alice@contoso.test", "bob@contoso.test"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, "emulator exited"
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"{url} did not answer")


@pytest.fixture(scope="module")
def emulators() -> Iterator[tuple[str, str, dict[str, str]]]:
    gport, sport = _port(), _port()
    g = subprocess.Popen([sys.executable, "-m", "services.cli", "emulate", "graph", "--port", str(gport),
                          "--mailbox", ALICE], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    s = subprocess.Popen([sys.executable, "-m", "services.cli", "emulate", "salesforce", "--port", str(sport),
                          "--user", ALICE, "--user", BOB], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        groot, sroot = f"http://127.0.0.1:{gport}", f"http://localhost:{sport}"
        _wait(f"{groot}/_admin/counters", g)
        _wait(f"{sroot}/_admin/counters", s)

        async def ids() -> dict[str, str]:
            admin = SalesforceAdmin(sroot)
            try:
                return await admin.users()
            finally:
                await admin.close()

        yield groot, sroot, asyncio.run(ids())
    finally:
        for p in (g, s):
            p.terminate()
            p.wait(30)


def _tenant(groot: str, sroot: str, users: list[dict[str, str]], **salesforce: str) -> dict[str, Any]:
    return {
        "tenant_id": "contoso",
        "users": users,
        "graph": {"base_url": groot + "/v1.0", "authority": groot, "azure_tenant_id": GraphEmulatorConfig().tenant_id,
                  "client_id": "exsf-app", "client_secret_ref": "literal:s3cret"},
        "salesforce": {"login_url": sroot, "client_id": "exsf", "username": ALICE, "client_secret_ref": "literal:x",
                       "password_ref": "literal:password", **salesforce},
    }


def test_online_checks_pass_for_a_tenant_that_is_set_up(
    emulators: tuple[str, str, dict[str, str]], tmp_path: Path
) -> None:
    groot, sroot, ids = emulators
    f = tmp_path / "t.json"
    f.write_bytes(orjson.dumps(_tenant(groot, sroot, [{"mailbox": ALICE, "salesforce_user_id": ids[ALICE]}])))
    r = run_main("--log-level", "WARNING", "tenants", "validate", "--online", str(f))
    assert r.rc == 0, r
    rows = [line.split()[:3] for line in r.out.splitlines()[1:]]
    assert rows == [["CHECK", "RESULT", "DETAIL"], ["graph", "token", "ok"], ["mailbox", ALICE, "ok"],
                    ["salesforce", "token", "ok"], ["Contact.exsf_Link_Id__c", "ok", "external"],
                    ["salesforce", "users", "not"], ["CDC", "channels,", "event"]]
    assert "User is not readable here (User not found (404))" in r.out  # the emulator has no User sObject


def test_online_checks_say_what_is_missing(emulators: tuple[str, str, dict[str, str]], tmp_path: Path) -> None:
    groot, sroot, ids = emulators
    doc = _tenant(groot, sroot, [{"mailbox": ALICE, "salesforce_user_id": ids[ALICE]},
                                 {"mailbox": BOB, "salesforce_user_id": "005000000000099AAA"}],
                  external_id_field="Nope__c")
    f = tmp_path / "t.json"
    f.write_bytes(orjson.dumps(doc))
    r = run_main("--log-level", "WARNING", "tenants", "validate", "--online", "--json", str(f))
    assert r.rc == 1, r  # the file is valid; the setup is not
    report = orjson.loads(r.out)
    assert report["valid"] is False and report["problems"] == []
    results = {c["check"]: (c["result"], c["detail"]) for c in report["online_checks"]}
    assert results[f"mailbox {ALICE}"] == ("ok", "reachable")
    assert results[f"mailbox {BOB}"][0] == "failed"  # not a mailbox of the Graph tenant
    assert results["Contact.Nope__c"] == ("failed", "the field does not exist on Contact")
    assert results["CDC channels, event series"] == ("not checked", "not done yet")

    wrong = _tenant(groot, sroot, [{"mailbox": ALICE, "salesforce_user_id": ids[ALICE]}])
    wrong["graph"]["client_secret_ref"] = "env:EXSF_TEST_UNSET_SECRET"
    f.write_bytes(orjson.dumps(wrong))
    r = run_main("--log-level", "WARNING", "tenants", "validate", "--online", "--json", str(f))
    checks = orjson.loads(r.out)["online_checks"]
    assert r.rc == 1 and checks[0]["check"] == "graph token" and checks[0]["result"] == "failed"
    assert "EXSF_TEST_UNSET_SECRET" in checks[0]["detail"] and "is not set" in checks[0]["detail"]
