from __future__ import annotations

import logging

import pytest
import structlog

from services.core.logging import configure_logging, redact_text
from services.core.secrets import Secret, SecretError, resolve_secret


@pytest.fixture(autouse=True)
def _reset_structlog():  # type: ignore[no-untyped-def]
    yield
    structlog.reset_defaults()
    logging.getLogger().handlers = []


def test_secrets_in_a_log_event_come_out_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", json=True, service="test")
    log = structlog.get_logger("t")
    log.info(
        "token.fetched",
        access_token="eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.sig-part",
        client_secret="s3cr3t-value",
        headers={"Authorization": "Bearer abcdefghijklmnop", "Accept": "application/json"},
        detail="POST /token body grant_type=password&username=bob&password=hunter2hunter2",
        sf="session 00D5e000000abcD!AQ4AQJ5example.session.token.value.1234",
        token_type="Bearer",
    )
    out = capsys.readouterr().err
    for leaked in ("s3cr3t-value", "abcdefghijklmnop", "hunter2hunter2", "eyJhbGciOiJIUzI1NiJ9", "AQ4AQJ5example"):
        assert leaked not in out
    assert '"token_type": "Bearer"' in out  # not a secret; kept
    assert "application/json" in out and "username=bob" in out


def test_exception_text_is_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", json=True)
    log = structlog.get_logger("t")
    try:
        raise RuntimeError("upstream said: Authorization: Bearer zzzzzzzzzzzzzzzzzz")
    except RuntimeError:
        log.exception("call.failed")
    out = capsys.readouterr().err
    assert "zzzzzzzzzzzzzzzzzz" not in out and "call.failed" in out


def test_library_logs_go_through_redaction(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", json=True)
    logging.getLogger("aiohttp.client").warning("retrying with access_token=verysecretvalue123")
    out = capsys.readouterr().err
    assert "verysecretvalue123" not in out and "retrying" in out


def test_redact_text_keeps_harmless_text() -> None:
    assert redact_text("nothing to see") == "nothing to see"
    assert "Bearer ***" in redact_text("Authorization: Bearer abc.def.ghijklmnop")


def test_secret_repr_never_shows_value(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("EXSF_TEST_SECRET", "the-value")
    s = resolve_secret("env:EXSF_TEST_SECRET")
    assert s.reveal() == "the-value"
    assert "the-value" not in repr(s) and "the-value" not in str(s) and "the-value" not in f"{[s]}"
    f = tmp_path / "sec"
    f.write_text("file-value\n")
    assert resolve_secret(f"file:{f}").reveal() == "file-value"
    with pytest.raises(SecretError, match="not set"):
        resolve_secret("env:EXSF_DOES_NOT_EXIST")
    with pytest.raises(SecretError, match="env:NAME or file"):
        resolve_secret("hunter2")
    assert isinstance(s, Secret)
