"""Salesforce: the Lead's `Status` through the REST API, as an OAuth 2.0 client-credentials app.

Sources:
- Token: `POST {login URL}/services/oauth2/token` with `grant_type=client_credentials`, `client_id`,
  `client_secret`; the answer carries `access_token` and `instance_url` (Help, "OAuth 2.0 Client
  Credentials Flow for Server-to-Server Integration",
  https://help.salesforce.com/s/articleView?id=sf.remoteaccess_oauth_client_credentials_flow.htm).
  Salesforce documents this flow against the org's My Domain login URL, so set `login_url` to it;
  `login.salesforce.com` is only the default. The flow has no refresh token: when a session
  expires (401 `INVALID_SESSION_ID`) we ask for a new token once and repeat the call.
- Records and errors: REST API Developer Guide, "Working with Records" (PATCH answers 204, POST 201
  `{"id", "success", "errors"}`), "Status Codes and Error Responses" (a JSON array of
  `{message, errorCode, fields}`), and "Limit Info Header" (`Sforce-Limit-Info: api-usage=N/LIMIT`
  on every response), https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/.
- SOQL string literals escape `\\` and `'` (and `"`, `\\n`, `\\r`, `\\t`, `\\b`, `\\f`) with a
  backslash (SOQL and SOSL Reference, "Quoted String Escape Sequences").

Salesforce requires `LastName` and `Company` on every Lead; a person who reaches sync with only an
email gets the `placeholder` in both, for sales to fill in.

Errors: `REQUEST_LIMIT_EXCEEDED` (403, not 429) is `RateLimited`. Salesforce sends no Retry-After:
"TotalRequests" counts calls over a rolling 24 hours, so capacity comes back as old calls age out,
not at a reset time; we wait `limit_wait` (60 s) between tries, long enough not to spend every
refused try at once, short enough to resume soon after capacity frees. "ConcurrentRequests" (long
calls in flight) clears in seconds, so it waits at most 5 s. Timeouts, connection errors and 5xx
are retriable; everything else Salesforce refuses (`CANNOT_UPDATE_CONVERTED_LEAD`,
`INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST`, `NOT_FOUND`, `invalid_client`, ...) is permanent and
carries Salesforce's code.
"""

import asyncio
import logging
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from onefunnel.shared.events import ObjectType, SourceSystem
from onefunnel.sync.platforms.base import PlatformError, RateLimited, StageWrite
from onefunnel.sync.platforms.retrying import with_retries
from onefunnel.sync.platforms.throttle import Throttle

COLLECTION_LIMIT = 200  # records per sObject Collections request
_EMAILS_PER_QUERY = 50  # keeps a query well under SOQL's 100,000 characters and its 2,000 rows a page
logger = logging.getLogger(__name__)

LOGIN_URL = "https://login.salesforce.com"
API_VERSION = "62.0"
PLACEHOLDER = "[not provided]"
_API_USAGE = re.compile(r"api-usage=(\d+)/(\d+)")
_SOQL_ESCAPES = str.maketrans(
    {"\\": "\\\\", "'": "\\'", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f"}
)


@dataclass(frozen=True)
class ApiUsage:
    """The org's API calls in the last 24 hours and its allocation, from `Sforce-Limit-Info`."""

    used: int
    limit: int


def soql_string(value: str) -> str:
    """Escape a value for the inside of a SOQL string literal."""
    return value.translate(_SOQL_ESCAPES)


class SalesforceClient:
    system = SourceSystem.SALESFORCE
    object_type = ObjectType.LEAD

    def __init__(
        self,
        *,
        http: httpx.AsyncClient,
        client_id: str,
        client_secret: str,
        throttle: Throttle,
        instance_url: str | None = None,  # None: the instance_url of the token answer
        login_url: str = LOGIN_URL,
        api_version: str = API_VERSION,
        attempts: int = 5,
        initial_wait: float = 0.5,
        max_wait: float = 60.0,
        limit_wait: float = 60.0,
        timeout: float = 10.0,
        placeholder: str = PLACEHOLDER,
    ) -> None:
        self._http, self._throttle = http, throttle
        self._credentials = {
            "grant_type": "client_credentials",
            "client_id": client_id,
            "client_secret": client_secret,
        }
        self._instance_url = instance_url.rstrip("/") if instance_url else None
        self._token_url = f"{login_url.rstrip('/')}/services/oauth2/token"
        self._api_path = f"/services/data/v{api_version}"
        self._attempts, self._initial_wait, self._max_wait = attempts, initial_wait, max_wait
        self._limit_wait, self._timeout, self._placeholder = limit_wait, timeout, placeholder
        self._token: str | None = None
        self._token_lock = asyncio.Lock()
        self._api_usage: ApiUsage | None = None

    @property
    def api_usage(self) -> ApiUsage | None:
        """The last `Sforce-Limit-Info` usage seen, or None before the first REST answer."""
        return self._api_usage

    async def find_by_emails(self, emails: list[str]) -> dict[str, str]:
        """One query per 50 emails; for each email, its oldest open lead, else its oldest converted one (still
        this person; writes to it are refused)."""
        found: dict[str, str] = {}
        for start in range(0, len(emails), _EMAILS_PER_QUERY):
            literals = ", ".join(f"'{soql_string(e)}'" for e in emails[start : start + _EMAILS_PER_QUERY])
            # Not injection: each value is escaped for its literal (SOQL has no bind variables over REST).
            statement = (
                f"SELECT Id, Email, IsConverted FROM Lead WHERE Email IN ({literals}) "  # noqa: S608
                "ORDER BY CreatedDate ASC LIMIT 2000"
            )
            body = await self._call("GET", "/query", params={"q": statement})
            records = body.get("records") if isinstance(body, dict) else None
            if not isinstance(records, list) or not all(isinstance(r, dict) and r.get("Id") for r in records):
                raise PlatformError("Salesforce query answer has no records list", retriable=False)
            for record in sorted(
                records, key=lambda r: r.get("IsConverted") is not False
            ):  # stable: oldest first
                found.setdefault(str(record.get("Email") or "").casefold(), str(record["Id"]))
        return found

    async def create(self, *, email: str, stage_value: str) -> str:
        fields = {
            "LastName": self._placeholder,
            "Company": self._placeholder,
            "Email": email,
            "Status": stage_value,
        }
        body = await self._call("POST", "/sobjects/Lead", json=fields)
        if not isinstance(body, dict) or not isinstance(body.get("id"), str) or not body["id"]:
            raise PlatformError("Salesforce create answer has no id", retriable=False)
        logger.info("salesforce lead created", extra={"record_id": body["id"], "stage": stage_value})
        return str(body["id"])

    async def write_stage(self, *, record_id: str, stage_value: str, backward: bool) -> None:
        # Backward moves need nothing special: Status is a plain picklist with no ordering rules.
        await self._call("PATCH", f"/sobjects/Lead/{quote(record_id, safe='')}", json={"Status": stage_value})
        logger.info("salesforce lead status written", extra={"record_id": record_id, "stage": stage_value})

    async def write_stages(self, writes: list[StageWrite]) -> list[PlatformError | None]:
        """Up to 200 leads' `Status` per sObject Collections PATCH, each saved alone (allOrNone false)."""
        outcomes: list[PlatformError | None] = []
        for start in range(0, len(writes), COLLECTION_LIMIT):
            chunk = writes[start : start + COLLECTION_LIMIT]
            records = [
                {"attributes": {"type": "Lead"}, "id": w.record_id, "Status": w.stage_value} for w in chunk
            ]
            try:
                body = await self._call(
                    "PATCH", "/composite/sobjects", json={"allOrNone": False, "records": records}
                )
            except PlatformError as failed:  # the whole call failed: every write of it did
                outcomes += [failed] * len(chunk)
                continue
            if not isinstance(body, list) or len(body) != len(chunk):
                unexpected = PlatformError(
                    "Salesforce collection answer is not a SaveResult per record", retriable=False
                )
                outcomes += [unexpected] * len(chunk)
                continue
            outcomes += [_saved(w, result) for w, result in zip(chunk, body, strict=True)]
        return outcomes

    async def delete(self, record_id: str) -> None:
        """Delete the lead (it goes to the Recycle Bin); a lead already gone counts as deleted."""
        try:
            await self._call("DELETE", f"/sobjects/Lead/{quote(record_id, safe='')}")
        except PlatformError as error:
            if error.code not in ("NOT_FOUND", "ENTITY_IS_DELETED"):
                raise

    async def ready(self) -> bool:
        try:
            await self._request("GET", "/limits")  # cheap, and proves the token works for REST
        except PlatformError:
            return False
        return True

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        return await with_retries(
            lambda: self._request(method, path, **kwargs),
            attempts=self._attempts,
            initial_wait=self._initial_wait,
            max_wait=self._max_wait,
        )

    async def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        """One try: a token if we have none, the call, and one token refresh if the session ended."""
        token = await self._session(stale=None)
        response = await self._send(method, path, token, **kwargs)
        if response.status_code == 401 and _error(response)[0] == "INVALID_SESSION_ID":
            response = await self._send(method, path, await self._session(stale=token), **kwargs)
        return self._result(method, path, response)

    async def _session(self, *, stale: str | None) -> str:
        async with self._token_lock:  # concurrent calls share one token request
            if self._token is None or self._token == stale:
                self._token = await self._new_token()
            return self._token

    async def _new_token(self) -> str:
        try:
            response = await self._http.post(self._token_url, data=self._credentials, timeout=self._timeout)
        except httpx.TransportError as error:
            raise PlatformError(
                f"Salesforce token request failed: {type(error).__name__}", retriable=True
            ) from None
        body = _body(response)
        if response.is_success and isinstance(body, dict) and isinstance(body.get("access_token"), str):
            if self._instance_url is None and isinstance(body.get("instance_url"), str):
                self._instance_url = body["instance_url"].rstrip("/")
            return str(body["access_token"])
        code = str(body.get("error")) if isinstance(body, dict) and body.get("error") else None
        raise PlatformError(
            f"Salesforce refused a token: {response.status_code} {code}",
            retriable=response.status_code >= 500,
            status=response.status_code,
            code=code,
        )

    async def _send(self, method: str, path: str, token: str, **kwargs: Any) -> httpx.Response:
        if self._instance_url is None:
            raise PlatformError("no Salesforce instance URL configured or received", retriable=False)
        url = f"{self._instance_url}{self._api_path}{path}"
        headers = {"Authorization": f"Bearer {token}"}
        async with self._throttle.slot():
            try:
                response = await self._http.request(
                    method, url, headers=headers, timeout=self._timeout, **kwargs
                )
            except httpx.TransportError as error:
                raise PlatformError(
                    f"Salesforce {method} failed: {type(error).__name__}", retriable=True
                ) from None
        usage = _API_USAGE.search(response.headers.get("sforce-limit-info", ""))
        if usage:
            self._api_usage = ApiUsage(used=int(usage[1]), limit=int(usage[2]))
        return response

    def _result(self, method: str, path: str, response: httpx.Response) -> Any:
        if response.is_success:
            return None if response.status_code == 204 or not response.content else _json(response)
        status = response.status_code
        code, message = _error(response)
        what = f"Salesforce {method} {path.partition('?')[0]} answered {status} {code}"
        if code == "REQUEST_LIMIT_EXCEEDED" or status == 429:
            wait = (
                min(self._limit_wait, 5.0) if message.startswith("ConcurrentRequests") else self._limit_wait
            )
            raise RateLimited(what, retry_after=_retry_after(response) or wait, status=status, code=code)
        if status >= 500:
            raise PlatformError(what, retriable=True, status=status, code=code)
        logger.warning("salesforce refused a call", extra={"status": status, "code": code, "method": method})
        raise PlatformError(what, retriable=False, status=status, code=code)


def _saved(write: StageWrite, result: Any) -> PlatformError | None:
    """A SaveResult: None when saved, else Salesforce's first error for the record (permanent)."""
    if isinstance(result, dict) and result.get("success") is True:
        logger.info(
            "salesforce lead status written", extra={"record_id": write.record_id, "stage": write.stage_value}
        )
        return None
    errors = result.get("errors") if isinstance(result, dict) else None
    first = errors[0] if isinstance(errors, list) and errors and isinstance(errors[0], dict) else {}
    code = str(first.get("statusCode") or "UNEXPECTED_RESPONSE")
    return PlatformError(
        f"Salesforce refused lead {write.record_id}: {code}", retriable=False, status=200, code=code
    )


def _body(response: httpx.Response) -> Any:
    """The JSON body, or None when there is none to read."""
    try:
        return response.json()
    except ValueError:
        return None


def _json(response: httpx.Response) -> Any:
    body = _body(response)
    if body is None:
        # A 2xx that is not JSON is a proxy or maintenance page, not Salesforce: worth another try.
        raise PlatformError("Salesforce answered something that is not JSON", retriable=True)
    return body


def _error(response: httpx.Response) -> tuple[str | None, str]:
    """Salesforce's errorCode and message from `[{"message", "errorCode", "fields"}]`, if present."""
    body = _body(response)
    first = body[0] if isinstance(body, list) and body and isinstance(body[0], dict) else {}
    code, message = first.get("errorCode"), first.get("message")
    return (code if isinstance(code, str) else None), (message if isinstance(message, str) else "")


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "")
    return float(value) if value.isdigit() else None
