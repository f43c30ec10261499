"""Salesforce Outbound Messages: the SOAP 1.1 envelope Salesforce posts, read safely, and its ack.

Sources (Salesforce SOAP API Developer Guide):
- Envelope shape: `notifications` in namespace `http://soap.sforce.com/2005/09/outbound` holds
  `OrganizationId`, `ActionId`, `SessionId` (nillable), `EnterpriseUrl`, `PartnerUrl` and up to
  100 `Notification`s, each an `Id` and an `sObject` whose `xsi:type` names the object
  (`sf:Lead`) and whose children are the selected fields in `urn:sobject.enterprise.soap.sforce.com`.
  The ack is `notificationsResponse` with `Ack` (xsd:boolean) in the same namespace.
  https://developer.salesforce.com/docs/platform/api/guide/sforce-api-om-outboundmessaging-wsdl.html
- A notification can be delivered more than once; dedupe on the notification `Id`.
  https://developer.salesforce.com/docs/atlas.en-us.api.meta/api/sforce_api_om_outboundmessaging_notifications.htm
- `ent:ID` is 18 alphanumeric characters in the generated WSDL, so `OrganizationId` arrives in its
  18-character form; the last 3 characters only encode the letter case of the first 15.

The body is untrusted and unauthenticated until the organization check passes, so it is parsed with
defusedxml with DTDs forbidden (a SOAP message never carries one): no entity expansion, no external
fetches. `xsi:type` is a QName in an attribute value, which ElementTree does not resolve; we drop
the prefix, since every sObject type lives in the one sObject namespace.
"""

import re
from dataclasses import dataclass
from xml.etree.ElementTree import Element, ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

from onefunnel.ingest.platforms.base import Acknowledgement, InvalidPayload

_SOAP = "{http://schemas.xmlsoap.org/soap/envelope/}"
_OUTBOUND = "{http://soap.sforce.com/2005/09/outbound}"
_SOBJECT = "{urn:sobject.enterprise.soap.sforce.com}"
_XSI = "{http://www.w3.org/2001/XMLSchema-instance}"
_MAX_NOTIFICATIONS = 100
_SALESFORCE_ID = re.compile(r"[A-Za-z0-9]{15}(?:[A-Za-z0-9]{3})?")

ACKNOWLEDGEMENT = Acknowledgement(
    body=(
        b'<?xml version="1.0" encoding="UTF-8"?>'
        b'<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/">'
        b"<soapenv:Body>"
        b'<notificationsResponse xmlns="http://soap.sforce.com/2005/09/outbound">'
        b"<Ack>true</Ack>"
        b"</notificationsResponse>"
        b"</soapenv:Body>"
        b"</soapenv:Envelope>"
    ),
    media_type="text/xml",
)


@dataclass(frozen=True)
class Notification:
    id: str
    object_type: str  # the sObject type without its prefix: "Lead", "Contact", ...
    fields: dict[str, str]  # selected fields by API name; a nil field is ""


@dataclass(frozen=True)
class OutboundMessage:
    organization_id: str
    notifications: list[Notification]


def parse_outbound_message(body: bytes) -> OutboundMessage:
    """Read an Outbound Message envelope, or raise InvalidPayload."""
    try:
        root = fromstring(body, forbid_dtd=True)
    except (ParseError, DefusedXmlException) as error:
        raise InvalidPayload(f"not a readable XML document ({type(error).__name__})") from None
    notifications = root.find(f"{_SOAP}Body/{_OUTBOUND}notifications")
    if root.tag != f"{_SOAP}Envelope" or notifications is None:
        raise InvalidPayload("not a SOAP envelope holding outbound notifications")
    organization_id = _text(notifications.find(f"{_OUTBOUND}OrganizationId"))
    if not _SALESFORCE_ID.fullmatch(organization_id):
        raise InvalidPayload("OrganizationId is missing or not a Salesforce id")
    elements = notifications.findall(f"{_OUTBOUND}Notification")
    if len(elements) > _MAX_NOTIFICATIONS:
        raise InvalidPayload(f"{len(elements)} notifications, more than Salesforce sends")
    return OutboundMessage(
        organization_id=organization_id, notifications=[_notification(e) for e in elements]
    )


def same_organization(configured: str, received: str) -> bool:
    """Whether two org ids, each in 15- or 18-character form, name the same organization."""
    # The 15-character id is the case-sensitive identity; the 18-character suffix is derived from it.
    return configured[:15] == received[:15]


def is_salesforce_id(value: str) -> bool:
    """Whether a value has the shape of a 15- or 18-character Salesforce id."""
    return _SALESFORCE_ID.fullmatch(value) is not None


def _notification(element: Element) -> Notification:
    notification_id = _text(element.find(f"{_OUTBOUND}Id"))
    sobject = element.find(f"{_OUTBOUND}sObject")
    if not notification_id or sobject is None:
        raise InvalidPayload("a Notification lacks its Id or sObject")
    fields = {
        child.tag.removeprefix(_SOBJECT): _text(child) for child in sobject if child.tag.startswith(_SOBJECT)
    }
    if not fields.get("Id"):
        raise InvalidPayload("an sObject lacks its Id")
    object_type = sobject.get(f"{_XSI}type", "").rpartition(":")[2]
    return Notification(id=notification_id, object_type=object_type, fields=fields)


def _text(element: Element | None) -> str:
    return "" if element is None or element.text is None else element.text.strip()
