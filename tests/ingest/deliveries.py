"""Signed webhook requests as each platform sends them, for the route, fuzz and broker tests."""

import base64
import hashlib
import hmac
import json
import time
import uuid

from onefunnel.ingest.settings import IngestSettings

HUBSPOT_SECRET = "hubspot-client-secret"
MAUTIC_SECRET = "mautic-test-secret"  # the secret the byte-exact samples were signed with
SALESFORCE_SECRET = "salesforce-callout-secret"
SALESFORCE_ORG = "00D000000000062EAA"
MARKETO_TOKEN = "marketo-shared-token"
PIPEDRIVE_AUTH = "onefunnel:pipedrive-password"
GENERIC_SECRET = "whsec_" + base64.b64encode(b"generic-webhook-secret-0123456789").decode()
BASE_URL = "https://hooks.example.com"

Request = tuple[str, dict[str, str], bytes]  # path, headers, body


def settings(**overrides: object) -> IngestSettings:
    values: dict[str, object] = {
        "public_base_url": BASE_URL,
        "hubspot_client_secret": HUBSPOT_SECRET,
        "mautic_webhook_secret": MAUTIC_SECRET,
        "salesforce_org_ids": SALESFORCE_ORG,
        "salesforce_webhook_secret": SALESFORCE_SECRET,
        "marketo_webhook_token": MARKETO_TOKEN,
        "pipedrive_basic_auth": PIPEDRIVE_AUTH,
        "generic_webhook_secret": GENERIC_SECRET,
    }
    values.update(overrides)
    return IngestSettings.model_validate(values)


def hubspot(body: bytes, *, secret: str = HUBSPOT_SECRET, timestamp_ms: int | None = None) -> Request:
    path = "/webhooks/hubspot"
    timestamp = str(timestamp_ms if timestamp_ms is not None else int(time.time() * 1000))
    message = b"POST" + (BASE_URL + path).encode() + body + timestamp.encode()
    signature = base64.b64encode(hmac.new(secret.encode(), message, hashlib.sha256).digest()).decode()
    headers = {
        "content-type": "application/json",
        "x-hubspot-signature-v3": signature,
        "x-hubspot-request-timestamp": timestamp,
    }
    return path, headers, body


def hubspot_events(*events: dict[str, object]) -> bytes:
    return json.dumps(list(events)).encode()


def hubspot_stage_change(contact_id: int, stage: str, *, event_id: int | None = None) -> dict[str, object]:
    return {
        "objectId": contact_id,
        "propertyName": "lifecyclestage",
        "propertyValue": stage,
        "changeSource": "CRM_UI",
        "eventId": event_id if event_id is not None else uuid.uuid4().int % 10**12,
        "subscriptionId": 25,
        "portalId": 33,
        "appId": 1160452,
        "occurredAt": int(time.time() * 1000),
        "subscriptionType": "contact.propertyChange",
        "attemptNumber": 0,
    }


def mautic(body: bytes, *, secret: str = MAUTIC_SECRET) -> Request:
    signature = base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()
    return "/webhooks/mautic", {"content-type": "application/json", "webhook-signature": signature}, body


def salesforce_callout(body: bytes, *, secret: str = SALESFORCE_SECRET) -> Request:
    timestamp = str(int(time.time()))
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    headers = {
        "content-type": "application/json",
        "x-onefunnel-signature": f"sha256={mac}",
        "x-onefunnel-timestamp": timestamp,
    }
    return "/webhooks/salesforce", headers, body


def salesforce_outbound(body: bytes) -> Request:
    return "/webhooks/salesforce", {"content-type": "text/xml; charset=utf-8", "soapaction": '""'}, body


def marketo(body: bytes, *, token: str = MARKETO_TOKEN) -> Request:
    return "/webhooks/marketo", {"content-type": "application/json", "x-onefunnel-token": token}, body


def pipedrive(body: bytes, *, credentials: str = PIPEDRIVE_AUTH) -> Request:
    basic = base64.b64encode(credentials.encode()).decode()
    return (
        "/webhooks/pipedrive",
        {"content-type": "application/json", "authorization": f"Basic {basic}"},
        body,
    )


def generic(body: bytes, *, secret: str = GENERIC_SECRET, message_id: str | None = None) -> Request:
    message_id = message_id or f"msg_{uuid.uuid4().hex}"
    timestamp = str(int(time.time()))
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{message_id}.{timestamp}.".encode() + body
    signature = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    headers = {
        "content-type": "application/json",
        "webhook-id": message_id,
        "webhook-timestamp": timestamp,
        "webhook-signature": f"v1,{signature}",
    }
    return "/webhooks/generic", headers, body
