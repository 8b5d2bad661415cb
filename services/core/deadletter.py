"""Dead-letter records: the original message, the error and the service, so a poison
message is kept for inspection and replay instead of crashing or stalling a pipeline."""

from __future__ import annotations

import base64
import time
from typing import Any

import orjson

from services.core.bus.base import Message
from services.core.logging import redact_text


def deadletter_record(
    service: str,
    error: BaseException | str,
    message: Message | None = None,
    *,
    payload: Any = None,
    tenant_id: str | None = None,
) -> bytes:
    """Build the exsf.deadletter value. Error text is redacted: exceptions from HTTP
    clients sometimes quote headers or bodies."""
    err = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    rec: dict[str, Any] = {
        "service": service,
        "error": redact_text(err),
        "tenant_id": tenant_id,
        "at_ms": int(time.time() * 1000),
    }
    if message is not None:
        rec["source"] = {
            "topic": message.topic,
            "partition": message.partition,
            "offset": message.offset,
            "key": message.key.decode(errors="replace") if message.key is not None else None,
        }
        # The raw value survives even if it is not JSON (that may be why it is here).
        rec["value_b64"] = base64.b64encode(message.value).decode() if message.value is not None else None
    if payload is not None:
        rec["payload"] = payload
    return orjson.dumps(rec, default=str)
