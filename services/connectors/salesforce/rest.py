"""Salesforce REST client on aiohttp: sObject rows, upsert by external id, SOQL with paging,
sObject Collections in batches of 200, file upload, and API-usage tracking.

Every call carries `Sforce-Call-Options: client=<client_id>` so our own writes come back in
CDC with `changeOrigin` containing `client=exsf` (echo detection, docs/design.md §7). A 401 gets one
token refresh and a retry; errors map onto services.core.errors (see errors_map).
"""

from __future__ import annotations

import base64
import re
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
import structlog

from services.connectors.salesforce.auth import SalesforceAuth
from services.connectors.salesforce.errors_map import error_for, error_for_record, first_error
from services.core.errors import ConnectorError, TransientError

log = structlog.get_logger(__name__)

COLLECTION_LIMIT = 200
_LIMIT_RE = re.compile(r"api-usage=(\d+)/(\d+)")


@dataclass(frozen=True, slots=True)
class SaveError:
    status_code: str
    message: str
    fields: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SaveResult:
    """One row of an sObject Collections answer, in input order."""

    id: str | None
    success: bool
    created: bool | None = None
    errors: tuple[SaveError, ...] = field(default_factory=tuple)

    @property
    def error_code(self) -> str | None:
        return self.errors[0].status_code if self.errors else None

    def to_error(self, what: str = "record") -> ConnectorError | None:
        """The connector error this failed row stands for (None when it succeeded):
        ENTITY_IS_DELETED -> NotFoundError, UNABLE_TO_LOCK_ROW -> TransientError, ... ."""
        if self.success:
            return None
        message = self.errors[0].message if self.errors else ""
        return error_for_record(self.error_code, message, what)


@dataclass(frozen=True, slots=True)
class FileRef:
    content_version_id: str
    content_document_id: str


def http_date(value: str) -> str:
    """If-Unmodified-Since wants an HTTP date; accept a Salesforce/ISO date-time too.
    HTTP dates have whole seconds: Salesforce compares them as a weak validator."""
    try:
        parsedate_to_datetime(value)
        return value
    except (TypeError, ValueError):
        pass
    return format_datetime(_parse_iso(value).replace(microsecond=0), usegmt=True)


def _parse_iso(value: str) -> datetime:
    """Salesforce (`...000+0000`), ISO (`...Z`, `+02:00`) or naive (UTC) date-times."""
    text = value.strip().replace("Z", "+00:00")
    text = re.sub(r"([+-]\d{2})(\d{2})$", r"\1:\2", text)
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


def _iso(value: str) -> str:
    """Any ISO date-time -> `2024-04-26T18:38:05+00:00` (what getUpdated/getDeleted accept)."""
    return _parse_iso(value).replace(microsecond=0).isoformat()


def _chunks(items: Sequence[Any], n: int) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


def _save_result(row: Mapping[str, Any]) -> SaveResult:
    errors = tuple(
        SaveError(str(e.get("statusCode") or e.get("errorCode") or ""), str(e.get("message", "")),
                  tuple(e.get("fields") or ()))
        for e in row.get("errors") or ()
    )
    return SaveResult(row.get("id"), bool(row.get("success")), row.get("created"), errors)


class SalesforceRest:
    def __init__(
        self,
        auth: SalesforceAuth,
        *,
        api_version: str | None = None,
        client_id: str = "exsf",
        session: aiohttp.ClientSession | None = None,
        timeout_s: float = 120.0,
        query_batch_size: int | None = None,
    ) -> None:
        self.auth = auth
        self.api_version = api_version or auth.endpoint.api_version
        self.client_id = client_id
        self._session = session
        self._own_session = session is None
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.query_batch_size = query_batch_size
        # From the Sforce-Limit-Info header of the latest answer.
        self.api_usage_used: int | None = None
        self.api_usage_max: int | None = None
        self.calls = 0

    @property
    def base(self) -> str:
        return f"/services/data/v{self.api_version}"

    async def close(self) -> None:
        if self._own_session and self._session is not None and not self._session.closed:
            await self._session.close()

    async def __aenter__(self) -> SalesforceRest:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- transport -------------------------------------------------------------------------

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
            self._own_session = True
        return self._session

    def _track_limits(self, headers: Mapping[str, str]) -> None:
        m = _LIMIT_RE.search(headers.get("Sforce-Limit-Info", ""))
        if m:
            self.api_usage_used, self.api_usage_max = int(m.group(1)), int(m.group(2))

    async def request(
        self,
        method: str,
        path: str,
        *,
        what: str,
        json: Any = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        raw: bool = False,
    ) -> tuple[int, Any]:
        """One REST call (path relative to the instance URL). Returns (status, parsed body);
        raises the mapped connector error for anything but 2xx/300."""
        token = await self.auth.token()
        for attempt in (1, 2):
            hdrs = {"Authorization": token.authorization(), "Sforce-Call-Options": f"client={self.client_id}",
                    "Accept": "application/json"}
            if json is not None:
                hdrs["Content-Type"] = "application/json"
            hdrs.update(headers or {})
            data = orjson.dumps(json) if json is not None else None
            self.calls += 1
            try:
                async with self._http().request(method, token.instance_url + path, data=data, params=params,
                                                headers=hdrs, timeout=self._timeout) as resp:
                    status = resp.status
                    self._track_limits(resp.headers)
                    content = await resp.read()
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise TransientError(f"salesforce {what}: network error {type(exc).__name__}") from None
            body: Any = None
            if content and not raw:
                try:
                    body = orjson.loads(content)
                except orjson.JSONDecodeError:
                    body = None
            elif raw:
                body = content
            if status == 401 and attempt == 1:
                log.info("salesforce_session_refresh", what=what)
                token = await self.auth.refresh(token)
                continue
            if status >= 300:
                # 300 = an external id matched several records (upsert): a data problem, not transient.
                err = error_for(status, body if not raw and status >= 400 else None, what)
                code, _ = first_error(body if not raw else None)
                log.info("salesforce_call_failed", what=what, status=status, code=code)
                raise err
            return status, body
        raise AssertionError("unreachable")

    # --- sObject rows ----------------------------------------------------------------------

    def _row(self, sobject: str, record_id: str) -> str:
        return f"{self.base}/sobjects/{sobject}/{quote(record_id, safe='')}"

    async def get(self, sobject: str, record_id: str, fields: Sequence[str] | None = None) -> dict[str, Any]:
        params = {"fields": ",".join(fields)} if fields else None
        _, body = await self.request("GET", self._row(sobject, record_id), params=params, what=f"get {sobject}")
        return dict(body)

    async def create(self, sobject: str, fields: Mapping[str, Any]) -> str:
        _, body = await self.request("POST", f"{self.base}/sobjects/{sobject}", json=dict(fields),
                                     what=f"create {sobject}")
        return str(body["id"])

    async def update(self, sobject: str, record_id: str, fields: Mapping[str, Any],
                     if_unmodified_since: str | None = None) -> None:
        headers = {"If-Unmodified-Since": http_date(if_unmodified_since)} if if_unmodified_since else None
        await self.request("PATCH", self._row(sobject, record_id), json=dict(fields), headers=headers,
                           what=f"update {sobject}")

    async def delete(self, sobject: str, record_id: str) -> None:
        await self.request("DELETE", self._row(sobject, record_id), what=f"delete {sobject}")

    async def upsert(self, sobject: str, ext_field: str, ext_value: str, fields: Mapping[str, Any]
                     ) -> tuple[str, bool]:
        """Create or update by external id; returns (id, created)."""
        body = {k: v for k, v in fields.items() if k not in ("Id", ext_field, "attributes")}
        path = f"{self.base}/sobjects/{sobject}/{ext_field}/{quote(ext_value, safe='')}"
        status, answer = await self.request("PATCH", path, json=body, what=f"upsert {sobject}")
        if status == 204 or not answer:
            # Older API versions answer an update with 204 and no body: read the id back.
            rec = await self.get_by_external_id(sobject, ext_field, ext_value, ["Id"])
            return str(rec["Id"]), False
        return str(answer["id"]), bool(answer.get("created", status == 201))

    async def get_by_external_id(self, sobject: str, ext_field: str, ext_value: str,
                                 fields: Sequence[str] | None = None) -> dict[str, Any]:
        params = {"fields": ",".join(fields)} if fields else None
        path = f"{self.base}/sobjects/{sobject}/{ext_field}/{quote(ext_value, safe='')}"
        _, body = await self.request("GET", path, params=params, what=f"get {sobject} by {ext_field}")
        return dict(body)

    # --- replication ------------------------------------------------------------------------

    async def get_updated(self, sobject: str, start: str, end: str) -> tuple[list[str], str]:
        """Ids changed (by SystemModstamp) in [start, end] (at most 30 days back), and the
        latest date the answer covers."""
        params = {"start": _iso(start), "end": _iso(end)}
        _, body = await self.request("GET", f"{self.base}/sobjects/{sobject}/updated/", params=params,
                                     what=f"get_updated {sobject}")
        return list(body.get("ids", [])), str(body.get("latestDateCovered", ""))

    async def get_deleted(self, sobject: str, start: str, end: str) -> list[tuple[str, str]]:
        """(id, deletedDate) of records deleted in [start, end] (at most 15 days back)."""
        params = {"start": _iso(start), "end": _iso(end)}
        _, body = await self.request("GET", f"{self.base}/sobjects/{sobject}/deleted/", params=params,
                                     what=f"get_deleted {sobject}")
        return [(str(r["id"]), str(r["deletedDate"])) for r in body.get("deletedRecords", [])]

    # --- SOQL ------------------------------------------------------------------------------

    async def query(self, soql: str) -> AsyncIterator[dict[str, Any]]:
        """Every record of the query, following nextRecordsUrl page by page."""
        async for rec in self._query("query", soql):
            yield rec

    async def query_all(self, soql: str) -> AsyncIterator[dict[str, Any]]:
        """Like `query`, including deleted (IsDeleted) and archived records."""
        async for rec in self._query("queryAll", soql):
            yield rec

    async def _query(self, resource: str, soql: str) -> AsyncIterator[dict[str, Any]]:
        headers = {"Sforce-Query-Options": f"batchSize={self.query_batch_size}"} if self.query_batch_size else None
        _, page = await self.request("GET", f"{self.base}/{resource}", params={"q": soql}, headers=headers,
                                     what=resource)
        while True:
            for rec in page.get("records", []):
                yield rec
            next_url = page.get("nextRecordsUrl")
            if page.get("done", True) or not next_url:
                return
            _, page = await self.request("GET", next_url, headers=headers, what=f"{resource} more")

    # --- sObject Collections ---------------------------------------------------------------

    async def _collection(self, method: str, path: str, sobject: str | None, records: Sequence[Mapping[str, Any]],
                          all_or_none: bool, what: str) -> list[SaveResult]:
        out: list[SaveResult] = []
        for chunk in _chunks(records, COLLECTION_LIMIT):
            body = {
                "allOrNone": all_or_none,
                "records": [{"attributes": {"type": sobject or r["attributes"]["type"]},
                             **{k: v for k, v in r.items() if k != "attributes"}} for r in chunk],
            }
            _, answer = await self.request(method, path, json=body, what=what)
            out.extend(_save_result(row) for row in answer)
        return out

    async def create_many(self, sobject: str, records: Sequence[Mapping[str, Any]],
                          all_or_none: bool = False) -> list[SaveResult]:
        """Create records, 200 per call; all_or_none applies per call of 200."""
        return await self._collection("POST", f"{self.base}/composite/sobjects", sobject, records, all_or_none,
                                      f"create_many {sobject}")

    async def update_many(self, sobject: str, records: Sequence[Mapping[str, Any]],
                          all_or_none: bool = False) -> list[SaveResult]:
        """Update records (each holds its "Id"), 200 per call."""
        return await self._collection("PATCH", f"{self.base}/composite/sobjects", sobject, records, all_or_none,
                                      f"update_many {sobject}")

    async def upsert_many(self, sobject: str, ext_field: str, records: Sequence[Mapping[str, Any]],
                          all_or_none: bool = False) -> list[SaveResult]:
        """Upsert by external id (each record holds `ext_field`); results carry `created`."""
        return await self._collection("PATCH", f"{self.base}/composite/sobjects/{sobject}/{ext_field}", sobject,
                                      records, all_or_none, f"upsert_many {sobject}")

    async def delete_many(self, ids: Sequence[str], all_or_none: bool = False) -> list[SaveResult]:
        out: list[SaveResult] = []
        for chunk in _chunks(ids, COLLECTION_LIMIT):
            params = {"ids": ",".join(chunk), "allOrNone": "true" if all_or_none else "false"}
            _, answer = await self.request("DELETE", f"{self.base}/composite/sobjects", params=params,
                                           what="delete_many")
            out.extend(_save_result(row) for row in answer)
        return out

    async def get_many(self, sobject: str, ids: Sequence[str], fields: Sequence[str]) -> list[dict[str, Any] | None]:
        """Records by id in input order; None where a record does not exist (or was deleted)."""
        out: list[dict[str, Any] | None] = []
        for chunk in _chunks(ids, COLLECTION_LIMIT):
            params = {"ids": ",".join(chunk), "fields": ",".join(fields)}
            _, answer = await self.request("GET", f"{self.base}/composite/sobjects/{sobject}", params=params,
                                           what=f"get_many {sobject}")
            out.extend(answer)
        return out

    # --- files -----------------------------------------------------------------------------

    async def upload_file(self, parent_id: str, name: str, content_type: str, data: bytes) -> FileRef:
        """A Salesforce File (ContentVersion) published to `parent_id`: Salesforce creates the
        ContentDocument and the ContentDocumentLink to the parent. The file type comes from the
        name's extension (ContentVersion has no content-type field)."""
        title = name.rsplit(".", 1)[0] if "." in name else name
        body = {"Title": title, "PathOnClient": name, "FirstPublishLocationId": parent_id,
                "VersionData": base64.b64encode(data).decode()}
        cv_id = await self.create("ContentVersion", body)
        rec = await self.get("ContentVersion", cv_id, ["ContentDocumentId"])
        log.debug("salesforce_file_uploaded", parent_id=parent_id, size=len(data), content_type=content_type)
        return FileRef(cv_id, str(rec["ContentDocumentId"]))

    async def upload_attachment(self, parent_id: str, name: str, content_type: str, data: bytes) -> str:
        """The classic Attachment alternative; returns the 00P... id."""
        return await self.create("Attachment", {"ParentId": parent_id, "Name": name, "ContentType": content_type,
                                                "Body": base64.b64encode(data).decode()})

    async def download_file(self, content_version_id: str) -> bytes:
        _, body = await self.request("GET", self._row("ContentVersion", content_version_id) + "/VersionData",
                                     raw=True, what="download file")
        return bytes(body)
