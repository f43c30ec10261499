"""A stateful fake of HubSpot's CRM v3 contacts API, sending the webhooks HubSpot would send.

Follows https://developers.hubspot.com/docs/api/crm/contacts (create, read, update),
https://developers.hubspot.com/docs/api/crm/search (search body and `total`/`results`/`paging` answer),
https://developers.hubspot.com/docs/api/crm/properties (the property definition, shape as in the official
SDK's `hubspot/crm/properties/models/model_property.py`) and
https://developers.hubspot.com/docs/api/usage-details (rate limits, the 429 body, X-HubSpot-RateLimit-*).

- Auth: `Authorization: Bearer <private app token>`; otherwise 401 with HubSpot's "Authentication
  credentials not found" body, category INVALID_AUTHENTICATION.
- Errors: `{"status": "error", "message", "correlationId", "category"}`; a duplicate email is
  409 CONFLICT "Contact already exists. Existing ID: <id>"; a missing contact 404 "resource not found";
  a value outside a property's options 400 VALIDATION_ERROR "Property values were not valid".
- Rate limits: `rate_limit_max` calls per rolling `rate_limit_window` (TEN_SECONDLY_ROLLING), search 5 per
  second (and no rate-limit headers on search answers). A 429 carries `Retry-After` (seconds; fractions
  allowed here so tests run fast) and `{"status", "message", "errorType": "RATE_LIMIT", "correlationId",
  "policyName"}`.
- `lifecyclestage` only moves forward in the order of its options; setting an earlier value answers 200 and
  leaves the value as it was. Clearing it ("") first, in a separate request, allows any value next: a recycle
  is two writes and two webhooks. (Community answer by HubSpot staff, integrate.hubspot.com/t/1333.)
- Search sees a new contact only `search_lag` seconds after its creation, as HubSpot's index does.

Webhooks (`hubspot_webhooks.py`): every change sends what HubSpot's subscriptions would: `contact.creation`
(plus a `contact.propertyChange` per subscribed property set at creation), one `contact.propertyChange` per
changed `lifecyclestage` or `email`, `contact.merge`. `changeSource` is INTEGRATION with our app id as
`sourceId` for API writes (what delivered payloads show; HubSpot documents only that the values mirror
property history sources) and CRM_UI with `userId:<id>` for the user actions. A merge keeps the stage
furthest down the funnel (knowledge.hubspot.com "Merge records").

Not modelled: batch endpoints, other objects, merged ids resolving to the survivor (here they are 404).
"""

import asyncio
import json
import random
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from onefunnel.simulators.hubspot_webhooks import (
    SUBSCRIBED_PROPERTIES,
    ChangeSource,
    ContactEvents,
    Event,
    WebhookSender,
)

# The default options in HubSpot's order, value: label; "other" is the last option, so the furthest one.
_OPTIONS = {
    "subscriber": "Subscriber",
    "lead": "Lead",
    "marketingqualifiedlead": "Marketing Qualified Lead",
    "salesqualifiedlead": "Sales Qualified Lead",
    "opportunity": "Opportunity",
    "customer": "Customer",
    "evangelist": "Evangelist",
    "other": "Other",
}
LIFECYCLE_STAGES = tuple(_OPTIONS)
_SYSTEM = ("createdate", "hs_object_id", "lastmodifieddate")
_DEFAULT_PROPERTIES = ("createdate", "email", "firstname", "hs_object_id", "lastmodifieddate", "lastname")
_UNAUTHENTICATED = (
    "Authentication credentials not found. This API supports OAuth 2.0 authentication and you can find "
    "more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview"
)
# Writes through our private app arrive as INTEGRATION with the app id (seen in delivered payloads;
# HubSpot documents only that changeSource mirrors the property history's sources).
_API = "INTEGRATION"


@dataclass(frozen=True)
class ApiCall:
    method: str
    path: str
    status: int


@dataclass
class _Contact:
    id: str
    properties: dict[str, str]
    created: float = field(default_factory=time.monotonic)


def error(status: int, message: str, category: str | None = None) -> JSONResponse:
    """A HubSpot error answer."""
    body: dict[str, Any] = {"status": "error", "message": message, "correlationId": str(uuid.uuid4())}
    if category is not None:
        body["category"] = category
    return JSONResponse(body, status_code=status)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.3f}"


def moves_forward(current: str, value: str) -> bool:
    """Whether HubSpot applies `value` over `current`: clearing always, else never to an earlier option."""
    if not current or not value:
        return True
    return LIFECYCLE_STAGES.index(value) >= LIFECYCLE_STAGES.index(current)


class HubSpotFake:
    """One HubSpot portal: its contacts, its API (`app`), its webhooks, and what a person does in the UI."""

    def __init__(
        self,
        *,
        access_tokens: Sequence[str] = ("pat-na1-fake-token",),
        portal_id: int = 62515,
        app_id: int = 1160452,
        webhook_url: str | None = None,
        client_secret: str = "",
        webhook_client: httpx.AsyncClient | None = None,
        shuffle_webhooks: bool = False,
        seed: int | None = None,
        rate_limit_max: int = 190,
        rate_limit_window: float = 10.0,
        search_lag: float = 0.0,
        latency: float = 0.0,
    ) -> None:
        self.latency = latency
        self.search_lag = search_lag
        self.calls: list[ApiCall] = []
        self._tokens = frozenset(access_tokens)
        self._limit, self._window = rate_limit_max, rate_limit_window
        self._recent: deque[float] = deque()
        self._recent_searches: deque[float] = deque()
        self._injected_errors: list[int] = []
        self._injected_limits: list[float] = []
        self._contacts: dict[str, _Contact] = {}
        self._next_id = 1001
        self._events = ContactEvents(portal_id=portal_id, app_id=app_id)
        self._api = ChangeSource(_API, str(app_id))
        self.user = ChangeSource("CRM_UI", "userId:4242")
        self.webhooks: WebhookSender | None = None
        self._owned_http: httpx.AsyncClient | None = None
        if webhook_url is not None:
            http = webhook_client or httpx.AsyncClient()
            self._owned_http = None if webhook_client else http
            self.webhooks = WebhookSender(
                url=webhook_url,
                client_secret=client_secret,
                http=http,
                shuffle_window=0.05 if shuffle_webhooks else 0.0,
                rng=random.Random(seed),
            )
        self.app = self._routes()

    # -- faults and assertions ------------------------------------------------------------------

    def inject_errors(self, status: int = 500, count: int = 1) -> None:
        """Answer the next `count` authenticated calls with `status`."""
        self._injected_errors += [status] * count

    def inject_rate_limit(self, count: int = 1, retry_after: float = 1.0) -> None:
        """Answer the next `count` authenticated calls with 429 TEN_SECONDLY_ROLLING."""
        self._injected_limits += [retry_after] * count

    def snapshot(self) -> dict[str, dict[str, str]]:
        """Every contact's properties, without the system ones (createdate, hs_object_id, ...)."""
        return {
            cid: {k: v for k, v in c.properties.items() if k not in _SYSTEM}
            for cid, c in self._contacts.items()
        }

    async def webhooks_idle(self) -> None:
        """Wait until every webhook sent so far was delivered (or gave up)."""
        if self.webhooks is not None:
            await self.webhooks.idle()

    drain = webhooks_idle

    async def aclose(self) -> None:
        """Deliver what is pending, then close the webhook client if the fake made it."""
        await self.webhooks_idle()
        if self._owned_http is not None:
            await self._owned_http.aclose()

    # -- what a person does in the HubSpot UI ----------------------------------------------------

    def user_creates_contact(self, email: str, lifecyclestage: str = "", **properties: str) -> str:
        """Create a contact as a user (or a form) would; returns its id.

        Extra properties (`utm_campaign`, `hs_analytics_source`) are set before the stage, so their
        webhooks come first, as a form submission's would.
        """
        return self._create(
            {"email": email, **properties, "lifecyclestage": lifecyclestage}, source=self.user
        ).id

    def user_sets_lifecyclestage(self, contact_id: str, value: str) -> None:
        """Set the stage as a user would; an earlier stage is a clear then a set, so two webhooks."""
        if value not in (*LIFECYCLE_STAGES, ""):
            raise ValueError(f"{value!r} is not a lifecycle stage option")
        contact = self._contacts[contact_id]
        if not moves_forward(contact.properties.get("lifecyclestage", ""), value):
            self._send(self._write(contact, {"lifecyclestage": ""}, source=self.user))
        self._send(self._write(contact, {"lifecyclestage": value}, source=self.user))

    def user_merges(self, primary: str, merged: str) -> None:
        """Merge `merged` into `primary`: the stage furthest down the funnel is kept (merge KB article)."""
        winner, loser = self._contacts[primary], self._contacts.pop(merged)
        stages = [c.properties.get("lifecyclestage", "") for c in (winner, loser)]
        furthest = max(stages, key=lambda s: LIFECYCLE_STAGES.index(s) if s else -1)
        changes = {"lifecyclestage": furthest} if furthest != stages[0] else {}
        merge = self._events.merge(primary, merged, moved=len(changes), source=self.user)
        changes["hs_merged_object_ids"] = merged
        self._send([merge, *self._write(winner, changes, source=self.user)])

    # -- state ------------------------------------------------------------------------------------

    def _create(self, properties: dict[str, str], *, source: ChangeSource) -> _Contact:
        contact = _Contact(id=str(self._next_id), properties={"createdate": _now()})
        contact.properties["hs_object_id"] = contact.id
        self._next_id += 1
        self._contacts[contact.id] = contact
        created = self._events.creation(contact.id, source=source)
        # A property set at creation also fires its propertyChange subscription.
        self._send([created, *self._write(contact, properties, source=source)])
        return contact

    def _write(self, contact: _Contact, properties: dict[str, str], *, source: ChangeSource) -> list[Event]:
        events = []
        for name, value in properties.items():
            current = contact.properties.get(name, "")
            if value == current or (name == "lifecyclestage" and not moves_forward(current, value)):
                continue  # no change, or a backward stage HubSpot silently ignores: no webhook either
            if value:
                contact.properties[name] = value
            else:
                contact.properties.pop(name, None)
            if name in SUBSCRIBED_PROPERTIES:
                events.append(self._events.property_change(contact.id, name=name, value=value, source=source))
        contact.properties["lastmodifieddate"] = _now()
        return events

    def _send(self, events: list[Event]) -> None:
        if events and self.webhooks is not None:
            self.webhooks.send(events)

    def _by_email(self, email: str) -> _Contact | None:
        wanted = email.casefold()
        if not wanted:
            return None
        return next(
            (c for c in self._contacts.values() if c.properties.get("email", "").casefold() == wanted), None
        )

    # -- the HTTP API -----------------------------------------------------------------------------

    def _routes(self) -> FastAPI:
        app = FastAPI(title="HubSpot fake", openapi_url=None)
        app.middleware("http")(self._gate)
        contacts = "/crm/v3/objects/contacts"
        app.add_api_route(contacts, self._create_contact, methods=["POST"])
        app.add_api_route(f"{contacts}/search", self._search, methods=["POST"])
        app.add_api_route(contacts + "/{contact_id}", self._read, methods=["GET"])
        app.add_api_route(contacts + "/{contact_id}", self._update, methods=["PATCH"])
        app.add_api_route(contacts + "/{contact_id}", self._archive, methods=["DELETE"])
        app.add_api_route("/crm/v3/properties/contacts/{name}", self._property, methods=["GET"])
        return app

    async def _create_contact(self, request: Request) -> Response:
        properties = await _properties(request)
        if isinstance(properties, Response):
            return properties
        if (existing := self._by_email(properties.get("email", ""))) is not None:
            return _conflict(existing)
        return JSONResponse(_contact_body(self._create(properties, source=self._api)), status_code=201)

    async def _read(self, request: Request, contact_id: str) -> Response:
        if (contact := self._contacts.get(contact_id)) is None:
            return error(404, "resource not found")
        asked = [name for value in request.query_params.getlist("properties") for name in value.split(",")]
        return JSONResponse(_contact_body(contact, [n for n in asked if n] or _DEFAULT_PROPERTIES))

    async def _archive(self, contact_id: str) -> Response:
        """Archive (delete) a contact: 204, and the contact.deletion webhook; 204 again if it is gone."""
        if self._contacts.pop(contact_id, None) is not None:
            self._send([self._events.deletion(contact_id, source=self._api)])
        return Response(status_code=204)

    async def _update(self, request: Request, contact_id: str) -> Response:
        properties = await _properties(request)
        if isinstance(properties, Response):
            return properties
        if (contact := self._contacts.get(contact_id)) is None:
            return error(404, "resource not found")
        if (other := self._by_email(properties.get("email", ""))) not in (None, contact):
            return _conflict(other)
        self._send(self._write(contact, properties, source=self._api))
        return JSONResponse(_contact_body(contact))

    async def _search(self, request: Request) -> Response:
        try:
            body = await request.json()
            limit, after = int(body.get("limit", 10)), int(body.get("after") or 0)
            names = [str(name) for name in body.get("properties") or _SYSTEM]
            groups = [
                [(str(f["propertyName"]), f["operator"], str(f.get("value", ""))) for f in group["filters"]]
                for group in body.get("filterGroups", [])
            ]
        except (ValueError, TypeError, KeyError, AttributeError):
            return error(400, "Invalid input JSON on line 1", "VALIDATION_ERROR")
        if not 0 < limit <= 200 or any(op != "EQ" for group in groups for _, op, _ in group):
            return error(
                400, "Only EQ filters and a limit of 1 to 200 are supported here", "VALIDATION_ERROR"
            )
        indexed = [c for c in self._contacts.values() if time.monotonic() - c.created >= self.search_lag]
        hits = [c for c in indexed if not groups or any(_matches(c, group) for group in groups)]
        answer: dict[str, Any] = {
            "total": len(hits),
            "results": [_contact_body(c, names) for c in hits[after : after + limit]],
        }
        if after + limit < len(hits):
            answer["paging"] = {"next": {"after": str(after + limit)}}
        return JSONResponse(answer)

    async def _property(self, name: str) -> Response:
        if name != "lifecyclestage":
            return error(404, "resource not found")
        return JSONResponse(_property_definition())

    async def _gate(self, request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        """Latency, auth, injected faults and the rolling rate limits, before any route runs."""
        if self.latency:
            await asyncio.sleep(self.latency)
        search = request.url.path.endswith("/search")
        refusal, headers = self._refusal(request, search=search)
        response = refusal or await call_next(request)
        response.headers.update(headers)
        self.calls.append(ApiCall(request.method, request.url.path, response.status_code))
        return response

    def _refusal(self, request: Request, *, search: bool) -> tuple[Response | None, dict[str, str]]:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or token not in self._tokens:
            return error(401, _UNAUTHENTICATED, "INVALID_AUTHENTICATION"), {}
        if self._injected_limits:
            return self._rate_limited(self._injected_limits.pop(0), "TEN_SECONDLY_ROLLING"), {}
        if self._injected_errors:
            return error(self._injected_errors.pop(0), "internal error", "INTERNAL_ERROR"), {}
        now = time.monotonic()
        recent, limit, window = (
            (self._recent_searches, 5, 1.0) if search else (self._recent, self._limit, self._window)
        )
        while recent and recent[0] <= now - window:
            recent.popleft()
        if len(recent) >= limit:
            # Search is limited per second; the policy name of its 429 is not documented.
            policy = "SECONDLY" if search else "TEN_SECONDLY_ROLLING"
            return self._rate_limited(recent[0] + window - now, policy), {}
        recent.append(now)
        if search:
            return None, {}  # search answers carry no rate-limit headers
        return None, {
            "X-HubSpot-RateLimit-Interval-Milliseconds": str(int(window * 1000)),
            "X-HubSpot-RateLimit-Max": str(limit),
            "X-HubSpot-RateLimit-Remaining": str(limit - len(recent)),
        }

    def _rate_limited(self, retry_after: float, policy: str) -> JSONResponse:
        limit = "ten_secondly_rolling" if policy == "TEN_SECONDLY_ROLLING" else policy.lower()
        body = {
            "status": "error",
            "message": f"You have reached your {limit} limit.",
            "errorType": "RATE_LIMIT",
            "correlationId": str(uuid.uuid4()),
            "policyName": policy,
        }
        return JSONResponse(body, status_code=429, headers={"Retry-After": _seconds(max(retry_after, 0.0))})


async def _properties(request: Request) -> dict[str, str] | Response:
    """The `properties` of a create or update body, or HubSpot's 400 for what it would refuse."""
    try:
        raw = (await request.json()).get("properties")
    except (ValueError, AttributeError):
        raw = None
    if not isinstance(raw, dict):
        return error(400, "Invalid input JSON: expected an object with properties", "VALIDATION_ERROR")
    properties = {str(name): "" if value is None else str(value) for name, value in raw.items()}
    invalid = [
        {"isValid": False, "message": f"{value} is not a valid value", "error": code, "name": name}
        for name, value in properties.items()
        if (code := _invalid(name, value)) is not None
    ]
    if invalid:
        return error(400, f"Property values were not valid: {json.dumps(invalid)}", "VALIDATION_ERROR")
    return properties


def _invalid(name: str, value: str) -> str | None:
    if name == "lifecyclestage" and value not in (*LIFECYCLE_STAGES, ""):
        return "INVALID_OPTION"
    if name == "email" and value and "@" not in value:
        return "INVALID_EMAIL"
    if name in _SYSTEM:
        return "READ_ONLY_VALUE"
    return None


def _matches(contact: _Contact, group: list[tuple[str, str, str]]) -> bool:
    return all(contact.properties.get(name, "").casefold() == value.casefold() for name, _, value in group)


def _conflict(existing: _Contact) -> JSONResponse:
    return error(409, f"Contact already exists. Existing ID: {existing.id}", "CONFLICT")


def _contact_body(contact: _Contact, names: Sequence[str] | None = None) -> dict[str, Any]:
    """A contact as the API returns it: the requested properties (null when unset), or all it has."""
    properties = dict(contact.properties) if names is None else {n: contact.properties.get(n) for n in names}
    return {
        "id": contact.id,
        "properties": properties,
        "createdAt": contact.properties["createdate"],
        "updatedAt": contact.properties["lastmodifieddate"],
        "archived": False,
    }


def _property_definition() -> dict[str, Any]:
    """The `lifecyclestage` definition, its options in HubSpot's default order."""
    options = [
        {"label": label, "value": value, "displayOrder": order, "hidden": False}
        for order, (value, label) in enumerate(_OPTIONS.items())
    ]
    return {
        "name": "lifecyclestage",
        "label": "Lifecycle Stage",
        "type": "enumeration",
        "fieldType": "radio",
        "description": "The qualification of contacts to sales readiness.",
        "groupName": "contactinformation",
        "options": options,
        "displayOrder": -1,
        "calculated": False,
        "externalOptions": False,
        "hasUniqueValue": False,
        "hidden": False,
        "hubspotDefined": True,
        "modificationMetadata": {"archivable": False, "readOnlyDefinition": True, "readOnlyValue": False},
        "formField": True,
        "createdAt": "2019-08-06T02:41:52.189Z",
        "updatedAt": "2019-08-06T02:41:52.189Z",
    }
