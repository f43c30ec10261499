"""The JSON the HubSpot fake's API reads and answers: validated properties, contacts, a property definition.

Follows https://developers.hubspot.com/docs/api/crm/contacts (the contact object, the 400
VALIDATION_ERROR "Property values were not valid" for a value outside a property's options, and batch
update's `inputs` of at most 100 records) and
https://developers.hubspot.com/docs/api/crm/properties (the property definition, shape as in the official
SDK's `hubspot/crm/properties/models/model_property.py`).
"""

import json
from collections.abc import Sequence
from typing import Any

from fastapi import Request, Response

from onefunnel.simulators.hubspot_contacts import LIFECYCLE_STAGES, OPTIONS, SYSTEM, Contact
from onefunnel.simulators.hubspot_gate import error

BATCH_LIMIT = 100  # inputs per batch call, as HubSpot's CRM batch endpoints allow


async def read_properties(request: Request) -> dict[str, str] | Response:
    """The `properties` of a create or update body, or HubSpot's 400 for what it would refuse."""
    try:
        raw = (await request.json()).get("properties")
    except (ValueError, AttributeError):
        raw = None
    return _valid_properties(raw)


async def read_batch_update(request: Request) -> list[tuple[str, dict[str, str]]] | Response:
    """The (id, properties) of a batch update's `inputs` (at most 100, each id once), or HubSpot's 400."""
    try:
        inputs = (await request.json()).get("inputs")
        raw = [(str(item["id"]), item.get("properties")) for item in inputs]
    except (ValueError, AttributeError, TypeError, KeyError):
        return error(400, "Invalid input JSON: expected inputs, each with an id", "VALIDATION_ERROR")
    if not 0 < len(raw) <= BATCH_LIMIT:
        return error(400, f"Batch input must hold 1 to {BATCH_LIMIT} inputs", "VALIDATION_ERROR")
    if len({contact_id for contact_id, _ in raw}) != len(raw):  # the fake's choice: not in HubSpot's docs
        return error(400, "Duplicate IDs found in batch input", "VALIDATION_ERROR")
    parsed = []
    for contact_id, properties in raw:
        valid = _valid_properties(properties)
        if isinstance(valid, Response):
            return valid
        parsed.append((contact_id, valid))
    return parsed


async def read_batch_read(request: Request) -> tuple[list[str], str, list[str]] | Response:
    """The ids of a batch read's `inputs` (at most 100), its `idProperty` ("hs_object_id" when absent, or
    "email") and the `properties` asked for, or HubSpot's 400."""
    try:
        body = await request.json()
        ids = [str(item["id"]) for item in body["inputs"]]
        id_property = str(body.get("idProperty") or "hs_object_id")
        names = [str(name) for name in body.get("properties") or []]
    except (ValueError, AttributeError, TypeError, KeyError):
        return error(400, "Invalid input JSON: expected inputs, each with an id", "VALIDATION_ERROR")
    if not 0 < len(ids) <= BATCH_LIMIT:
        return error(400, f"Batch input must hold 1 to {BATCH_LIMIT} inputs", "VALIDATION_ERROR")
    if id_property not in ("hs_object_id", "email"):
        return error(400, f"{id_property} is not a unique property of contacts", "VALIDATION_ERROR")
    return ids, id_property, names


def _valid_properties(raw: object) -> dict[str, str] | Response:
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
    if name in SYSTEM:
        return "READ_ONLY_VALUE"
    return None


def contact_body(contact: Contact, names: Sequence[str] | None = None) -> dict[str, Any]:
    """A contact as the API returns it: the requested properties (null when unset), or all it has."""
    properties = dict(contact.properties) if names is None else {n: contact.properties.get(n) for n in names}
    return {
        "id": contact.id,
        "properties": properties,
        "createdAt": contact.properties["createdate"],
        "updatedAt": contact.properties["lastmodifieddate"],
        "archived": False,
    }


def lifecyclestage_definition() -> dict[str, Any]:
    """The `lifecyclestage` definition, its options in HubSpot's default order."""
    options = [
        {"label": label, "value": value, "displayOrder": order, "hidden": False}
        for order, (value, label) in enumerate(OPTIONS.items())
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
