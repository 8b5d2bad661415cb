"""`exsf tenants put | list | show | remove | validate` on both buses (embedded SQLite and a
real Kafka broker), in both output forms (table and --json)."""

from __future__ import annotations

import contextlib
import io
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import orjson
import pytest

from tests.unit.test_cli_errors import GOOD, Run, assert_one_clear_line, run_main


class _Terminal(io.StringIO):
    """Typed answers on a stdin that says it is a terminal (the confirmation prompt)."""

    def isatty(self) -> bool:
        return True


@pytest.fixture(params=["embedded", "kafka"])
def bus_env(request: pytest.FixtureRequest, tmp_path: Path, topic_prefix: str) -> Iterator[str]:
    if request.param == "embedded":
        env = {"EXSF_BUS": "embedded", "EXSF_EMBEDDED_PATH": str(tmp_path / "bus.sqlite"),
               "KAFKA_BOOTSTRAP_SERVERS": "", "EXSF_TOPIC_PREFIX": ""}
    else:
        env = {"EXSF_BUS": "kafka", "KAFKA_BOOTSTRAP_SERVERS": request.getfixturevalue("kafka_bootstrap"),
               "EXSF_TOPIC_PREFIX": topic_prefix}
    with mock.patch.dict(os.environ, env):
        assert run_main("--log-level", "WARNING", "topics", "create", "--partitions", "2").rc == 0
        yield env["EXSF_TOPIC_PREFIX"] + "exsf.tenants"


def cli(*argv: str, stdin: str | None = None) -> Run:
    if stdin is None:
        return run_main("--log-level", "WARNING", *argv)
    out, err = io.StringIO(), io.StringIO()
    from services.cli import main

    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), mock.patch.object(
        sys, "stdin", _Terminal(stdin)
    ):
        rc = main(["--log-level", "WARNING", *argv])
    return Run(rc, out.getvalue(), err.getvalue())


def _write(tmp_path: Path, name: str, doc: dict[str, object]) -> str:
    f = tmp_path / name
    f.write_bytes(orjson.dumps(doc))
    return str(f)


def test_the_life_of_a_tenant(bus_env: str, tmp_path: Path) -> None:
    topic = bus_env
    contoso = _write(tmp_path, "contoso.json", GOOD)
    fabrikam = _write(tmp_path, "fabrikam.json", {
        **GOOD, "tenant_id": "fabrikam", "conflict_policy": "exchange-wins", "entities": ["contact"],
        "users": [{"mailbox": "carol@fabrikam.test", "salesforce_user_id": "005000000000003AAA"},
                  {"mailbox": "dan@fabrikam.test", "salesforce_user_id": "005000000000004AAA"}],
    })
    empty = cli("tenants", "list")
    assert empty.rc == 0 and empty.out == f"no tenants on {topic}\n"
    assert cli("tenants", "list", "--json").out.strip() == "[]"

    v = cli("tenants", "validate", contoso)
    assert v.rc == 0 and v.err == ""
    assert v.out.splitlines() == [
        f"{contoso}: tenant contoso, 1 users: every field is valid",
        "note: online checks (Graph and Salesforce credentials and permissions, the external id field, "
        "mailboxes and users reachable) were not done (--online does them)",
    ]
    assert orjson.loads(cli("tenants", "validate", "--json", contoso).out) == {
        "file": contoso, "tenant_id": "contoso", "valid": True, "problems": [], "online_checks": "not done"}
    # validate enrols nothing
    assert cli("tenants", "list", "--json").out.strip() == "[]"

    assert cli("tenants", "put", contoso).out == "tenant contoso: 1 users enrolled\n"
    assert orjson.loads(cli("tenants", "put", "--json", fabrikam).out) == {
        "tenant_id": "fabrikam", "users": 2, "put": True}

    table = cli("tenants", "list")
    assert table.rc == 0
    assert table.out.splitlines() == [
        "TENANT    USERS  POLICY         ENTITIES",
        "contoso   1      latest-wins    contact,event,task,email",
        "fabrikam  2      exchange-wins  contact",
    ]
    listed = orjson.loads(cli("tenants", "list", "--json").out)
    assert [t["tenant_id"] for t in listed] == ["contoso", "fabrikam"]
    assert listed[1]["users"] == ["carol@fabrikam.test", "dan@fabrikam.test"]

    shown = cli("tenants", "show", "fabrikam")
    assert shown.rc == 0
    lines = shown.out.splitlines()
    assert lines[0].split() == ["tenant", "fabrikam"]
    assert "conflict policy     exchange-wins" in lines
    assert "salesforce secrets  client env:SF_SECRET, password file:/run/secrets/sf" in lines
    assert lines[-3:] == [
        "  MAILBOX              SALESFORCE USER",
        "  carol@fabrikam.test  005000000000003AAA",
        "  dan@fabrikam.test    005000000000004AAA",
    ]
    as_json = orjson.loads(cli("tenants", "show", "--json", "contoso").out)
    assert as_json["graph"]["client_secret_ref"] == "env:GRAPH_SECRET"
    assert as_json["users"] == GOOD["users"] and as_json["poll_seconds"] == 60

    assert_one_clear_line(cli("tenants", "show", "ghost"), f"exsf: no tenant 'ghost' on {topic}",
                          "(enrolled: contoso, fabrikam)")
    # Asked on a terminal: anything but yes keeps the tenant.
    kept = cli("tenants", "remove", "fabrikam", stdin="n\n")
    assert kept.rc == 1 and kept.out.endswith("not removed\n") and "Remove tenant fabrikam (2 users)?" in kept.out
    asked = cli("tenants", "remove", "fabrikam", stdin="y\n")
    assert asked.rc == 0 and asked.out.endswith(f"tenant fabrikam removed (tombstone on {topic})\n")
    assert orjson.loads(cli("tenants", "remove", "--json", "--yes", "contoso").out) == {
        "tenant_id": "contoso", "removed": True}
    assert cli("tenants", "list").out == f"no tenants on {topic}\n"
    assert_one_clear_line(cli("tenants", "remove", "contoso", "--yes"), "no tenant 'contoso'")

    # Put again after a remove: the tombstone does not shadow the new config.
    assert cli("tenants", "put", contoso).rc == 0
    assert [t["tenant_id"] for t in orjson.loads(cli("tenants", "list", "--json").out)] == ["contoso"]


def test_show_never_prints_a_literal_secret(tmp_path: Path) -> None:
    local = {**GOOD, "salesforce": {"login_url": "http://localhost:9", "password_ref": "literal:pa55word"}}
    with mock.patch.dict(os.environ, {"EXSF_BUS": "embedded", "EXSF_EMBEDDED_PATH": str(tmp_path / "b.sqlite"),
                                      "KAFKA_BOOTSTRAP_SERVERS": "", "EXSF_TOPIC_PREFIX": ""}):
        assert cli("topics", "create", "--partitions", "1").rc == 0
        assert cli("tenants", "put", _write(tmp_path, "t.json", local)).rc == 0
        table, js = cli("tenants", "show", "contoso"), cli("tenants", "show", "--json", "contoso")
    assert "password literal:***" in table.out and "pa55word" not in table.out + js.out
    assert orjson.loads(js.out)["salesforce"]["password_ref"] == "literal:***"
