"""Pipedrive adapter: HTTP Basic auth, v2 and v1 webhook payloads.

The payloads follow the field lists and examples of Pipedrive's "Guide for Webhooks v2", the
"Webhooks v2 migration guide" (merges) and the v1 "Guide for Webhooks"; see PLATFORMS.md §5.2.
"""

import base64
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from onefunnel.ingest.platforms.base import Delivery, InvalidPayload, Unauthorized
from onefunnel.ingest.platforms.pipedrive import Pipedrive
from onefunnel.shared.events import ObjectType, SourceEventType, SourceSystem
from onefunnel.shared.stage_mapping import load_stage_mapping
from onefunnel.shared.stages import Stage

NOW = datetime(2024, 9, 27, 14, 26, tzinfo=UTC)
CREDENTIALS = "onefunnel:s3cret-pass:word"
MAPPING = load_stage_mapping()


def _meta(**fields: Any) -> dict[str, Any]:
    return {
        "action": "change",
        "company_id": "12882925",
        "correlation_id": "6f9c1c5e-0f7e-4a43-9d6c-1b8f1c2d3e4f",
        "entity_id": "1",
        "entity": "deal",
        "id": "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d",
        "is_bulk_edit": False,
        "timestamp": "2024-09-27T14:25:28.000Z",
        "type": "general",
        "user_id": "18487521",
        "version": "2.0",
        "webhook_id": "99",
        "webhook_owner_id": "18487521",
        "change_source": "app",
        "permitted_user_ids": ["18487521"],
        "attempt": 1,
        "host": "company.pipedrive.com",
        **fields,
    }


DEAL_WON: dict[str, Any] = {
    "data": {
        "id": 1,
        "title": "Acme deal",
        "status": "won",
        "stage_id": 3,
        "pipeline_id": 1,
        "owner_id": 18487521,
        "person_id": 3,
        "org_id": 2,
        "update_time": "2024-09-27T14:25:28Z",
        "custom_fields": {},
    },
    "previous": {"status": "open", "stage_id": 2},
    "meta": _meta(),
}
V1_DEAL_UPDATED: dict[str, Any] = {
    "v": 1,
    "matches_filters": {"current": [], "previous": []},
    "meta": {
        "v": 1,
        "action": "updated",
        "object": "deal",
        "id": 123,
        "company_id": 12345678,
        "user_id": 98765,
        "host": "company.pipedrive.com",
        "timestamp": 1709913600,
        "timestamp_micro": 1709913600318200,
        "permitted_user_ids": [98765],
        "is_bulk_update": False,
        "webhook_id": "1345147",
    },
    "retry": 0,
    "current": {"id": 123, "title": "Acme deal", "stage_id": 2, "status": "open", "user_id": 98765},
    "previous": {"id": 123, "title": "Acme deal", "stage_id": 1, "status": "open", "user_id": 98765},
    "event": "updated.deal",
}


def _delivery(payload: dict[str, Any] | bytes, *, authorization: str | None = None) -> Delivery:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    if authorization is None:
        authorization = "Basic " + base64.b64encode(CREDENTIALS.encode()).decode()
    headers = {"content-type": "application/json", "user-agent": "Pipedrive Webhooks"}
    if authorization:
        headers["authorization"] = authorization
    return Delivery(
        method="POST",
        url="https://ingest.example.com/webhooks/pipedrive",
        headers=headers,
        query={},
        body=body,
        received_at=NOW,
    )


def _basic(user_password: str) -> str:
    return "Basic " + base64.b64encode(user_password.encode()).decode()


def _only_event(payload: dict[str, Any]) -> Any:
    normalized = Pipedrive(credentials=[CREDENTIALS]).normalize(_delivery(payload), MAPPING)
    assert normalized.ignored == 0
    (event,) = normalized.events
    return event


def _ignored(payload: dict[str, Any]) -> int:
    normalized = Pipedrive(credentials=[CREDENTIALS]).normalize(_delivery(payload), MAPPING)
    assert normalized.events == []
    ignored: int = normalized.ignored
    return ignored


# Verification


def test_pipedrive_accepts_the_configured_basic_credentials() -> None:
    Pipedrive(credentials=[CREDENTIALS]).verify(_delivery(DEAL_WON))


def test_pipedrive_accepts_the_second_credentials_during_rotation() -> None:
    Pipedrive(credentials=["old:pass", CREDENTIALS]).verify(_delivery(DEAL_WON))


def test_pipedrive_rejects_a_wrong_password() -> None:
    with pytest.raises(Unauthorized, match="mismatch"):
        Pipedrive(credentials=[CREDENTIALS]).verify(
            _delivery(DEAL_WON, authorization=_basic("onefunnel:guess"))
        )


def test_pipedrive_rejects_a_delivery_without_an_authorization_header() -> None:
    with pytest.raises(Unauthorized, match="missing Authorization"):
        Pipedrive(credentials=[CREDENTIALS]).verify(_delivery(DEAL_WON, authorization=""))


def test_pipedrive_rejects_another_authorization_scheme() -> None:
    with pytest.raises(Unauthorized, match="not Basic"):
        Pipedrive(credentials=[CREDENTIALS]).verify(_delivery(DEAL_WON, authorization="Bearer abc"))


def test_pipedrive_rejects_malformed_basic_credentials() -> None:
    with pytest.raises(Unauthorized, match="malformed"):
        Pipedrive(credentials=[CREDENTIALS]).verify(_delivery(DEAL_WON, authorization="Basic !!!"))


def test_pipedrive_accepts_a_lower_case_scheme_name() -> None:
    authorization = _basic(CREDENTIALS).replace("Basic", "basic")
    Pipedrive(credentials=[CREDENTIALS]).verify(_delivery(DEAL_WON, authorization=authorization))


def test_pipedrive_rejects_every_delivery_when_no_credentials_are_configured() -> None:
    with pytest.raises(Unauthorized, match="no Basic auth credentials"):
        Pipedrive(credentials=[]).verify(_delivery(DEAL_WON))


def test_pipedrive_refuses_configured_credentials_without_a_colon() -> None:
    with pytest.raises(ValueError, match="user:password"):
        Pipedrive(credentials=["just-a-token"])


# v2 payloads


def test_pipedrive_normalizes_a_won_deal() -> None:
    event = _only_event(DEAL_WON)

    assert event.idempotency_key == "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d"
    assert event.source is SourceSystem.PIPEDRIVE
    assert event.account_id == "12882925"
    assert event.object_type is ObjectType.DEAL
    assert event.object_id == "1"
    assert event.event_type is SourceEventType.CHANGED
    assert event.changes.stage is Stage.CUSTOMER
    assert event.changes.stage_raw == "won"
    assert event.changes.status == "3"
    assert event.changes.owner_id == "18487521"
    assert event.change_source == "app"
    assert event.occurred_at == datetime(2024, 9, 27, 14, 25, 28, tzinfo=UTC)
    assert event.received_at == NOW


@pytest.mark.parametrize("timestamp", [1727447128, "1727447128"])
def test_pipedrive_accepts_an_epoch_timestamp(timestamp: object) -> None:
    event = _only_event({**DEAL_WON, "meta": _meta(timestamp=timestamp)})
    assert event.occurred_at == datetime(2024, 9, 27, 14, 25, 28, tzinfo=UTC)


def test_pipedrive_ignores_a_deal_change_that_touched_no_tracked_field() -> None:
    assert _ignored({**DEAL_WON, "previous": {"title": "Old title"}}) == 1


def test_pipedrive_normalizes_a_new_person_with_its_primary_email() -> None:
    person = {
        "id": 3,
        "name": "Ada Lovelace",
        "owner_id": 18487521,
        "emails": [
            {"label": "home", "value": "ada@home.example", "primary": False},
            {"label": "work", "value": "ada@example.com", "primary": True},
        ],
    }
    event = _only_event(
        {"data": person, "previous": None, "meta": _meta(action="create", entity="person", entity_id="3")}
    )

    assert event.object_type is ObjectType.PERSON
    assert event.event_type is SourceEventType.CREATED
    assert event.changes.email == "ada@example.com"
    assert event.changes.owner_id == "18487521"
    assert event.changes.stage is None


def test_pipedrive_normalizes_lead_creation_and_deletion() -> None:
    lead_id = "adf21080-0e10-11eb-879b-05d71fb426ec"
    lead = {"id": lead_id, "title": "Acme lead", "owner_id": 18487521, "person_id": 3, "is_archived": False}
    created = _only_event(
        {"data": lead, "previous": None, "meta": _meta(action="create", entity="lead", entity_id=lead_id)}
    )
    deleted = _only_event(
        {
            "data": None,
            "previous": lead,
            "meta": _meta(action="delete", entity="lead", entity_id=lead_id, id="e2"),
        }
    )

    assert (created.object_type, created.event_type, created.object_id) == (
        ObjectType.LEAD,
        SourceEventType.CREATED,
        lead_id,
    )
    assert created.changes.owner_id == "18487521"
    assert (deleted.event_type, deleted.object_id) == (SourceEventType.DELETED, lead_id)


def test_pipedrive_turns_the_losers_delete_into_a_merge_into_the_winner() -> None:
    meta = _meta(action="delete", entity="person", entity_id="7", merged_to_id="3")
    event = _only_event({"data": None, "previous": {"id": 7}, "meta": meta})

    assert event.event_type is SourceEventType.MERGED
    assert event.object_id == "3"
    assert event.merged_object_ids == ["7"]


def test_pipedrive_turns_the_winners_change_into_the_same_merge() -> None:
    meta = _meta(action="change", entity="person", entity_id="3", merged_from_id="7")
    event = _only_event(
        {"data": {"id": 3, "owner_id": 18487521}, "previous": {"label_ids": []}, "meta": meta}
    )

    assert event.event_type is SourceEventType.MERGED
    assert event.object_id == "3"
    assert event.merged_object_ids == ["7"]


def test_pipedrive_ignores_objects_it_does_not_track() -> None:
    organization = {"data": {"id": 2, "name": "Acme"}, "previous": None, "meta": _meta(entity="organization")}
    assert _ignored(organization) == 1


# v1 payloads


def test_pipedrive_normalizes_a_v1_deal_update() -> None:
    event = _only_event(V1_DEAL_UPDATED)

    assert event.object_type is ObjectType.DEAL
    assert event.object_id == "123"
    assert event.event_type is SourceEventType.CHANGED
    assert event.account_id == "12345678"
    assert event.changes.stage is Stage.OPPORTUNITY
    assert event.changes.status == "2"
    assert event.changes.owner_id == "98765"
    assert event.occurred_at == datetime(2024, 3, 8, 16, 0, tzinfo=UTC)


def test_pipedrive_keys_a_v1_retry_like_its_first_attempt() -> None:
    first = _only_event(V1_DEAL_UPDATED)
    retry = _only_event({**V1_DEAL_UPDATED, "retry": 2})
    later = _only_event(
        {**V1_DEAL_UPDATED, "meta": {**V1_DEAL_UPDATED["meta"], "timestamp_micro": 1709913700000000}}
    )

    assert first.idempotency_key == retry.idempotency_key
    assert first.idempotency_key != later.idempotency_key
    assert first.idempotency_key != "123"  # v1 meta.id names the deal, not the event


def test_pipedrive_normalizes_a_v1_deletion() -> None:
    payload = {
        **V1_DEAL_UPDATED,
        "meta": {**V1_DEAL_UPDATED["meta"], "action": "deleted", "object": "person", "id": 5},
        "current": None,
        "event": "deleted.person",
    }
    event = _only_event(payload)
    assert (event.object_type, event.event_type, event.object_id) == (
        ObjectType.PERSON,
        SourceEventType.DELETED,
        "5",
    )


# Malformed payloads


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not json", "not JSON"),
        (b"[]", "meta object"),
        (json.dumps({**DEAL_WON, "meta": _meta(action="archive")}).encode(), "known action"),
        (json.dumps({**DEAL_WON, "meta": _meta(id=None)}).encode(), "event id"),
        (json.dumps({**DEAL_WON, "meta": _meta(entity_id=None)}).encode(), "entity id"),
        (json.dumps({**DEAL_WON, "meta": _meta(timestamp="yesterday")}).encode(), "timestamp"),
    ],
)
def test_pipedrive_rejects_a_malformed_payload(body: bytes, reason: str) -> None:
    with pytest.raises(InvalidPayload, match=reason):
        Pipedrive(credentials=[CREDENTIALS]).normalize(_delivery(body), MAPPING)


def test_pipedrive_needs_no_acknowledgement_body() -> None:
    assert Pipedrive(credentials=[CREDENTIALS]).acknowledgement() is None
