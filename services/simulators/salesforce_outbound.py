"""The fake Salesforce's Outbound Messages: SOAP 1.1 envelopes posted until they are acknowledged.

Follows the SOAP API Developer Guide:
- "Understanding the Outbound Messaging WSDL"
  (https://developer.salesforce.com/docs/platform/api/guide/sforce-api-om-outboundmessaging-wsdl.html):
  `notifications` (namespace `http://soap.sforce.com/2005/09/outbound`) with `OrganizationId`,
  `ActionId`, a nil `SessionId` ("Send Session ID" off), `EnterpriseUrl`, `PartnerUrl`, and
  `Notification`s, each an `Id` and an `sObject` typed `sf:Lead`/`sf:Opportunity` holding the
  selected fields; the answer must be `notificationsResponse` with `<Ack>true</Ack>`.
- "Understanding Notifications"
  (https://developer.salesforce.com/docs/atlas.en-us.api.meta/api/sforce_api_om_outboundmessaging_notifications.htm):
  a message is retried until acknowledged, independent of order, and the record is read when the
  message is sent, so a short-lived value may never be seen. Salesforce backs off up to 2 hours and
  gives up after 24 hours; here the retries are few and milliseconds apart so tests stay fast.

Each Outbound Message is defined on one object, so Lead and Opportunity changes go out as separate
messages with their own ActionId. Fields that are null are left out of the sObject (unverified: the
WSDL marks the fields nillable, and we have no captured message with a null field).
"""

import asyncio
import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from xml.etree.ElementTree import ParseError
from xml.sax.saxutils import escape, quoteattr

import httpx
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

logger = logging.getLogger(__name__)

Value = str | bool | datetime | None
Read = Callable[[], Mapping[str, Value] | None]

SELECTED_FIELDS = {
    "Lead": (
        "Id", "Status", "Email", "IsConverted", "ConvertedOpportunityId", "ConvertedContactId",
        "OwnerId", "LeadSource", "LastModifiedDate", "LastModifiedById",
    ),
    "Opportunity": ("Id", "StageName", "IsClosed", "IsWon", "LastModifiedDate", "LastModifiedById"),
}  # fmt: skip
_SOBJECT_NAMESPACE = "urn:sobject.enterprise.soap.sforce.com"
_ACK = "{http://soap.sforce.com/2005/09/outbound}Ack"
_TIMEOUT = 60.0  # Salesforce waits 60 s for the answer (Help, "Outbound Message Considerations")


@dataclass(frozen=True)
class Delivery:
    """One Outbound Message the fake sent: acknowledged after `attempts` tries, or given up on."""

    notification_id: str
    object_type: str
    record_id: str
    attempts: int
    acknowledged: bool


def xsd_value(value: Value) -> str:
    """Write a field the way the enterprise WSDL types it (xsd:boolean, xsd:dateTime in UTC)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
    return "" if value is None else value


class OutboundSender:
    def __init__(
        self,
        *,
        url: str | None,
        client: httpx.AsyncClient | None,
        organization_id: str,
        instance_url: str,
        api_version: str,
        attempts: int,
        retry_delay: float,
        shuffle_window: float,
        rng: random.Random,
    ) -> None:
        self._url = url
        self._client = client
        self._owns_client = False
        self._organization_id = organization_id
        self._soap_urls = tuple(
            f"{instance_url}/services/Soap/{kind}/{api_version}/{organization_id[:15]}" for kind in "cu"
        )
        self._attempts = attempts
        self._retry_delay = retry_delay
        self._shuffle_window = shuffle_window
        self._rng = rng
        self._tasks: set[asyncio.Task[None]] = set()
        self.deliveries: list[Delivery] = []

    def send(self, *, notification_id: str, action_id: str, object_type: str, read: Read) -> None:
        """Queue one notification; `read` gives the record's fields when the message goes out."""
        if self._url is None:
            return
        task = asyncio.get_running_loop().create_task(
            self._deliver(
                notification_id=notification_id, action_id=action_id, object_type=object_type, read=read
            )
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def idle(self) -> None:
        """Wait until every queued message was acknowledged or given up on."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks))

    async def aclose(self) -> None:
        await self.idle()
        if self._owns_client and self._client is not None:
            await self._client.aclose()

    async def _deliver(self, *, notification_id: str, action_id: str, object_type: str, read: Read) -> None:
        if self._shuffle_window:
            # Salesforce does not keep order between messages; a random head start reorders them.
            await asyncio.sleep(self._rng.uniform(0, self._shuffle_window))
        record_id, acknowledged, attempt = "", False, 0
        for attempt in range(1, self._attempts + 1):
            fields = read()
            if fields is None:
                break  # the record is gone: nothing left to read
            record_id = str(fields.get("Id"))
            body = self._envelope(notification_id, action_id, object_type, fields)
            if await self._post(body):
                acknowledged = True
                break
            if attempt < self._attempts:
                await asyncio.sleep(self._retry_delay * 2 ** (attempt - 1))
        self.deliveries.append(Delivery(notification_id, object_type, record_id, attempt, acknowledged))

    async def _post(self, body: bytes) -> bool:
        assert self._url is not None
        if self._client is None:
            self._client, self._owns_client = httpx.AsyncClient(timeout=_TIMEOUT), True
        headers = {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '""'}
        try:
            response = await self._client.post(self._url, content=body, headers=headers, timeout=_TIMEOUT)
        except httpx.HTTPError as error:
            logger.info("outbound message not delivered: %s", type(error).__name__)
            return False
        return response.is_success and _acknowledged(response.content)

    def _envelope(
        self, notification_id: str, action_id: str, object_type: str, fields: Mapping[str, Value]
    ) -> bytes:
        sobject = "".join(
            f"<sf:{name}>{escape(xsd_value(fields[name]))}</sf:{name}>"
            for name in SELECTED_FIELDS[object_type]
            if fields.get(name) is not None
        )
        return (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
            'xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">\n'
            "<soapenv:Body>\n"
            '<notifications xmlns="http://soap.sforce.com/2005/09/outbound">\n'
            f"<OrganizationId>{self._organization_id}</OrganizationId>\n"
            f"<ActionId>{action_id}</ActionId>\n"
            '<SessionId xsi:nil="true"/>\n'
            f"<EnterpriseUrl>{escape(self._soap_urls[0])}</EnterpriseUrl>\n"
            f"<PartnerUrl>{escape(self._soap_urls[1])}</PartnerUrl>\n"
            f"<Notification>\n<Id>{notification_id}</Id>\n"
            f"<sObject xsi:type={quoteattr('sf:' + object_type)} xmlns:sf={quoteattr(_SOBJECT_NAMESPACE)}>"
            f"{sobject}</sObject>\n</Notification>\n"
            "</notifications>\n"
            "</soapenv:Body>\n"
            "</soapenv:Envelope>\n"
        ).encode()


def _acknowledged(body: bytes) -> bool:
    try:
        root = fromstring(body, forbid_dtd=True)
    except (ParseError, DefusedXmlException):
        return False
    ack = root.find(f".//{_ACK}")
    return ack is not None and (ack.text or "").strip() == "true"
