"""HubSpot contacts through the CRM v3 objects API: sync's `PlatformClient` for HubSpot.

Docs: https://developers.hubspot.com/docs/api/crm/contacts (create, update, batch read and update),
.../api/crm/properties (readiness), .../api/usage-details (limits, the 429 body) and
.../faq/api-error-responses (`status`, `message`, `correlationId`, `category`).

- Auth: a private app access token, `Authorization: Bearer <token>`. Private app tokens do not expire, so
  there is nothing to refresh; a 401 is permanent until an operator rotates the token. (An OAuth access
  token expires after `expires_in` and would need the refresh flow, which this client does not do.)
- `find_by_emails` reads up to 100 contacts per `POST .../contacts/batch/read` with `idProperty=email`
  (email is a unique property of contacts): one request against the rate limit, read from the records
  themselves, so neither search's own limit (5 requests/s per token) nor its index lag applies.
- `create` answers HubSpot's 409 CONFLICT ("Contact already exists. Existing ID: <id>") with that id, so a
  create retried after a lost answer, or racing another writer, is idempotent. The existing contact keeps
  its own stage: sync reads it and decides what to write.
- `write_stages`: forward writes go up to 100 per `POST .../contacts/batch/update` (one request against
  the rate limits); HubSpot answers 200, or 207 with `errors` naming refused ids in `context.ids`
  (changelog "Simplifying batch update response codes for CRM v3 APIs"). Each result's stage is checked
  as below.
- `write_stage`: `lifecyclestage` only moves forward, and HubSpot answers 200 to an earlier value while
  leaving the stage unchanged. A backward move is therefore "" in one request, then the value in a second
  (never one batch: a batch's order is not guaranteed). If the answer shows another stage than the one
  written, the write was ignored: a permanent `PlatformError` with code LIFECYCLESTAGE_NOT_MOVED.
- Errors: 429 is `RateLimited` with `Retry-After` (else one second, or an hour for the DAILY policy);
  5xx, timeouts and connection failures are retriable; any other 4xx is permanent, its code HubSpot's
  `category`. Messages carry status, category and correlationId, never HubSpot's text (it can echo emails).
- Limits: `throttle` for the per-app rolling limit (e.g. 190 per 10 s for a Professional private app).
"""

import asyncio
import re
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from onefunnel.shared.events import ObjectType, SourceSystem
from onefunnel.sync.platforms.base import PlatformError, RateLimited, StageWrite
from onefunnel.sync.platforms.retrying import with_retries
from onefunnel.sync.platforms.throttle import Throttle

DEFAULT_BASE_URL = "https://api.hubapi.com"
_CONTACTS = "/crm/v3/objects/contacts"
_EXISTING_ID = re.compile(r"Existing ID: (\d+)")
BATCH_LIMIT = 100  # records per batch call (HubSpot's CRM batch endpoints)
_DAILY_RETRY_AFTER = 3600.0  # the daily limit resets at midnight in the portal's time zone; try hourly
_Model = TypeVar("_Model", bound=BaseModel)


class _Answer(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class _Contact(_Answer):
    id: str
    properties: dict[str, str | None] = Field(default_factory=dict)


class _BatchError(_Answer):
    category: str | None = None
    context: dict[str, list[str]] = Field(default_factory=dict)


class _BatchAnswer(_Answer):
    results: list[_Contact] = Field(default_factory=list)
    errors: list[_BatchError] = Field(default_factory=list)


class _Property(_Answer):
    name: str


class _Error(_Answer):
    message: str = ""
    category: str | None = None
    error_type: str | None = Field(default=None, alias="errorType")
    policy_name: str | None = Field(default=None, alias="policyName")
    correlation_id: str | None = Field(default=None, alias="correlationId")


class HubSpotClient:
    """Find, create and move HubSpot contacts' `lifecyclestage` through the CRM v3 API."""

    system = SourceSystem.HUBSPOT
    object_type = ObjectType.CONTACT

    def __init__(
        self,
        *,
        http: httpx.AsyncClient,
        access_token: str,
        throttle: Throttle,
        base_url: str = DEFAULT_BASE_URL,
        attempts: int = 5,
        initial_wait: float = 0.5,
        max_wait: float = 30.0,
        timeout: float = 10.0,
    ) -> None:
        self._http = http
        self._headers = {"Authorization": f"Bearer {access_token}", "Accept": "application/json"}
        self._throttle = throttle
        self._base_url = base_url.rstrip("/")
        self._attempts, self._initial_wait, self._max_wait = attempts, initial_wait, max_wait
        self._timeout = timeout

    async def find_by_emails(self, emails: list[str]) -> dict[str, str]:
        """Up to 100 contacts per batch read by `idProperty=email`; unknown emails are left out."""
        wanted = list(dict.fromkeys(email.casefold() for email in emails))
        found: dict[str, str] = {}
        for start in range(0, len(wanted), BATCH_LIMIT):
            body = {
                "idProperty": "email",
                "inputs": [{"id": email} for email in wanted[start : start + BATCH_LIMIT]],
                "properties": ["email"],
            }
            response = await self._call("POST", f"{_CONTACTS}/batch/read", body=body, accept={207})
            for contact in _parse(_BatchAnswer, response).results:
                found[(contact.properties.get("email") or "").casefold()] = contact.id
        return found

    async def create(self, *, email: str, stage_value: str) -> str:
        """Create a contact at this stage, or return the id of the contact that already has the email."""
        body = {"properties": {"email": email, "lifecyclestage": stage_value}}
        response = await self._call("POST", _CONTACTS, body=body, accept={409})
        if response.status_code != 409:
            return _parse(_Contact, response).id
        existing = _EXISTING_ID.search(_error(response).message)
        if existing is None:
            raise _permanent(response, what="POST contact")
        return existing.group(1)

    async def write_stage(self, *, record_id: str, stage_value: str, backward: bool) -> None:
        """Set `lifecyclestage`; a backward move clears it in one request and sets it in a second."""
        if backward:
            await self._set_stage(record_id, "")
        await self._set_stage(record_id, stage_value)

    async def write_stages(self, writes: list[StageWrite]) -> list[PlatformError | None]:
        """Set `lifecyclestage` on up to 100 contacts per batch update call (each contact once per call)."""
        outcomes: dict[int, PlatformError | None] = {}
        for chunk in _chunks(writes):
            try:
                response = await self._call(
                    "POST", f"{_CONTACTS}/batch/update", body=_inputs(chunk), accept={207}
                )
            except PlatformError as error:  # the whole call failed: every write of it did
                outcomes |= {i: error for i, _ in chunk}
                continue
            answer = _parse(_BatchAnswer, response)
            stages = {contact.id: contact.properties.get("lifecyclestage") for contact in answer.results}
            refused = {record: e for e in answer.errors for record in e.context.get("ids", [])}
            for i, write in chunk:
                outcomes[i] = _batch_outcome(write, stages, refused, status=response.status_code)
        return [outcomes[i] for i in range(len(writes))]

    async def delete(self, record_id: str) -> None:
        """Archive the contact (HubSpot's delete); 204 whether or not it still existed."""
        await self._call("DELETE", f"{_CONTACTS}/{quote(record_id, safe='')}", accept={404})

    async def ready(self) -> bool:
        """Whether HubSpot accepts our token: one read of the `lifecyclestage` definition, no retries."""
        try:
            response = await self._call("GET", "/crm/v3/properties/contacts/lifecyclestage", attempts=1)
            _parse(_Property, response)
        except PlatformError:
            return False
        return True

    async def _set_stage(self, record_id: str, value: str) -> None:
        body = {"properties": {"lifecyclestage": value}}
        response = await self._call("PATCH", f"{_CONTACTS}/{quote(record_id, safe='')}", body=body)
        stage = _parse(_Contact, response).properties.get("lifecyclestage", value)
        if (stage or "") != value:
            raise _not_moved(record_id, stage, status=response.status_code)

    async def _call(
        self,
        method: str,
        path: str,
        *,
        body: dict[str, Any] | None = None,
        accept: set[int] | None = None,
        attempts: int | None = None,
    ) -> httpx.Response:
        """One API call under the throttle, retried while HubSpot's answer says it may succeed later."""
        what = f"{method} {path}"  # ids only: an email never goes into a path

        async def once() -> httpx.Response:
            async with self._throttle.slot():
                try:
                    # httpx times each read and write; the outer bound also covers a trickling answer.
                    async with asyncio.timeout(self._timeout):
                        response = await self._http.request(
                            method,
                            self._base_url + path,
                            json=body,
                            headers=self._headers,
                            timeout=self._timeout,
                        )
                except (TimeoutError, httpx.TimeoutException):
                    raise PlatformError(f"HubSpot {what} timed out", retriable=True) from None
                except httpx.TransportError as exc:
                    raise PlatformError(
                        f"HubSpot {what} failed: {type(exc).__name__}", retriable=True
                    ) from None
            if response.is_success or response.status_code in (accept or set()):
                return response
            raise _classify(response, what=what)

        return await with_retries(
            once,
            attempts=attempts or self._attempts,
            initial_wait=self._initial_wait,
            max_wait=self._max_wait,
        )


def _chunks(writes: list[StageWrite]) -> list[list[tuple[int, StageWrite]]]:
    """The writes, numbered, in calls of at most BATCH_LIMIT; a contact named twice goes in a later call."""
    chunks: list[list[tuple[int, StageWrite]]] = []
    for i, write in enumerate(writes):
        fits = (
            c for c in chunks if len(c) < BATCH_LIMIT and all(w.record_id != write.record_id for _, w in c)
        )
        chunk = next(fits, None)
        if chunk is None:
            chunk = []
            chunks.append(chunk)
        chunk.append((i, write))
    return chunks


def _inputs(chunk: list[tuple[int, StageWrite]]) -> dict[str, Any]:
    return {
        "inputs": [{"id": w.record_id, "properties": {"lifecyclestage": w.stage_value}} for _, w in chunk]
    }


def _batch_outcome(
    write: StageWrite, stages: dict[str, str | None], refused: dict[str, _BatchError], *, status: int
) -> PlatformError | None:
    if write.record_id in refused:
        category = refused[write.record_id].category
        message = f"HubSpot batch update refused contact {write.record_id}: {category}"
        return PlatformError(message, retriable=False, status=status, code=category)
    if write.record_id not in stages:
        message = f"HubSpot batch update answered {status} without contact {write.record_id}"
        return PlatformError(message, retriable=False, status=status, code="UNEXPECTED_RESPONSE")
    if (stages[write.record_id] or "") != write.stage_value:
        return _not_moved(write.record_id, stages[write.record_id], status=status)
    return None


def _not_moved(record_id: str, stage: str | None, *, status: int) -> PlatformError:
    return PlatformError(
        f"HubSpot kept contact {record_id} at {stage!r}: lifecyclestage only moves forward",
        retriable=False,
        status=status,
        code="LIFECYCLESTAGE_NOT_MOVED",
    )


def _classify(response: httpx.Response, *, what: str) -> PlatformError:
    status, error = response.status_code, _error(response)
    if status == 429:
        message = f"HubSpot {what} rate limited ({error.policy_name}, correlationId {error.correlation_id})"
        code = error.policy_name or error.error_type
        return RateLimited(message, retry_after=_retry_after(response, error), status=status, code=code)
    if status >= 500:
        message = f"HubSpot {what} answered {status} (correlationId {error.correlation_id})"
        return PlatformError(message, retriable=True, status=status, code=error.category)
    return _permanent(response, what=what)


def _permanent(response: httpx.Response, *, what: str) -> PlatformError:
    error = _error(response)
    message = f"HubSpot {what} answered {response.status_code} {error.category or ''}".rstrip()
    message += f" (correlationId {error.correlation_id})"
    return PlatformError(message, retriable=False, status=response.status_code, code=error.category)


def _retry_after(response: httpx.Response, error: _Error) -> float:
    try:
        return max(float(response.headers["retry-after"]), 0.0)
    except (KeyError, ValueError):
        return _DAILY_RETRY_AFTER if error.policy_name == "DAILY" else 1.0


def _error(response: httpx.Response) -> _Error:
    """HubSpot's error body; every field is optional, as its docs ask parsers to assume."""
    try:
        return _Error.model_validate_json(response.content)
    except ValidationError:
        return _Error()


def _parse(model: type[_Model], response: httpx.Response) -> _Model:
    try:
        return model.model_validate_json(response.content)
    except ValidationError:
        raise PlatformError(
            f"HubSpot answered {response.status_code} with a body that is not a {model.__name__.strip('_')}",
            retriable=False,
            status=response.status_code,
            code="UNEXPECTED_RESPONSE",
        ) from None
