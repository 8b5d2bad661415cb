"""Exchange (Microsoft Graph) client for exsf, on msgraph-sdk.

Every call is built by an msgraph-sdk request builder (URL template, query options,
headers) and sent through the SDK's request adapter, so kiota's middleware (retry with
Retry-After, redirects, auth) applies everywhere. Responses are read as raw bytes and
returned as Graph-JSON dicts exactly as the wire has them (camelCase, "@odata.etag",
"@removed"), because mapping works on wire-shaped dicts and a round trip through SDK
models would drop unknown enum values and rewrite date strings. For the same reason
write bodies are the caller's dicts, serialised as JSON into the builder's request.

Errors come out as services.core.errors (see errors_map): a 401 is retried once with a
fresh token; 429/503/504 reach the caller as TransientError only after kiota's own
retries (`max_retries`) are spent.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime
from typing import Any

import httpx
import orjson
import structlog
from kiota_abstractions.api_error import APIError
from kiota_abstractions.base_request_configuration import RequestConfiguration
from kiota_abstractions.method import Method
from kiota_abstractions.request_information import RequestInformation
from kiota_authentication_azure.azure_identity_authentication_provider import AzureIdentityAuthenticationProvider
from kiota_http.kiota_client_factory import KiotaClientFactory
from kiota_http.middleware.options import RetryHandlerOption, UrlReplaceHandlerOption
from msgraph.generated.models.contact import Contact
from msgraph.generated.models.contact_folder import ContactFolder
from msgraph.generated.models.event import Event
from msgraph.generated.models.mail_folder import MailFolder
from msgraph.generated.models.message import Message
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.generated.models.outlook_category import OutlookCategory
from msgraph.generated.models.subscription import Subscription
from msgraph.generated.models.todo_task import TodoTask
from msgraph.generated.models.todo_task_list import TodoTaskList
from msgraph.generated.users.item.messages.item.attachments.create_upload_session.create_upload_session_post_request_body import (  # noqa: E501
    CreateUploadSessionPostRequestBody,
)
from msgraph.generated.users.item.messages.item.move.move_post_request_body import MovePostRequestBody
from msgraph.graph_request_adapter import GraphRequestAdapter
from msgraph.graph_service_client import GraphServiceClient
from msgraph_core import GraphClientFactory
from msgraph_core.requests.batch_request_builder import BatchRequestBuilder
from msgraph_core.requests.batch_request_content import BatchRequestContent
from msgraph_core.requests.batch_request_item import BatchRequestItem

from services.connectors.exchange.auth import GRAPH_SCOPE, ClientSecretTokenCredential
from services.connectors.exchange.errors_map import TRANSIENT_STATUSES, from_api_error, from_status, retry_after_of
from services.connectors.exchange.models import (
    CATEGORY_COLOR,
    CATEGORY_NAME,
    CONTACT_FOLDER_NAME,
    LINK_PROPERTY_ID,
    MAIL_FOLDER_NAME,
    TODO_LIST_NAME,
    BatchRequest,
    BatchResponse,
    DeltaPage,
    DeltaStream,
    ItemKind,
    PreparedMailbox,
    link_id_of,
    with_link_id,
)
from services.core.errors import AuthError, ConnectorError, NotFoundError, PermanentError, TransientError
from services.core.secrets import Secret
from services.core.tenants import GraphEndpoint

log = structlog.get_logger(__name__)

ERROR_MAP: dict[str, Any] = {"XXX": ODataError}
BATCH_LIMIT = 20
IMMUTABLE_IDS = 'IdType="ImmutableId"'
INLINE_ATTACHMENT_LIMIT = 3 * 1024 * 1024
UPLOAD_CHUNK = 4 * 1024 * 1024  # Outlook takes at most 4 MB per upload PUT
LINK_EXPAND = f"singleValueExtendedProperties($filter=id eq '{LINK_PROPERTY_ID}')"


def _quote(value: str) -> str:
    return value.replace("'", "''")


def _qp(builder: Any, method: str = "Get", **kwargs: Any) -> Any:
    """The builder's generated query-parameter class, e.g. ContactsRequestBuilderGetQueryParameters."""
    cls = getattr(type(builder), f"{type(builder).__name__}{method}QueryParameters")
    return cls(**kwargs)


def _cfg(query: Any = None, headers: dict[str, str] | None = None) -> RequestConfiguration[Any]:
    cfg: RequestConfiguration[Any] = RequestConfiguration(query_parameters=query)
    for k, v in (headers or {}).items():
        cfg.headers.add(k, v)
    return cfg


def _with_json(info: RequestInformation, body: dict[str, Any]) -> RequestInformation:
    info.headers.try_add("Content-Type", "application/json")
    info.content = orjson.dumps(body)
    return info



def _window_param(dt: datetime | None) -> str:
    if dt is None:
        raise ValueError("an events DeltaStream needs window_start and window_end")
    from datetime import UTC

    return (dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")



def event_for_create(event: dict[str, Any], link_id: str) -> dict[str, Any]:
    """The event body exsf creates: transactionId = link id, category "Salesforce", and no
    attendees. Graph sends invitations to every attendee of a created event and has no
    switch to suppress them (responseRequested=false only stops asking for replies), so
    exsf never writes attendees; Salesforce invitees stay on the Salesforce side."""
    out = with_link_id("event", event, link_id)
    out.pop("attendees", None)
    out["transactionId"] = link_id
    out["responseRequested"] = False
    cats = list(out.get("categories") or [])
    if CATEGORY_NAME not in cats:
        cats.append(CATEGORY_NAME)
    out["categories"] = cats
    return out


class ExchangeClient:
    """One Graph app registration (tenant) — all mailboxes of that tenant share it."""

    def __init__(
        self,
        endpoint: GraphEndpoint,
        secret: Secret,
        *,
        max_retries: int = 3,
        retry_delay_s: float = 3.0,
        page_size: int = 50,
        timeout_s: float = 100.0,
        credential: ClientSecretTokenCredential | None = None,
        scopes: Sequence[str] = (GRAPH_SCOPE,),
    ) -> None:
        self.endpoint = endpoint
        self.page_size = page_size
        self.max_retries = max_retries
        self.credential = credential or ClientSecretTokenCredential(endpoint, secret)
        auth = AzureIdentityAuthenticationProvider(self.credential, scopes=list(scopes))
        options = {
            RetryHandlerOption.get_key(): RetryHandlerOption(delay=retry_delay_s, max_retries=max_retries),
            UrlReplaceHandlerOption.get_key(): UrlReplaceHandlerOption(
                enabled=True, replacement_pairs={"/users/me-token-to-replace": "/me"}),
        }
        http = KiotaClientFactory.get_default_client()
        http.timeout = httpx.Timeout(timeout_s, connect=30.0)
        http = GraphClientFactory.create_with_default_middleware(client=http, options=options)
        self._http = http
        self.adapter = GraphRequestAdapter(auth, client=http)
        self.adapter.base_url = endpoint.base_url.rstrip("/")
        self.graph = GraphServiceClient(request_adapter=self.adapter)

    async def close(self) -> None:
        await self._http.aclose()
        await self.credential.close()

    async def __aenter__(self) -> ExchangeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- transport ------------------------------------------------------------------
    async def _send(self, make: Callable[[], RequestInformation], what: str) -> Any:
        """Send a request built by `make`; JSON body as dict/list, None for empty."""
        for attempt in (0, 1):
            info = make()
            # Immutable ids survive moves between folders: without them a contact moved out of
            # "Salesforce Contacts" would look deleted (old id 404) instead of unlinked.
            info.headers.add("Prefer", IMMUTABLE_IDS)
            try:
                raw = await self.adapter.send_primitive_async(info, "bytes", ERROR_MAP)
            except APIError as exc:
                if exc.response_status_code == 401 and attempt == 0:
                    # Expired or revoked token: fetch a new one once, then give up.
                    self.credential.invalidate()
                    continue
                raise from_api_error(exc, what=what) from None
            except httpx.HTTPError as exc:
                raise TransientError(f"{what} failed: {type(exc).__name__}") from None
            if not raw:
                return None
            return orjson.loads(raw)
        raise AuthError(f"{what} failed: HTTP 401 after a token refresh", status=401)

    def _user(self, mailbox: str) -> Any:
        return self.graph.users.by_user_id(mailbox)

    async def _all_pages(self, builder: Any, query: Any, what: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        body = await self._send(lambda: builder.to_get_request_information(_cfg(query)), what)
        while True:
            out.extend(body.get("value") or [])
            link = body.get("@odata.nextLink")
            if not link:
                return out
            body = await self._send(_link_request(builder, link), what)

    # -- mailbox preparation ------------------------------------------------------------
    async def ensure_mailbox(self, mailbox: str) -> PreparedMailbox:
        """Create "Salesforce Contacts", "Salesforce Emails", "Salesforce Tasks" and the
        master category "Salesforce" where missing. Idempotent; a racing creator's 409 is
        resolved by looking the object up again."""
        user = self._user(mailbox)
        contact_folder = await self._ensure_named(
            user.contact_folders, ContactFolder, {"displayName": CONTACT_FOLDER_NAME}, "contact folder")
        mail_folder = await self._ensure_named(
            user.mail_folders, MailFolder, {"displayName": MAIL_FOLDER_NAME, "isHidden": False}, "mail folder")
        todo_list = await self._ensure_named(user.todo.lists, TodoTaskList, {"displayName": TODO_LIST_NAME},
                                             "To Do list")
        cats = user.outlook.master_categories
        existing = await self._all_pages(cats, None, "list master categories")
        if not any(str(c.get("displayName", "")).lower() == CATEGORY_NAME.lower() for c in existing):
            try:
                await self._send(lambda: _with_json(cats.to_post_request_information(OutlookCategory()),
                                                    {"displayName": CATEGORY_NAME, "color": CATEGORY_COLOR}),
                                 "create master category")
            except PermanentError as exc:
                if exc.status != 409:
                    raise
        return PreparedMailbox(contact_folder, mail_folder, todo_list, CATEGORY_NAME)

    async def default_todo_list(self, mailbox: str) -> str | None:
        """The id of the user's default To Do list ("Tasks"), where tasks tagged "Salesforce" sync."""
        lists = await self._all_pages(self._user(mailbox).todo.lists, None, "list To Do lists")
        return next((str(x["id"]) for x in lists if x.get("wellknownListName") == "defaultList"), None)

    async def _ensure_named(self, collection: Any, model: Any, body: dict[str, Any], what: str) -> str:
        name = body["displayName"]

        async def find() -> str | None:
            for c in await self._all_pages(collection, None, f"list {what}s"):
                if str(c.get("displayName", "")).lower() == name.lower():
                    return str(c["id"])
            return None

        found = await find()
        if found:
            return found
        try:
            created = await self._send(lambda: _with_json(collection.to_post_request_information(model()), body),
                                       f"create {what}")
            return str(created["id"])
        except PermanentError as exc:
            if exc.status != 409:
                raise
            again = await find()
            if again is None:
                raise
            return again

    # -- delta ------------------------------------------------------------------------
    def _delta_builder(self, mailbox: str, stream: DeltaStream) -> tuple[Any, Any]:
        user = self._user(mailbox)
        if stream.kind == "contacts":
            b = (user.contact_folders.by_contact_folder_id(stream.container_id).contacts.delta
                 if stream.container_id else user.contacts.delta)
            return b, _qp(b, expand=[LINK_EXPAND])
        if stream.kind == "tasks":
            b = user.todo.lists.by_todo_task_list_id(_need(stream.container_id)).tasks.delta
            return b, _qp(b, expand=["linkedResources"])
        if stream.kind == "messages":
            b = user.mail_folders.by_mail_folder_id(_need(stream.container_id)).messages.delta
            return b, None
        b = user.calendar_view.delta
        return b, _qp(b, start_date_time=_window_param(stream.window_start),
                      end_date_time=_window_param(stream.window_end))

    async def delta_page(self, mailbox: str, stream: DeltaStream, link: str | None = None, *,
                         page_size: int | None = None) -> DeltaPage:
        """One delta page: the initial round when `link` is None, else the page behind a saved
        next/delta link. A 410 (token unknown or evicted) raises CursorExpired."""
        builder, query = self._delta_builder(mailbox, stream)
        headers = {"Prefer": f"odata.maxpagesize={page_size or self.page_size}"}
        what = f"delta {stream.kind}"
        if link is None:
            body = await self._send(lambda: builder.to_get_request_information(_cfg(query, headers)), what)
        else:
            body = await self._send(lambda: builder.with_url(link).to_get_request_information(_cfg(None, headers)),
                                    what)
        items: list[dict[str, Any]] = []
        removed: list[str] = []
        for v in body.get("value") or []:
            if "@removed" in v:
                removed.append(str(v["id"]))
            else:
                items.append(v)
        if stream.kind == "events" and items:
            await self._attach_event_link_ids(mailbox, items)
        page = DeltaPage(items, removed, body.get("@odata.nextLink"), body.get("@odata.deltaLink"))
        if (page.next_link is None) == (page.delta_link is None):
            raise PermanentError(f"{what}: page has neither or both of nextLink and deltaLink")
        return page

    async def delta_pages(self, mailbox: str, stream: DeltaStream, link: str | None = None, *,
                          page_size: int | None = None) -> AsyncIterator[DeltaPage]:
        """Pages until the round's deltaLink; persist `page.cursor` after handling each page."""
        while True:
            page = await self.delta_page(mailbox, stream, link, page_size=page_size)
            yield page
            if page.delta_link is not None:
                return
            link = page.next_link

    async def _attach_event_link_ids(self, mailbox: str, items: list[dict[str, Any]]) -> None:
        """calendarView/delta takes no $expand, so the link-id property of the page's events is
        read with follow-up GETs, 20 per $batch (throttled ones re-sent by `batch`)."""
        base = self.adapter.base_url
        by_id = {str(it["id"]): it for it in items}
        ids = list(by_id)
        for start in range(0, len(ids), BATCH_LIMIT):
            chunk = ids[start : start + BATCH_LIMIT]
            reqs = []
            for n, item_id in enumerate(chunk):
                url = str(self._request_info_get_event(mailbox, item_id).url)
                reqs.append(BatchRequest(str(n), "GET", url[len(base) :] if url.startswith(base) else url))
            for n, resp in enumerate(await self.batch(reqs)):
                if resp.status == 200 and isinstance(resp.body, dict):
                    props = resp.body.get("singleValueExtendedProperties", [])
                    by_id[chunk[n]]["singleValueExtendedProperties"] = props

    # -- reads ------------------------------------------------------------------------
    def _request_info_get_event(self, mailbox: str, event_id: str) -> RequestInformation:
        b = self._user(mailbox).events.by_event_id(event_id)
        return b.to_get_request_information(_cfg(_qp(b, expand=[LINK_EXPAND])))

    def _item_builder(self, mailbox: str, kind: ItemKind, item_id: str, container_id: str | None) -> Any:
        user = self._user(mailbox)
        if kind == "contact":
            return user.contacts.by_contact_id(item_id)
        if kind == "event":
            return user.events.by_event_id(item_id)
        if kind == "message":
            return user.messages.by_message_id(item_id)
        return user.todo.lists.by_todo_task_list_id(_need(container_id, "task needs its list id")) \
            .tasks.by_todo_task_id(item_id)

    async def get_item(self, mailbox: str, kind: ItemKind, item_id: str, *,
                       container_id: str | None = None) -> dict[str, Any]:
        """Contact / event / message by id (tasks need `container_id`, the list id), with the
        link-id property expanded. 404 raises NotFoundError."""
        b = self._item_builder(mailbox, kind, item_id, container_id)
        expand = ["linkedResources"] if kind == "task" else [LINK_EXPAND]
        return await self._send(lambda: b.to_get_request_information(_cfg(_qp(b, expand=expand))), f"get {kind}")

    async def get_contact(self, mailbox: str, contact_id: str) -> dict[str, Any]:
        return await self.get_item(mailbox, "contact", contact_id)

    async def get_event(self, mailbox: str, event_id: str) -> dict[str, Any]:
        return await self.get_item(mailbox, "event", event_id)

    async def get_task(self, mailbox: str, list_id: str, task_id: str) -> dict[str, Any]:
        return await self.get_item(mailbox, "task", task_id, container_id=list_id)

    async def get_message(self, mailbox: str, message_id: str) -> dict[str, Any]:
        return await self.get_item(mailbox, "message", message_id)

    async def list_attachments(self, mailbox: str, message_id: str) -> list[dict[str, Any]]:
        """The message's attachments, file attachments with contentBytes (base64)."""
        b = self._user(mailbox).messages.by_message_id(message_id).attachments
        return await self._all_pages(b, None, "list attachments")

    async def find_by_link_id(self, mailbox: str, kind: ItemKind, link_id: str, *,
                              container_id: str | None = None) -> dict[str, Any] | None:
        """The item carrying this link id, if any (for create retries). Contacts are looked up
        in `container_id` when given (else the default folder), tasks in their list."""
        user = self._user(mailbox)
        if kind == "task":
            b = user.todo.lists.by_todo_task_list_id(_need(container_id, "task lookup needs the list id")).tasks
            for task in await self._all_pages(b, _qp(b, expand=["linkedResources"]), "find task"):
                if link_id_of(task) == link_id:
                    return task
            return None
        if kind == "contact":
            b = (user.contact_folders.by_contact_folder_id(container_id).contacts if container_id
                 else user.contacts)
        elif kind == "event":
            b = user.events
        else:
            b = user.messages
        flt = (f"singleValueExtendedProperties/Any(ep: ep/id eq '{_quote(LINK_PROPERTY_ID)}' "
               f"and ep/value eq '{_quote(link_id)}')")
        found = await self._all_pages(b, _qp(b, filter=flt, expand=[LINK_EXPAND]), f"find {kind}")
        return found[0] if found else None

    # -- writes -----------------------------------------------------------------------
    async def create_contact(self, mailbox: str, folder_id: str, contact: dict[str, Any],
                             link_id: str) -> dict[str, Any]:
        b = self._user(mailbox).contact_folders.by_contact_folder_id(folder_id).contacts
        body = with_link_id("contact", contact, link_id)
        return await self._send(lambda: _with_json(b.to_post_request_information(Contact()), body), "create contact")

    async def create_event(self, mailbox: str, event: dict[str, Any], link_id: str) -> dict[str, Any]:
        """Creates in the primary calendar with transactionId = link id; a retry whose first try
        did land gets Graph's ErrorDuplicateTransactionId and returns the existing event."""
        b = self._user(mailbox).events
        body = event_for_create(event, link_id)
        try:
            return await self._send(lambda: _with_json(b.to_post_request_information(Event()), body), "create event")
        except PermanentError as exc:
            if (exc.code or "").lower() != "errorduplicatetransactionid":
                raise
            existing = await self.find_by_link_id(mailbox, "event", link_id)
            if existing is None:
                raise
            return existing

    async def create_task(self, mailbox: str, list_id: str, task: dict[str, Any], link_id: str) -> dict[str, Any]:
        b = self._user(mailbox).todo.lists.by_todo_task_list_id(list_id).tasks
        body = with_link_id("task", task, link_id)
        return await self._send(lambda: _with_json(b.to_post_request_information(TodoTask()), body), "create task")

    async def create_message(self, mailbox: str, folder_id: str, message: dict[str, Any]) -> dict[str, Any]:
        """Creates a message in a folder (seeding, demos)."""
        b = self._user(mailbox).mail_folders.by_mail_folder_id(folder_id).messages
        return await self._send(lambda: _with_json(b.to_post_request_information(Message()), message),
                                "create message")

    async def update_item(self, mailbox: str, kind: ItemKind, item_id: str, patch: dict[str, Any], *,
                          etag: str | None = None, container_id: str | None = None) -> dict[str, Any]:
        """PATCH with If-Match: etag when given; a stale etag raises PreconditionFailed."""
        b = self._item_builder(mailbox, kind, item_id, container_id)
        body = dict(patch)
        if kind == "event":
            body.pop("attendees", None)  # an attendee change would send meeting updates
            body.pop("transactionId", None)
        headers = {"If-Match": etag} if etag else {}
        model: Any = {"contact": Contact, "event": Event, "message": Message, "task": TodoTask}[kind]()
        return await self._send(lambda: _with_json(b.to_patch_request_information(model, _cfg(None, headers)), body),
                                f"update {kind}")

    async def delete_item(self, mailbox: str, kind: ItemKind, item_id: str, *, etag: str | None = None,
                          container_id: str | None = None) -> None:
        """DELETE (If-Match when etag given). 404 raises NotFoundError, 412 PreconditionFailed."""
        b = self._item_builder(mailbox, kind, item_id, container_id)
        headers = {"If-Match": etag} if etag else {}
        await self._send(lambda: b.to_delete_request_information(_cfg(None, headers)), f"delete {kind}")

    async def move_message(self, mailbox: str, message_id: str, destination_id: str) -> dict[str, Any]:
        """Moves a message; returns the moved message (Outlook gives it a new id)."""
        b = self._user(mailbox).messages.by_message_id(message_id).move
        body = MovePostRequestBody(destination_id=destination_id)
        return await self._send(lambda: b.to_post_request_information(body), "move message")

    async def add_attachment(self, mailbox: str, message_id: str, name: str, content_type: str,
                             data: bytes) -> dict[str, Any] | None:
        """Attaches a file: inline POST under 3 MB, else an upload session with 4 MB chunks.
        Returns the attachment for an inline POST, None after an upload session."""
        import base64

        att = self._user(mailbox).messages.by_message_id(message_id).attachments
        if len(data) < INLINE_ATTACHMENT_LIMIT:
            from msgraph.generated.models.file_attachment import FileAttachment

            body = {"@odata.type": "#microsoft.graph.fileAttachment", "name": name, "contentType": content_type,
                    "contentBytes": base64.b64encode(data).decode()}
            return await self._send(lambda: _with_json(att.to_post_request_information(FileAttachment()), body),
                                    "add attachment")
        from msgraph.generated.models.attachment_item import AttachmentItem
        from msgraph.generated.models.attachment_type import AttachmentType

        spec = CreateUploadSessionPostRequestBody(attachment_item=AttachmentItem(
            attachment_type=AttachmentType.File, name=name, size=len(data), content_type=content_type))
        session = await self._send(lambda: att.create_upload_session.to_post_request_information(spec),
                                   "create upload session")
        url = str(session["uploadUrl"])
        for start in range(0, len(data), UPLOAD_CHUNK):
            chunk = data[start : start + UPLOAD_CHUNK]

            def put(start: int = start, chunk: bytes = chunk) -> RequestInformation:
                info = RequestInformation(Method.PUT)
                info.url = url
                info.headers.try_add("Content-Range", f"bytes {start}-{start + len(chunk) - 1}/{len(data)}")
                info.set_stream_content(chunk)
                return info

            await self._send(put, "upload attachment chunk")
        return None

    # -- $batch -----------------------------------------------------------------------
    def _batch_item_info(self, req: BatchRequest) -> RequestInformation:
        info = RequestInformation(Method[req.method.upper()])
        info.url = f"{self.adapter.base_url}{req.url if req.url.startswith('/') else '/' + req.url}"
        for k, v in req.headers.items():
            info.headers.try_add(k, v)
        if req.body is not None:
            _with_json(info, req.body)
        return info

    async def _batch_infos(self, reqs: list[tuple[str, RequestInformation, list[str]]]) -> dict[str, BatchResponse]:
        content = BatchRequestContent()
        for req_id, info, deps in reqs:
            content.add_request(req_id, BatchRequestItem(info, id=req_id, depends_on=list(deps)))
        builder = BatchRequestBuilder(self.adapter)

        async def make_info() -> RequestInformation:
            return await builder.to_post_request_information(content)

        info = await make_info()
        body = await self._send(lambda: info, "$batch")
        out: dict[str, BatchResponse] = {}
        for r in (body or {}).get("responses") or []:
            out[str(r.get("id"))] = BatchResponse(str(r.get("id")), int(r.get("status", 0)),
                                                  {str(k): str(v) for k, v in (r.get("headers") or {}).items()},
                                                  r.get("body"))
        return out

    async def batch(self, requests: Sequence[BatchRequest], *, retry_throttled: bool = True) -> list[BatchResponse]:
        """Up to 20 sub-requests in one $batch (msgraph-core BatchRequestContent). Responses come
        back in request order. Sub-requests answered 429/503/504 (and nothing depends on them)
        are re-sent after their Retry-After, up to max_retries times, when retry_throttled."""
        if len(requests) > BATCH_LIMIT:
            raise PermanentError(f"$batch takes at most {BATCH_LIMIT} requests, got {len(requests)}")
        pending = list(requests)
        results: dict[str, BatchResponse] = {}
        retries = 0
        while pending:
            got = await self._batch_infos([(r.id, self._batch_item_info(r), r.depends_on) for r in pending])
            results.update(got)
            depended = {d for r in pending for d in r.depends_on}
            again = [r for r in pending if got.get(r.id) is not None and got[r.id].status in TRANSIENT_STATUSES
                     and r.id not in depended and not r.depends_on]
            if not retry_throttled or not again or retries >= self.max_retries:
                break
            wait = max((retry_after_of(got[r.id].headers) or 1.0) for r in again)
            await asyncio.sleep(wait)
            retries += 1
            # Mark re-sends as kiota marks its retries, so Graph (and the emulator's throttle
            # log) can tell a retry from a new request on the same URL.
            pending = [BatchRequest(r.id, r.method, r.url, r.body, {**r.headers, "Retry-Attempt": str(retries)},
                                    list(r.depends_on)) for r in again]
        return [results.get(r.id) or BatchResponse(r.id, 0, {}, None) for r in requests]

    @staticmethod
    def batch_error(resp: BatchResponse) -> ConnectorError | None:
        """The services.core error a sub-response stands for, or None for 2xx."""
        if 200 <= resp.status < 300:
            return None
        err = (resp.body or {}).get("error") if isinstance(resp.body, dict) else None
        return from_status(resp.status, (err or {}).get("code"), (err or {}).get("message"), resp.headers,
                           what=f"$batch request {resp.id}")

    # Sub-request builders for the writer's batches (same bodies as the single-call writes).
    @staticmethod
    def contact_create_request(req_id: str, mailbox: str, folder_id: str, contact: dict[str, Any],
                               link_id: str) -> BatchRequest:
        return BatchRequest(req_id, "POST", f"/users/{mailbox}/contactFolders/{folder_id}/contacts",
                            with_link_id("contact", contact, link_id), {"Content-Type": "application/json"})

    @staticmethod
    def event_create_request(req_id: str, mailbox: str, event: dict[str, Any], link_id: str) -> BatchRequest:
        return BatchRequest(req_id, "POST", f"/users/{mailbox}/events", event_for_create(event, link_id),
                            {"Content-Type": "application/json"})

    @staticmethod
    def task_create_request(req_id: str, mailbox: str, list_id: str, task: dict[str, Any],
                            link_id: str) -> BatchRequest:
        return BatchRequest(req_id, "POST", f"/users/{mailbox}/todo/lists/{list_id}/tasks",
                            with_link_id("task", task, link_id), {"Content-Type": "application/json"})

    # -- subscriptions ----------------------------------------------------------------
    async def create_subscription(self, resource: str, notification_url: str, *, expiration: datetime,
                                  client_state: str | None = None, lifecycle_url: str | None = None,
                                  change_types: Sequence[str] = ("created", "updated", "deleted")) -> dict[str, Any]:
        """POST /subscriptions (Graph validates notificationUrl before answering; a failed
        handshake is a PermanentError). `resource` e.g. "/users/a@b/contactFolders/{id}/contacts"."""
        body: dict[str, Any] = {"changeType": ",".join(change_types), "notificationUrl": notification_url,
                                "resource": resource, "expirationDateTime": _window_param(expiration)}
        if client_state is not None:
            body["clientState"] = client_state
        if lifecycle_url is not None:
            body["lifecycleNotificationUrl"] = lifecycle_url
        b = self.graph.subscriptions
        return await self._send(lambda: _with_json(b.to_post_request_information(Subscription()), body),
                                "create subscription")

    async def renew_subscription(self, subscription_id: str, expiration: datetime) -> dict[str, Any]:
        b = self.graph.subscriptions.by_subscription_id(subscription_id)
        body = {"expirationDateTime": _window_param(expiration)}
        return await self._send(lambda: _with_json(b.to_patch_request_information(Subscription()), body),
                                "renew subscription")

    async def list_subscriptions(self) -> list[dict[str, Any]]:
        """GET /subscriptions: this app's subscriptions (all pages). Used to find ones created
        on Graph but never recorded by exsf (a crash in between)."""
        return await self._all_pages(self.graph.subscriptions, None, "list subscriptions")

    async def delete_subscription(self, subscription_id: str) -> None:
        b = self.graph.subscriptions.by_subscription_id(subscription_id)
        try:
            await self._send(lambda: b.to_delete_request_information(), "delete subscription")
        except NotFoundError:
            return


def _link_request(builder: Any, link: str) -> Callable[[], RequestInformation]:
    def make() -> RequestInformation:
        info: RequestInformation = builder.with_url(link).to_get_request_information()
        return info

    return make


def _need(value: str | None, what: str = "this stream needs container_id") -> str:
    if not value:
        raise ValueError(what)
    return value

