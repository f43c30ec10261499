"""The HubSpot fake's HTTP API: the CRM v3 contact routes, as an ASGI app.

Follows https://developers.hubspot.com/docs/api/crm/contacts (create, read, update, archive, batch read
and update) and https://developers.hubspot.com/docs/api/crm/properties (reading the `lifecyclestage`
definition); the bodies are built in `hubspot_bodies.py`.

- Errors: a duplicate email is 409 CONFLICT "Contact already exists. Existing ID: <id>"; a missing contact
  404 "resource not found"; a value outside a property's options 400 VALIDATION_ERROR "Property values were
  not valid".
- Batch read (by id, or by email as `idProperty`) and batch update answer 200 when every input was found,
  else 207 Multi-Status with an `errors` entry
  (category OBJECT_NOT_FOUND, the ids in `context.ids`) beside the `results`, as HubSpot's changelog
  "Simplifying batch update response codes for CRM v3 APIs" describes.
"""

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from onefunnel.simulators.hubspot_bodies import (
    contact_body,
    lifecyclestage_definition,
    read_batch_read,
    read_batch_update,
    read_properties,
)
from onefunnel.simulators.hubspot_contacts import Contact, Contacts, now
from onefunnel.simulators.hubspot_gate import Gate, error
from onefunnel.simulators.hubspot_webhooks import ChangeSource

_DEFAULT_PROPERTIES = ("createdate", "email", "firstname", "hs_object_id", "lastmodifieddate", "lastname")


@dataclass(frozen=True)
class ApiCall:
    method: str
    path: str
    status: int


class Portal(Protocol):
    """What the routes need of the `HubSpotFake`; latency is read per call."""

    latency: float
    calls: list[ApiCall]
    stage_writes: list[str]
    gate: Gate
    contacts: Contacts
    integration: ChangeSource


def build_app(fake: Portal) -> FastAPI:
    """The routes of `fake`, behind its gate; every call is recorded in `fake.calls`."""
    app = FastAPI(title="HubSpot fake", openapi_url=None)
    contacts, store = "/crm/v3/objects/contacts", fake.contacts

    @app.middleware("http")
    async def gate(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        """Latency, auth, injected faults and the rolling rate limits, before any route runs."""
        if fake.latency:
            await asyncio.sleep(fake.latency)
        refusal, headers = fake.gate.refusal(request)
        response = refusal or await call_next(request)
        response.headers.update(headers)
        fake.calls.append(ApiCall(request.method, request.url.path, response.status_code))
        return response

    @app.post(contacts)
    async def create(request: Request) -> Response:
        properties = await read_properties(request)
        if isinstance(properties, Response):
            return properties
        if (existing := store.by_email(properties.get("email", ""))) is not None:
            return _conflict(existing)
        return JSONResponse(contact_body(store.create(properties, source=fake.integration)), status_code=201)

    @app.get(contacts + "/{contact_id}")
    async def read(request: Request, contact_id: str) -> Response:
        if (contact := store.by_id.get(contact_id)) is None:
            return error(404, "resource not found")
        asked = [name for value in request.query_params.getlist("properties") for name in value.split(",")]
        return JSONResponse(contact_body(contact, [n for n in asked if n] or _DEFAULT_PROPERTIES))

    @app.patch(contacts + "/{contact_id}")
    async def update(request: Request, contact_id: str) -> Response:
        properties = await read_properties(request)
        if isinstance(properties, Response):
            return properties
        if (contact := store.by_id.get(contact_id)) is None:
            return error(404, "resource not found")
        if (other := store.by_email(properties.get("email", ""))) not in (None, contact):
            return _conflict(other)
        _count_stage_write(fake, contact_id, properties)
        store.send(store.write(contact, properties, source=fake.integration))
        return JSONResponse(contact_body(contact))

    @app.post(f"{contacts}/batch/read")
    async def batch_read(request: Request) -> Response:
        """Read contacts by id or by email (a unique property): 200, or 207 naming those not found."""
        asked = await read_batch_read(request)
        if isinstance(asked, Response):
            return asked
        ids, id_property, names = asked
        started, results, missing = now(), [], []
        for key in ids:
            contact = store.by_email(key) if id_property == "email" else store.by_id.get(key)
            if contact is None:
                missing.append(key)
            else:
                results.append(contact_body(contact, names or _DEFAULT_PROPERTIES))
        return _batch_answer(started, results, missing)

    @app.post(f"{contacts}/batch/update")
    async def batch_update(request: Request) -> Response:
        """Update each input's contact: 200 if all were found, else 207 naming the missing ids."""
        inputs = await read_batch_update(request)
        if isinstance(inputs, Response):
            return inputs
        started, results, missing = now(), [], []
        for contact_id, properties in inputs:
            if (contact := store.by_id.get(contact_id)) is None:
                missing.append(contact_id)
                continue
            _count_stage_write(fake, contact_id, properties)
            store.send(store.write(contact, properties, source=fake.integration))
            results.append(contact_body(contact))
        return _batch_answer(started, results, missing)

    @app.delete(contacts + "/{contact_id}")
    async def archive(contact_id: str) -> Response:
        """Archive (delete) a contact: 204, and the contact.deletion webhook; 204 again if it is gone."""
        store.archive(contact_id, source=fake.integration)
        return Response(status_code=204)

    @app.get("/crm/v3/properties/contacts/{name}")
    async def read_property(name: str) -> Response:
        if name != "lifecyclestage":
            return error(404, "resource not found")
        return JSONResponse(lifecyclestage_definition())

    return app


def _batch_answer(started: str, results: list[dict[str, Any]], missing: list[str]) -> JSONResponse:
    """A batch call's answer: 200 when every input was found, else 207 with an OBJECT_NOT_FOUND error."""
    answer: dict[str, Any] = {
        "status": "COMPLETE",
        "results": results,
        "startedAt": started,
        "completedAt": now(),
    }
    if missing:
        answer["numErrors"] = 1
        answer["errors"] = [
            {
                "status": "error",
                "category": "OBJECT_NOT_FOUND",
                "message": "Could not get some CONTACT objects, they may be deleted or not exist.",
                "context": {"ids": missing},
            }
        ]
    return JSONResponse(answer, status_code=207 if missing else 200)


def _count_stage_write(fake: Portal, contact_id: str, properties: dict[str, str]) -> None:
    if "lifecyclestage" in properties:
        fake.stage_writes.append(contact_id)


def _conflict(existing: Contact) -> JSONResponse:
    return error(409, f"Contact already exists. Existing ID: {existing.id}", "CONFLICT")
