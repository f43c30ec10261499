"""The webhook route end to end on the embedded bus: what platforms get back, and what lands on the bus."""

import json
import logging
import shutil
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry

from onefunnel.ingest import instruments
from onefunnel.ingest.app import create_app
from onefunnel.ingest.settings import IngestSettings
from onefunnel.shared import envelope
from onefunnel.shared.bus import Bus, Message, open_bus
from onefunnel.shared.events import SourceEvent
from onefunnel.shared.settings import BusKind, BusSettings, TopicSettings
from onefunnel.shared.stage_mapping import load_stage_mapping
from onefunnel.shared.stages import Stage
from tests.ingest import deliveries
from tests.ingest.deliveries import Request

pytestmark = pytest.mark.asyncio(loop_scope="session")
SAMPLES = Path(__file__).resolve().parent / "samples"


@pytest.fixture
def topics() -> TopicSettings:
    suffix = uuid.uuid4().hex[:8]
    return TopicSettings(topic_source_events=f"events-{suffix}", topic_dead_letters=f"dead-{suffix}")


@pytest.fixture
async def bus(tmp_path: Path, topics: TopicSettings) -> AsyncIterator[Bus]:
    settings = BusSettings(bus=BusKind.LOCAL, local_bus_path=tmp_path / "bus" / "bus.sqlite3")
    async with open_bus(settings, topics=topics.all) as opened:
        yield opened


def client_for(bus: Bus, topics: TopicSettings, settings: IngestSettings | None = None) -> httpx.AsyncClient:
    app = create_app(
        bus=bus, settings=settings or deliveries.settings(), topics=topics, mapping=load_stage_mapping()
    )
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=deliveries.BASE_URL)


async def post(client: httpx.AsyncClient, request: Request) -> httpx.Response:
    path, headers, body = request
    return await client.post(path, headers=headers, content=body)


async def read_topic(bus: Bus, topic: str) -> list[Message]:
    """Everything on `topic` so far (a fresh group reads from the start)."""
    messages: list[Message] = []
    async with bus.subscribe([topic], group=f"reader-{uuid.uuid4().hex}") as subscription:
        async for batch in subscription.batches(max_wait=0.2):
            if not batch:
                return messages
            messages.extend(batch)
    return messages


def counter(name: str, **labels: str) -> float:
    registry: CollectorRegistry = instruments.REGISTRY
    return registry.get_sample_value(name, labels) or 0.0


async def test_a_signed_hubspot_batch_is_published_as_cloudevents_before_the_2xx(
    bus: Bus, topics: TopicSettings
) -> None:
    body = deliveries.hubspot_events(
        deliveries.hubspot_stage_change(101, "marketingqualifiedlead"),
        deliveries.hubspot_stage_change(102, "salesqualifiedlead"),
    )
    before = counter("onefunnel_webhooks_received_total", source="hubspot", outcome="accepted")

    async with client_for(bus, topics) as client:
        response = await post(client, deliveries.hubspot(body))

    assert response.status_code == 200
    assert response.json() == {"accepted": 2, "duplicates": 0, "ignored": 0}
    assert response.headers["x-request-id"]
    published = await read_topic(bus, topics.topic_source_events)
    events = [envelope.decode(m) for m in published]
    assert all(isinstance(e, SourceEvent) for e in events)
    assert [(e.object_id, e.changes.stage) for e in events if isinstance(e, SourceEvent)] == [
        ("101", Stage.MQL),
        ("102", Stage.SQL),
    ]
    assert published[0].key == b"hubspot:contact:101"
    assert published[0].header("ce_type") == b"io.onefunnel.source.event_received.v1"
    assert counter("onefunnel_webhooks_received_total", source="hubspot", outcome="accepted") == before + 1


async def test_a_redelivered_hubspot_event_is_acknowledged_without_publishing_it_again(
    bus: Bus, topics: TopicSettings
) -> None:
    body = deliveries.hubspot_events(deliveries.hubspot_stage_change(103, "lead", event_id=777))

    async with client_for(bus, topics) as client:
        first = await post(client, deliveries.hubspot(body))
        retry = await post(client, deliveries.hubspot(body))

    assert first.json()["accepted"] == 1
    assert retry.status_code == 200 and retry.json() == {"accepted": 0, "duplicates": 1, "ignored": 0}
    assert len(await read_topic(bus, topics.topic_source_events)) == 1


@pytest.mark.parametrize(
    "forged",
    [
        deliveries.hubspot(b"[]", secret="not-the-secret"),
        deliveries.hubspot(b"[]", timestamp_ms=int(time.time() * 1000) - 6 * 60 * 1000),
        deliveries.mautic(b"{}", secret="not-the-secret"),
        deliveries.salesforce_callout(b"{}", secret="not-the-secret"),
        deliveries.marketo(b"{}", token="not-the-token"),
        deliveries.pipedrive(b"{}", credentials="onefunnel:wrong"),
        deliveries.generic(b"{}", secret="whsec_" + "A" * 32),
    ],
    ids=["hubspot-secret", "hubspot-stale", "mautic", "salesforce", "marketo", "pipedrive", "generic"],
)
async def test_a_forged_delivery_gets_401_and_nothing_is_stored(
    bus: Bus, topics: TopicSettings, forged: Request
) -> None:
    async with client_for(bus, topics) as client:
        response = await post(client, forged)

    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"
    assert await read_topic(bus, topics.topic_source_events) == []
    assert await read_topic(bus, topics.topic_dead_letters) == []


async def test_a_tampered_body_gets_401(bus: Bus, topics: TopicSettings) -> None:
    path, headers, body = deliveries.hubspot(
        deliveries.hubspot_events(deliveries.hubspot_stage_change(1, "lead"))
    )

    async with client_for(bus, topics) as client:
        response = await client.post(path, headers=headers, content=body.replace(b"lead", b"customer"))

    assert response.status_code == 401


async def test_an_unknown_or_unconfigured_source_is_not_found(bus: Bus, topics: TopicSettings) -> None:
    only_hubspot = IngestSettings.model_validate({"hubspot_client_secret": deliveries.HUBSPOT_SECRET})

    async with client_for(bus, topics, only_hubspot) as client:
        disabled = await post(client, deliveries.mautic(b"{}"))
        unknown = await client.post("/webhooks/zoho", content=b"{}")

    assert disabled.status_code == 404 and unknown.status_code == 404
    assert disabled.json()["error"] == "unknown_source"


async def test_the_byte_exact_mautic_samples_verify_and_publish_their_contacts(
    bus: Bus, topics: TopicSettings
) -> None:
    body = (SAMPLES / "mautic" / "batched_queue_mode.json").read_bytes()

    async with client_for(bus, topics) as client:
        response = await post(client, deliveries.mautic(body))

    assert response.status_code == 200
    assert response.json()["accepted"] >= 1
    assert len(await read_topic(bus, topics.topic_source_events)) == response.json()["accepted"]


async def test_an_authenticated_but_unreadable_delivery_is_refused_and_kept_on_the_dead_letter_topic(
    bus: Bus, topics: TopicSettings
) -> None:
    body = b'{"not": "a list of HubSpot events"}'

    async with client_for(bus, topics) as client:
        response = await post(client, deliveries.hubspot(body))

    assert response.status_code == 400 and response.json()["error"] == "invalid_payload"
    (dead,) = await read_topic(bus, topics.topic_dead_letters)
    assert dead.value == body
    assert dead.header("onefunnel_source") == b"hubspot"
    assert dead.header("x-hubspot-signature-v3") is None
    assert await read_topic(bus, topics.topic_source_events) == []


async def test_json_nested_deeper_than_the_limit_is_refused_without_a_crash(
    bus: Bus, topics: TopicSettings
) -> None:
    body = b"[" * 5000 + b"]" * 5000

    async with client_for(bus, topics) as client:
        response = await post(client, deliveries.hubspot(body))

    assert response.status_code == 400
    assert "nested deeper" in response.json()["detail"]


async def test_a_body_over_the_size_limit_gets_413_and_a_wrong_content_type_415(
    bus: Bus, topics: TopicSettings
) -> None:
    path, headers, _ = deliveries.hubspot(b"[]")

    async with client_for(bus, topics) as client:
        too_large = await client.post(path, headers=headers, content=b"[" + b" " * 1_048_576 + b"]")
        wrong_type = await client.post(path, headers={**headers, "content-type": "text/plain"}, content=b"[]")

    assert too_large.status_code == 413 and too_large.json()["error"] == "body_too_large"
    assert wrong_type.status_code == 415


async def test_events_we_do_not_use_are_acknowledged_and_counted_not_published(
    bus: Bus, topics: TopicSettings
) -> None:
    unused = {**deliveries.hubspot_stage_change(5, "lead"), "propertyName": "favourite_colour"}
    before = counter("onefunnel_webhook_events_ignored_total", source="hubspot")

    async with client_for(bus, topics) as client:
        response = await post(client, deliveries.hubspot(deliveries.hubspot_events(unused)))

    assert response.status_code == 200 and response.json() == {"accepted": 0, "duplicates": 0, "ignored": 1}
    assert counter("onefunnel_webhook_events_ignored_total", source="hubspot") == before + 1
    assert await read_topic(bus, topics.topic_source_events) == []


async def test_a_salesforce_outbound_message_is_answered_with_the_soap_acknowledgement(
    bus: Bus, topics: TopicSettings
) -> None:
    body = f"""<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"
 xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
 <soapenv:Body>
  <notifications xmlns="http://soap.sforce.com/2005/09/outbound">
   <OrganizationId>{deliveries.SALESFORCE_ORG}</OrganizationId>
   <ActionId>04k000000000001AAA</ActionId>
   <SessionId xsi:nil="true"/>
   <EnterpriseUrl>https://example.my.salesforce.com/services/Soap/c/62.0/00D000000000062</EnterpriseUrl>
   <PartnerUrl>https://example.my.salesforce.com/services/Soap/u/62.0/00D000000000062</PartnerUrl>
   <Notification>
    <Id>04l000000000001AAA</Id>
    <sObject xsi:type="sf:Lead" xmlns:sf="urn:sobject.enterprise.soap.sforce.com">
     <sf:Id>00Q000000000001AAA</sf:Id>
     <sf:Status>Working - Contacted</sf:Status>
     <sf:LastModifiedDate>2026-11-20T14:02:11.000Z</sf:LastModifiedDate>
    </sObject>
   </Notification>
  </notifications>
 </soapenv:Body>
</soapenv:Envelope>""".encode()

    async with client_for(bus, topics) as client:
        response = await post(client, deliveries.salesforce_outbound(body))

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/xml")
    assert b"<Ack>true</Ack>" in response.content
    (message,) = await read_topic(bus, topics.topic_source_events)
    event = envelope.decode(message)
    assert isinstance(event, SourceEvent) and event.changes.stage is Stage.SAL


async def test_when_the_bus_is_down_the_platform_gets_503_with_retry_after_and_nothing_is_acknowledged(
    tmp_path: Path, topics: TopicSettings
) -> None:
    settings = BusSettings(bus=BusKind.LOCAL, local_bus_path=tmp_path / "gone" / "bus.sqlite3")
    async with open_bus(settings, topics=topics.all) as broken_bus:
        shutil.rmtree(tmp_path / "gone")
        (tmp_path / "gone").write_text("the disk under the log is gone")
        body = deliveries.hubspot_events(deliveries.hubspot_stage_change(9, "lead"))
        async with client_for(broken_bus, topics) as client:
            response = await post(client, deliveries.hubspot(body))
            retry = await post(client, deliveries.hubspot(body))

    assert response.status_code == 503 and retry.status_code == 503  # not remembered as published
    assert response.headers["retry-after"] == "5"


async def test_logs_carry_ids_and_outcomes_but_no_email_or_secret(
    bus: Bus, topics: TopicSettings, caplog: pytest.LogCaptureFixture
) -> None:
    change = {
        **deliveries.hubspot_stage_change(11, "x"),
        "propertyName": "email",
        "propertyValue": "jane.doe@example.com",
    }
    caplog.set_level(logging.DEBUG)

    async with client_for(bus, topics) as client:
        await post(client, deliveries.hubspot(deliveries.hubspot_events(change)))
        await post(client, deliveries.hubspot(b"[]", secret="not-the-secret"))

    text = "\n".join(f"{r.getMessage()} {json.dumps(vars(r), default=str)}" for r in caplog.records)
    assert "webhook hubspot accepted" in text and "request_id" in text
    assert "jane.doe@example.com" not in text
    assert deliveries.HUBSPOT_SECRET not in text
