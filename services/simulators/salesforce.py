"""A stateful fake of the Salesforce REST API for Leads, sending Outbound Messages on every change.

Serves `fake.app` (ASGI). It follows the documentation, not our client:
- OAuth 2.0 client credentials flow, `POST /services/oauth2/token` with a form body
  (Help, "OAuth 2.0 Client Credentials Flow for Server-to-Server Integration",
  https://help.salesforce.com/s/articleView?id=sf.remoteaccess_oauth_client_credentials_flow.htm):
  `access_token`, `signature` (base64 HMAC-SHA256 of `id + issued_at` keyed by the client secret),
  `scope`, `instance_url`, `id`, `token_type`, `issued_at` (ms); wrong credentials are 400
  `invalid_client`. A session expires (default 2 hours, Security Controls) and is then 401
  `INVALID_SESSION_ID`, "Session expired or invalid".
- Records, `sobjects/Lead` POST (201 `{"id","success","errors"}`), GET, PATCH (204), and errors as a
  JSON array of `{message, errorCode, fields}` (REST API Developer Guide, "Working with Records",
  https://developer.salesforce.com/docs/platform/api-rest/guide/using-resources-working-with-records.html,
  and "Status Codes and Error Responses",
  https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/errorcodes.htm).
- `query?q=` answers `totalSize`, `done`, `records` with `attributes`; only the statement the
  client sends is understood (`SELECT ... FROM Lead WHERE Email = '...'`, string literal escapes
  included), anything else is 400 `MALFORMED_QUERY`. Text comparison is case-insensitive, as in SOQL.
- Limits: every REST response carries `Sforce-Limit-Info: api-usage=N/LIMIT` ("Limit Info Header",
  https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/headers_api_usage.htm);
  past the org's allocation a call is 403 `REQUEST_LIMIT_EXCEEDED` "TotalRequests Limit exceeded."
  ("API Request Limits and Allocations"); `GET limits` answers `{"DailyApiRequests": {"Max", "Remaining"}}`,
  the one entry of the real resource we read.

Write semantics: `LastName` and `Company` are required on create (`REQUIRED_FIELD_MISSING`);
`Status` takes the default LeadStatus values only (`INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST`); a
converted lead is read-only (`CANNOT_UPDATE_CONVERTED_LEAD`, "cannot reference converted lead",
Help article 000384333); the converted status is set by conversion only, never by a write. Which
code Salesforce gives for that last one we could not find documented; the fake answers
`FIELD_INTEGRITY_EXCEPTION` (unverified).

`LastModifiedById` is the integration user for API writes and a person for the `user_*` actions, so
sync can recognise echoes of its own writes in the Outbound Messages.
"""

import asyncio
import base64
import hashlib
import hmac
import itertools
import json
import random
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl

import httpx
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from onefunnel.simulators.salesforce_outbound import Delivery, OutboundSender, Value

LEAD_STATUSES = (
    "Open - Not Contacted",
    "Working - Contacted",
    "Closed - Converted",
    "Closed - Not Converted",
)
CONVERTED_STATUS = "Closed - Converted"
OPPORTUNITY_STAGES = (
    "Prospecting", "Qualification", "Needs Analysis", "Value Proposition", "Id. Decision Makers",
    "Perception Analysis", "Proposal/Price Quote", "Negotiation/Review", "Closed Won", "Closed Lost",
)  # fmt: skip
_WRITABLE = frozenset({"FirstName", "LastName", "Company", "Email", "Status", "LeadSource", "OwnerId"})
_READ_ONLY = frozenset({
    "Id", "IsConverted", "ConvertedAccountId", "ConvertedContactId", "ConvertedOpportunityId",
    "CreatedDate", "LastModifiedDate", "LastModifiedById", "SystemModstamp",
})  # fmt: skip
_QUERY = re.compile(
    r"SELECT\s+(?P<fields>\w+(?:\s*,\s*\w+)*)\s+FROM\s+Lead\s+WHERE\s+Email\s*=\s*'(?P<email>(?:[^'\\]|\\.)*)'"
    r"(?:\s+ORDER\s+BY\s+CreatedDate\s+ASC)?(?:\s+LIMIT\s+(?P<limit>\d{1,4}))?\s*",
    re.IGNORECASE | re.DOTALL,
)
_SOQL_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "b": "\b", "f": "\f", '"': '"', "'": "'", "\\": "\\"}
Record = dict[str, Value]


class ApiError(Exception):
    """A refusal in Salesforce's own shape; the `user_*` actions raise it too."""

    def __init__(self, status: int, code: str, message: str, fields: tuple[str, ...] = ()) -> None:
        super().__init__(f"{code}: {message}")
        self.status, self.code, self.message, self.fields = status, code, message, fields

    def response(self) -> JSONResponse:
        body = [{"message": self.message, "errorCode": self.code, "fields": list(self.fields)}]
        return JSONResponse(body, status_code=self.status)


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    status: int


@dataclass(frozen=True)
class Conversion:
    account_id: str
    contact_id: str
    opportunity_id: str


class FakeSalesforce:
    def __init__(
        self,
        *,
        client_id: str = "fake-client-id",
        client_secret: str = "fake-client-secret",  # noqa: S107 (a fake's well-known credentials)
        organization_id: str = "00D000000000062EAA",
        instance_url: str = "https://fake.my.salesforce.com",
        api_version: str = "62.0",
        api_limit: int = 15000,  # a Developer Edition org's daily allocation
        token_ttl: float = 7200.0,
        latency: float = 0.0,
        webhook_url: str | None = None,
        webhook_client: httpx.AsyncClient | None = None,
        webhook_attempts: int = 4,
        webhook_retry_delay: float = 0.01,
        shuffle_webhooks: bool = False,
        read_at_send: bool = True,
        seed: int | None = None,
    ) -> None:
        self.client_id, self.client_secret = client_id, client_secret
        self.organization_id, self.instance_url = organization_id, instance_url
        self.api_limit, self.api_usage, self.token_ttl, self.latency = api_limit, 0, token_ttl, latency
        self.read_at_send = read_at_send
        self.calls: list[Call] = []
        self.records: dict[str, dict[str, Record]] = {
            "Lead": {},
            "Contact": {},
            "Opportunity": {},
            "Account": {},
        }
        self._tokens: dict[str, float] = {}
        self._errors: list[int] = []
        self._limit_storm = 0
        self._counter = itertools.count(random.Random(seed).randrange(10**6))
        self._last_modified = datetime.now(UTC)
        self.integration_user_id = self.new_id("005")
        self.human_user_id = self.new_id("005")
        self._actions = {"Lead": self.new_id("04k"), "Opportunity": self.new_id("04k")}
        self._outbound = OutboundSender(
            url=webhook_url,
            client=webhook_client,
            organization_id=organization_id,
            instance_url=instance_url,
            api_version=api_version,
            attempts=webhook_attempts,
            retry_delay=webhook_retry_delay,
            shuffle_window=0.05 if shuffle_webhooks else 0.0,
            rng=random.Random(seed),
        )
        self.app = _build_app(self)

    # --- test controls -------------------------------------------------------------------------

    def inject_errors(self, status: int, count: int) -> None:
        """Answer the next `count` REST calls with a transient server error."""
        self._errors.extend([status] * count)

    def inject_rate_limit(self, count: int) -> None:
        """Answer the next `count` REST calls 403 REQUEST_LIMIT_EXCEEDED (Salesforce sends no Retry-After)."""
        self._limit_storm += count

    def expire_tokens(self) -> None:
        """End every session, as an admin's "revoke" or the session timeout would."""
        self._tokens = dict.fromkeys(self._tokens, 0.0)

    @property
    def deliveries(self) -> list[Delivery]:
        return self._outbound.deliveries

    async def webhooks_idle(self) -> None:
        """Wait until every Outbound Message was acknowledged or given up on."""
        await self._outbound.idle()

    async def aclose(self) -> None:
        await self._outbound.aclose()

    def snapshot(self) -> dict[str, dict[str, Record]]:
        """A copy of every record by object type and id, for assertions."""
        return {kind: {rid: dict(r) for rid, r in records.items()} for kind, records in self.records.items()}

    # --- user actions in the Salesforce UI -----------------------------------------------------

    def user_creates_lead(self, email: str, status: str = "Open - Not Contacted") -> str:
        fields: Record = {
            "LastName": "Lovelace",
            "Company": "Analytical Engines",
            "Email": email,
            "Status": status,
        }
        return self.create_lead(fields, actor=self.human_user_id)

    def user_sets_status(self, lead_id: str, status: str) -> None:
        self.update_lead(lead_id, {"Status": status}, actor=self.human_user_id)

    def user_converts(self, lead_id: str) -> Conversion:
        """Convert a lead (Convert button): account, contact and an opportunity at Prospecting."""
        lead = self._lead(lead_id)
        now, actor = self._now(), self.human_user_id
        account_id, contact_id = (
            self._insert("Account", {}, actor, now),
            self._insert("Contact", {}, actor, now),
        )
        opportunity: Record = {"StageName": "Prospecting", "IsClosed": False, "IsWon": False}
        opportunity_id = self._insert("Opportunity", opportunity, actor, now)
        lead.update(
            IsConverted=True,
            Status=CONVERTED_STATUS,
            ConvertedAccountId=account_id,
            ConvertedContactId=contact_id,
            ConvertedOpportunityId=opportunity_id,
        )
        self._touch("Lead", lead, actor, now)
        self._touch("Opportunity", self.records["Opportunity"][opportunity_id], actor, now)
        return Conversion(account_id, contact_id, opportunity_id)

    def user_sets_opportunity_stage(self, opportunity_id: str, stage: str) -> None:
        if stage not in OPPORTUNITY_STAGES:
            raise ApiError(
                400,
                "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                f"bad value for restricted picklist field: {stage}",
                ("StageName",),
            )
        opportunity = self.get_record("Opportunity", opportunity_id)
        closed = stage.startswith("Closed ")
        opportunity.update(StageName=stage, IsClosed=closed, IsWon=stage == "Closed Won")
        self._touch("Opportunity", opportunity, self.human_user_id, self._now())

    # --- record rules, shared by the API and the user actions ----------------------------------

    def create_lead(self, fields: Record, *, actor: str) -> str:
        _check_fields(fields)
        missing = tuple(name for name in ("LastName", "Company") if not fields.get(name))
        if missing:
            raise ApiError(
                400, "REQUIRED_FIELD_MISSING", f"Required fields are missing: [{', '.join(missing)}]", missing
            )
        fields.setdefault("Status", LEAD_STATUSES[0])  # the picklist's default value
        _check_status(fields)
        defaults: Record = dict.fromkeys(("FirstName", "Email", "LeadSource", "ConvertedAccountId"))
        lead: Record = {
            **defaults,
            "OwnerId": actor,
            "IsConverted": False,
            "ConvertedContactId": None,
            "ConvertedOpportunityId": None,
            **fields,
        }
        lead_id = self._insert("Lead", lead, actor, self._now())
        self._touch("Lead", self.records["Lead"][lead_id], actor, None)
        return lead_id

    def update_lead(self, lead_id: str, fields: Record, *, actor: str) -> None:
        lead = self._lead(lead_id)
        if lead["IsConverted"]:
            raise ApiError(400, "CANNOT_UPDATE_CONVERTED_LEAD", "cannot reference converted lead")
        _check_fields(fields)
        _check_status(fields)
        lead.update(fields)
        # A workflow rule "created, and every time it's edited" fires even when nothing changed.
        self._touch("Lead", lead, actor, self._now())

    def new_id(self, prefix: str) -> str:
        """An 18-character Salesforce id: key prefix, pod, counter, and the case-encoding suffix."""
        number, digits = next(self._counter), ""
        for _ in range(10):
            number, digit = divmod(number, 62)
            digits = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"[digit] + digits
        short = f"{prefix}5g{digits}"
        suffix = ""
        for chunk in (short[0:5], short[5:10], short[10:15]):
            bits = sum(1 << i for i, char in enumerate(chunk) if "A" <= char <= "Z")
            suffix += "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"[bits]
        return short + suffix

    def _insert(self, kind: str, record: Record, actor: str, now: datetime) -> str:
        record_id = self.new_id(
            {"Lead": "00Q", "Contact": "003", "Opportunity": "006", "Account": "001"}[kind]
        )
        record.update(Id=record_id, CreatedDate=now, LastModifiedDate=now, SystemModstamp=now)
        record["LastModifiedById"] = actor
        self.records[kind][record_id] = record
        return record_id

    def _touch(self, kind: str, record: Record, actor: str, now: datetime | None) -> None:
        if now is not None:
            record.update(LastModifiedDate=now, SystemModstamp=now, LastModifiedById=actor)
        record_id, records = str(record["Id"]), self.records[kind]
        copy = None if self.read_at_send else dict(record)

        def read() -> Record | None:
            return records.get(record_id) if copy is None else copy

        self._outbound.send(
            notification_id=self.new_id("04l"), action_id=self._actions[kind], object_type=kind, read=read
        )

    def _now(self) -> datetime:
        # Strictly increasing at millisecond precision, so LastModifiedDate orders changes.
        now = datetime.now(UTC)
        now = now.replace(microsecond=now.microsecond // 1000 * 1000)
        self._last_modified = max(now, self._last_modified + timedelta(milliseconds=1))
        return self._last_modified

    def _lead(self, lead_id: str) -> Record:
        return self.get_record("Lead", lead_id)

    def get_record(self, kind: str, record_id: str) -> Record:
        # A 15-character id names the same record as its 18-character form.
        for known_id, record in self.records[kind].items():
            if len(record_id) in (15, 18) and known_id[:15] == record_id[:15]:
                return record
        raise ApiError(404, "NOT_FOUND", "The requested resource does not exist")

    # --- the API gate: faults, sessions, limits ------------------------------------------------

    def issue_token(self, form: dict[str, str], login_url: str) -> JSONResponse:
        if form.get("grant_type") != "client_credentials":
            return JSONResponse(
                {"error": "unsupported_grant_type", "error_description": "grant type not supported"}, 400
            )
        good_id = hmac.compare_digest(form.get("client_id", "").encode(), self.client_id.encode())
        good_secret = hmac.compare_digest(form.get("client_secret", "").encode(), self.client_secret.encode())
        if not (good_id and good_secret):
            return JSONResponse(
                {"error": "invalid_client", "error_description": "invalid client credentials"}, 400
            )
        token = f"{self.organization_id[:15]}!{secrets.token_urlsafe(48)}"
        self._tokens[token] = time.monotonic() + self.token_ttl
        identity = f"{login_url}/id/{self.organization_id}/{self.integration_user_id}"
        issued_at = str(int(time.time() * 1000))
        mac = hmac.new(self.client_secret.encode(), (identity + issued_at).encode(), hashlib.sha256).digest()
        return JSONResponse(
            {
                "access_token": token,
                "signature": base64.b64encode(mac).decode(),
                "scope": "api",
                "instance_url": self.instance_url,
                "id": identity,
                "token_type": "Bearer",
                "issued_at": issued_at,
            }
        )

    def gate(self, request: Request) -> ApiError | None:
        """Refuse a REST call the way Salesforce would before it reaches the record, or count it."""
        if self._errors:
            status = self._errors.pop(0)
            code = "SERVER_UNAVAILABLE" if status == 503 else "UNKNOWN_EXCEPTION"
            return ApiError(
                status,
                code,
                "An unexpected error occurred. Please include this ErrorId if you contact support.",
            )
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or self._tokens.get(token, 0.0) < time.monotonic():
            return ApiError(401, "INVALID_SESSION_ID", "Session expired or invalid")
        if self._limit_storm or self.api_usage >= self.api_limit:
            self._limit_storm = max(self._limit_storm - 1, 0)
            return ApiError(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.")
        self.api_usage += 1
        return None


def _check_fields(fields: Record) -> None:
    unknown = [name for name in fields if name not in _WRITABLE | _READ_ONLY]
    if unknown:
        raise ApiError(400, "INVALID_FIELD", f"No such column '{unknown[0]}' on sobject of type Lead")
    read_only = tuple(name for name in fields if name in _READ_ONLY)
    if read_only:
        raise ApiError(
            400,
            "INVALID_FIELD_FOR_INSERT_UPDATE",
            f"Unable to create/update fields: {', '.join(read_only)}.",
            read_only,
        )
    if not all(value is None or isinstance(value, str) for value in fields.values()):
        raise ApiError(400, "JSON_PARSER_ERROR", "Lead fields take strings or null")


def _check_status(fields: Record) -> None:
    if "Status" not in fields:
        return
    status = fields["Status"]
    if status not in LEAD_STATUSES:
        raise ApiError(
            400,
            "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
            f"bad value for restricted picklist field: {status}",
            ("Status",),
        )
    if status == CONVERTED_STATUS:
        raise ApiError(
            400, "FIELD_INTEGRITY_EXCEPTION", "A converted status is set by converting the lead", ("Status",)
        )


def _soql_lead_query(statement: str) -> tuple[list[str], str, int]:
    """Read `SELECT f, ... FROM Lead WHERE Email = '...' [ORDER BY CreatedDate ASC] [LIMIT n]`."""
    match = _QUERY.fullmatch(statement.strip())
    if match is None:
        raise ApiError(
            400, "MALFORMED_QUERY", "unexpected token: the fake understands only the client's query"
        )
    fields = [name.strip() for name in match["fields"].split(",")]
    if any(name not in _WRITABLE | _READ_ONLY for name in fields):
        raise ApiError(400, "INVALID_FIELD", "No such column on entity 'Lead'")
    email, escaped = "", iter(match["email"])
    for char in escaped:
        if char == "\\":
            char = _SOQL_ESCAPES.get(next(escaped), "")
            if not char:  # \_ and \% exist only in LIKE patterns; anything else is malformed
                raise ApiError(400, "MALFORMED_QUERY", "Invalid string literal: illegal escape sequence")
        email += char
    return fields, email, int(match["limit"] or 2000)


def _json_value(value: Value) -> str | bool | None:
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}+0000"
    return value


def _build_app(fake: FakeSalesforce) -> FastAPI:
    app = FastAPI(title="fake Salesforce")
    data = "/services/data/{version}"

    @app.middleware("http")
    async def gate(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        if fake.latency:
            await asyncio.sleep(fake.latency)
        if request.url.path.startswith("/services/data/"):
            refusal = fake.gate(request)
            response = refusal.response() if refusal else await call_next(request)
            response.headers["Sforce-Limit-Info"] = f"api-usage={fake.api_usage}/{fake.api_limit}"
        else:
            response = await call_next(request)
        fake.calls.append(Call(request.method, request.url.path, response.status_code))
        return response

    @app.exception_handler(ApiError)
    async def api_error(_: Request, error: ApiError) -> JSONResponse:
        return error.response()

    @app.exception_handler(HTTPException)
    async def not_found(_: Request, error: HTTPException) -> JSONResponse:
        code = "METHOD_NOT_ALLOWED" if error.status_code == 405 else "NOT_FOUND"
        return ApiError(error.status_code, code, "The requested resource does not exist").response()

    @app.post("/services/oauth2/token")
    async def token(request: Request) -> JSONResponse:
        form = dict(parse_qsl((await request.body()).decode("utf-8", "replace"), keep_blank_values=True))
        return fake.issue_token(form, str(request.base_url).rstrip("/"))

    @app.get(data + "/limits")
    async def limits(version: str) -> dict[str, object]:
        _version(version)
        return {"DailyApiRequests": {"Max": fake.api_limit, "Remaining": fake.api_limit - fake.api_usage}}

    @app.get(data + "/query")
    async def query(version: str, request: Request) -> dict[str, object]:
        _version(version)
        fields, email, limit = _soql_lead_query(request.query_params.get("q", ""))
        # Records are kept in creation order, which is ORDER BY CreatedDate ASC.
        leads = [r for r in fake.records["Lead"].values() if str(r["Email"] or "").lower() == email.lower()]
        records = [
            {"attributes": {"type": "Lead", "url": f"/services/data/{version}/sobjects/Lead/{lead['Id']}"}}
            | {name: _json_value(lead[name]) for name in fields}
            for lead in leads[:limit]
        ]
        return {"totalSize": len(records), "done": True, "records": records}

    @app.post(data + "/sobjects/Lead", status_code=201)
    async def create(version: str, request: Request) -> dict[str, object]:
        _version(version)
        lead_id = fake.create_lead(await _fields(request), actor=fake.integration_user_id)
        return {"id": lead_id, "success": True, "errors": []}

    @app.get(data + "/sobjects/{kind}/{record_id}")
    async def read(version: str, kind: str, record_id: str) -> dict[str, object]:
        _version(version)
        if kind not in ("Lead", "Opportunity"):
            raise ApiError(404, "NOT_FOUND", "The requested resource does not exist")
        record = fake.get_record(kind, record_id)
        url = f"/services/data/{version}/sobjects/{kind}/{record['Id']}"
        return {"attributes": {"type": kind, "url": url}} | {k: _json_value(v) for k, v in record.items()}

    @app.delete(data + "/sobjects/Lead/{record_id}", status_code=204)
    async def delete(version: str, record_id: str) -> Response:
        _version(version)
        fake.get_record("Lead", record_id)  # 404 NOT_FOUND when it is not there
        del fake.records["Lead"][record_id]  # to the Recycle Bin; no Outbound Message for a delete
        return Response(status_code=204)

    @app.patch(data + "/sobjects/Lead/{record_id}", status_code=204)
    async def update(version: str, record_id: str, request: Request) -> Response:
        _version(version)
        fake.update_lead(record_id, await _fields(request), actor=fake.integration_user_id)
        return Response(status_code=204)

    return app


def _version(version: str) -> None:
    if not re.fullmatch(r"v\d{2}\.0", version):
        raise ApiError(404, "NOT_FOUND", "The requested resource does not exist")


async def _fields(request: Request) -> Record:
    try:
        body = json.loads(await request.body())
    except ValueError:
        raise ApiError(400, "JSON_PARSER_ERROR", "The request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "JSON_PARSER_ERROR", "Expected a JSON object of fields")
    return dict(body)
