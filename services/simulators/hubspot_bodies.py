"""The JSON the HubSpot fake's API reads and answers: validated properties, contacts, a property definition.

Follows https://developers.hubspot.com/docs/api/crm/contacts (the contact object, and the 400
VALIDATION_ERROR "Property values were not valid" for a value outside a property's options) and
https://developers.hubspot.com/docs/api/crm/properties (the property definition, shape as in the official
SDK's `hubspot/crm/properties/models/model_property.py`).
"""

import json
from collections.abc import Sequence
from typing import Any

from fastapi import Request, Response

from onefunnel.simulators.hubspot_contacts import LIFECYCLE_STAGES, OPTIONS, SYSTEM, Contact
from onefunnel.simulators.hubspot_gate import error


async def read_properties(request: Request) -> dict[str, str] | Response:
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
