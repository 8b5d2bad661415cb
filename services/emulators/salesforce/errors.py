"""The error shape every Salesforce API answers with: status, errorCode, message, fields."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class SfError(Exception):
    def __init__(self, status: int, code: str, message: str, fields: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.fields = list(fields)

    def rest_body(self) -> list[dict[str, Any]]:
        return [{"message": self.message, "errorCode": self.code, "fields": self.fields}]

    def collection_error(self) -> dict[str, Any]:
        # sObject Collections name the code `statusCode` (reference §3).
        return {"statusCode": self.code, "message": self.message, "fields": self.fields}


def not_found() -> SfError:
    return SfError(404, "NOT_FOUND", "The requested resource does not exist")


def entity_deleted() -> SfError:
    return SfError(404, "ENTITY_IS_DELETED", "entity is deleted")


def invalid_field(sobject: str, name: str) -> SfError:
    return SfError(400, "INVALID_FIELD", f"No such column '{name}' on sobject of type {sobject}", [name])
