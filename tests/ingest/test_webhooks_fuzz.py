"""Property-based: whatever a correctly signed body holds, no endpoint answers 5xx or crashes."""

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from onefunnel.ingest.app import create_app
from onefunnel.shared.bus.local import LocalBus
from onefunnel.shared.settings import TopicSettings
from onefunnel.shared.stage_mapping import load_stage_mapping
from tests.ingest import deliveries
from tests.ingest.deliveries import Request

ALLOWED = {200, 400, 413, 415}

scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)
maybe = scalars | json_values
# Edges that overflow datetime arithmetic, beside arbitrary values.
extreme_times = st.sampled_from(
    [
        "0001-01-01T00:00:00+01:00",
        "9999-12-31T23:59:59-01:00",
        "0001-01-01 00:00:00",
        10**20,
        float("inf"),
        -1,
    ]
)
timestamps = (
    extreme_times | st.integers(min_value=-(2**40), max_value=2**45) | st.text(max_size=30) | st.none()
)

hubspot_bodies = st.lists(
    st.fixed_dictionaries(
        {
            "objectId": maybe,
            "eventId": maybe,
            "portalId": maybe,
            "subscriptionId": maybe,
            "occurredAt": timestamps,
            "subscriptionType": st.sampled_from(
                [
                    "contact.creation",
                    "contact.propertyChange",
                    "contact.merge",
                    "contact.deletion",
                    "contact.restore",
                    "object.propertyChange",
                ]
            )
            | maybe,
            "propertyName": st.sampled_from(["lifecyclestage", "hs_lead_status", "hubspotscore", "email"])
            | maybe,
            "propertyValue": maybe,
            "mergedObjectIds": maybe,
            "primaryObjectId": maybe,
            "objectTypeId": maybe,
        }
    ),
    max_size=5,
)
mautic_bodies = st.dictionaries(
    st.sampled_from(
        [
            "mautic.lead_post_save_new",
            "mautic.lead_post_save_update",
            "mautic.lead_points_change",
            "mautic.lead_post_delete",
            "mautic.email_on_open",
        ]
    )
    | st.text(max_size=10),
    st.lists(
        st.fixed_dictionaries(
            {"contact": json_values, "id": maybe, "timestamp": timestamps, "points": maybe}
        ),
        max_size=3,
    )
    | maybe,
    max_size=3,
)
pipedrive_bodies = st.fixed_dictionaries(
    {
        "meta": st.fixed_dictionaries(
            {
                "id": maybe,
                "entity": st.sampled_from(["person", "deal", "lead"]) | maybe,
                "action": st.sampled_from(["create", "change", "delete"]) | maybe,
                "entity_id": maybe,
                "timestamp": timestamps,
                "version": maybe,
                "merged_to_id": maybe,
            }
        )
        | maybe,
        "data": json_values,
        "previous": json_values,
    }
) | st.fixed_dictionaries({"v": st.just(1), "meta": json_values, "current": json_values, "event": maybe})
salesforce_bodies = st.fixed_dictionaries(
    {
        "organizationId": st.just(deliveries.SALESFORCE_ORG) | maybe,
        "events": st.lists(
            st.fixed_dictionaries(
                {
                    "eventId": maybe,
                    "objectType": st.sampled_from(["Lead", "Contact", "Opportunity"]) | maybe,
                    "recordId": maybe,
                    "fields": json_values,
                    "deleted": maybe,
                    "mergedIds": maybe,
                }
            ),
            max_size=3,
        )
        | maybe,
    }
)
marketo_bodies = st.fixed_dictionaries(
    {
        "lead_id": maybe,
        "email": maybe,
        "lead_status": maybe,
        "lead_score": maybe,
        "lead_source": maybe,
        "campaign_id": maybe,
        "program": maybe,
        "owner_email": maybe,
        "date_time": timestamps,
    }
)
generic_bodies = st.fixed_dictionaries(
    {
        "type": st.sampled_from(["contact.created", "contact.changed", "contact.merged", "contact.deleted"])
        | maybe,
        "object_type": maybe,
        "object_id": maybe,
        "occurred_at": timestamps,
        "changes": st.dictionaries(st.sampled_from(["stage", "status", "score", "email"]), maybe, max_size=3)
        | maybe,
    }
)

SOURCES: dict[str, tuple[Callable[[bytes], Request], st.SearchStrategy[object]]] = {
    "hubspot": (deliveries.hubspot, hubspot_bodies),
    "mautic": (deliveries.mautic, mautic_bodies),
    "pipedrive": (deliveries.pipedrive, pipedrive_bodies),
    "salesforce": (deliveries.salesforce_callout, salesforce_bodies),
    "marketo": (deliveries.marketo, marketo_bodies),
    "generic": (deliveries.generic, generic_bodies),
}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    path = Path(tmp_path_factory.mktemp("fuzz")) / "bus.sqlite3"
    suffix = uuid.uuid4().hex[:8]
    topics = TopicSettings(topic_source_events=f"events-{suffix}", topic_dead_letters=f"dead-{suffix}")
    app = create_app(
        bus=LocalBus(path=path), settings=deliveries.settings(), topics=topics, mapping=load_stage_mapping()
    )
    with TestClient(app, base_url=deliveries.BASE_URL, raise_server_exceptions=True) as test_client:
        yield test_client


def post(client: TestClient, request: Request) -> int:
    path, headers, body = request
    status: int = client.post(path, headers=headers, content=body).status_code
    return status


@pytest.mark.parametrize("source", sorted(SOURCES))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_no_signed_json_body_makes_an_endpoint_fail(
    client: TestClient, source: str, data: st.DataObject
) -> None:
    sign, shaped = SOURCES[source]
    document = data.draw(shaped | json_values)

    assert post(client, sign(json.dumps(document).encode())) in ALLOWED


@pytest.mark.parametrize("source", sorted(SOURCES))
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.binary(max_size=2048))
def test_no_signed_byte_string_makes_an_endpoint_fail(client: TestClient, source: str, body: bytes) -> None:
    sign, _ = SOURCES[source]

    assert post(client, sign(body)) in ALLOWED


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.binary(max_size=2048) | st.text(max_size=500).map(str.encode))
def test_no_outbound_message_body_makes_the_salesforce_endpoint_fail(client: TestClient, body: bytes) -> None:
    xml = b'<?xml version="1.0"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/">'
    assert post(client, deliveries.salesforce_outbound(xml + body)) in ALLOWED | {401}
