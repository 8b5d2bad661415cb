"""`exsf tenants validate --online`: try a tenant's credentials against Graph and Salesforce
(or the emulators) before enrolling it, and say what is missing.

Checked: a Graph token for the app; each mailbox answers (listing its contact folders,
which needs the Contacts permission exsf uses); a Salesforce token; the external id field
exists on Contact and is marked External ID; each salesforce_user_id is a User of the org.
Not checked yet: CDC channels and the event series setting (they are reported as such).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote

import aiohttp

from services.connectors.exchange.auth import GRAPH_SCOPE, ClientSecretTokenCredential
from services.connectors.salesforce.auth import SalesforceAuth
from services.core.errors import ConnectorError
from services.core.secrets import SecretError, resolve_secret
from services.core.tenants import Tenant

Result = Literal["ok", "failed", "not checked"]
TIMEOUT = aiohttp.ClientTimeout(total=20)


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    result: Result
    detail: str = ""


def _why(status: int, what: str) -> str:
    # Graph and Salesforce both answer 401/403 for credentials and permissions, 404 for
    # an object that does not exist (https://learn.microsoft.com/graph/errors).
    return {401: "credentials rejected (401)", 403: "permission missing (403)",
            404: f"{what} not found (404)"}.get(status, f"HTTP {status}")


async def _get(http: aiohttp.ClientSession, url: str, auth: str) -> tuple[int, Any]:
    try:
        async with http.get(url, headers={"Authorization": auth}, timeout=TIMEOUT) as resp:
            try:
                body = await resp.json(content_type=None)
            except ValueError:
                body = None
            return resp.status, body
    except (aiohttp.ClientError, TimeoutError) as exc:
        return 0, f"unreachable ({type(exc).__name__})"


async def graph_checks(t: Tenant, http: aiohttp.ClientSession) -> list[Check]:
    g = t.graph
    if not (g.azure_tenant_id and g.client_id and g.client_secret_ref):
        return [Check("graph token", "failed", "graph.azure_tenant_id, client_id and client_secret_ref are needed")]
    try:
        cred = ClientSecretTokenCredential(g, resolve_secret(g.client_secret_ref))
    except SecretError as exc:
        return [Check("graph token", "failed", str(exc))]
    out: list[Check] = []
    try:
        try:
            token = await cred.get_token(GRAPH_SCOPE)
        except ConnectorError as exc:
            return [Check("graph token", "failed", str(exc))]
        out.append(Check("graph token", "ok", f"app {g.client_id} in directory {g.azure_tenant_id}"))
        for u in t.users:
            url = f"{g.base_url.rstrip('/')}/users/{quote(u.mailbox)}/contactFolders?$top=1"
            status, body = await _get(http, url, f"Bearer {token.token}")
            ok = status == 200
            out.append(Check(f"mailbox {u.mailbox}", "ok" if ok else "failed",
                             "reachable" if ok else body if status == 0 else _why(status, "mailbox")))
    finally:
        await cred.close()
    return out


async def salesforce_checks(t: Tenant, http: aiohttp.ClientSession) -> list[Check]:
    s = t.salesforce
    try:
        auth = SalesforceAuth.from_endpoint(s, session=http)
    except SecretError as exc:
        return [Check("salesforce token", "failed", str(exc))]
    try:
        token = await auth.token()
    except ConnectorError as exc:
        return [Check("salesforce token", "failed", str(exc))]
    out = [Check("salesforce token", "ok", f"{auth.flow} flow, instance {token.instance_url}")]
    data = f"{token.instance_url}/services/data/v{s.api_version}"
    status, body = await _get(http, f"{data}/sobjects/Contact/describe", token.authorization())
    if status != 200 or not isinstance(body, dict):
        out.append(Check(f"Contact.{s.external_id_field}", "failed",
                         body if status == 0 else _why(status, "Contact describe")))
    else:
        fields = {f.get("name"): f for f in body.get("fields", []) if isinstance(f, dict)}
        f = fields.get(s.external_id_field)
        if f is None:
            out.append(Check(f"Contact.{s.external_id_field}", "failed", "the field does not exist on Contact"))
        elif not f.get("externalId"):
            out.append(Check(f"Contact.{s.external_id_field}", "failed", "exists but is not marked External ID"))
        else:
            out.append(Check(f"Contact.{s.external_id_field}", "ok", "external id field for idempotent upserts"))
    status, _ = await _get(http, f"{data}/sobjects/User/describe", token.authorization())
    if status != 200:
        # The Salesforce emulator has no User sObject (its users live outside the schema).
        out.append(Check("salesforce users", "not checked", f"User is not readable here ({_why(status, 'User')})"))
        return out
    for u in t.users:
        status, body = await _get(http, f"{data}/sobjects/User/{quote(u.salesforce_user_id)}", token.authorization())
        ok = status == 200
        out.append(Check(f"salesforce user {u.salesforce_user_id}", "ok" if ok else "failed",
                         f"user of {u.mailbox}" if ok else body if status == 0 else _why(status, "user")))
    return out


async def online_checks(t: Tenant) -> list[Check]:
    async with aiohttp.ClientSession() as http:
        checks = [*await graph_checks(t, http), *await salesforce_checks(t, http)]
    checks.append(Check("CDC channels, event series", "not checked", "not done yet"))
    return checks
