"""Sync end to end: the platform fakes, ingest, real Kafka, real PostgreSQL and the sync service."""

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import select
from sqlmodel import col

from onefunnel.shared.stages import Stage
from onefunnel.sync.tables import LeadRow, StageEventRow
from onefunnel.sync.write_results import replay_failed
from tests.conftest import KafkaBroker
from tests.ingest import deliveries
from tests.sync.world import API_TOKEN, World, world

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.kafka]


@pytest.fixture
async def funnel_world(kafka: KafkaBroker, postgres_url: str) -> AsyncIterator[World]:
    async with world(bootstrap_servers=kafka.bootstrap_servers, database_url=postgres_url) as built:
        yield built


async def test_an_mql_set_in_hubspot_appears_in_salesforce(funnel_world: World) -> None:
    w = funnel_world
    contact = w.hubspot.user_creates_contact("ada@example.com", "lead")
    await w.settle()
    w.hubspot.user_sets_lifecyclestage(contact, "marketingqualifiedlead")
    await w.settle()

    assert await w.stage("ada@example.com") is Stage.MQL
    assert w.salesforce_lead("ada@example.com")["Status"] == "Open - Not Contacted"
    moves = [(t.from_stage, t.to_stage) for t in await w.transitions()]
    assert moves == [(None, Stage.LEAD), (Stage.LEAD, Stage.MQL)]


async def handed_off(w: World, email: str) -> tuple[str, str]:
    """A lead marketing handed to sales: (HubSpot contact id, Salesforce lead id)."""
    contact = w.hubspot.user_creates_contact(email, "lead")
    await w.settle()
    w.hubspot.user_sets_lifecyclestage(contact, "marketingqualifiedlead")
    await w.settle()
    return contact, str(w.salesforce_lead(email)["Id"])


async def test_salesforce_converts_a_lead_and_later_wins_it_and_hubspot_follows(funnel_world: World) -> None:
    w = funnel_world
    _, lead_id = await handed_off(w, "grace@example.com")

    w.salesforce.user_sets_status(lead_id, "Working - Contacted")
    await w.settle()
    assert (await w.stage("grace@example.com"), w.hubspot_stage("grace@example.com")) == (
        Stage.SAL,
        "salesqualifiedlead",
    )
    conversion = w.salesforce.user_converts(lead_id)
    await w.settle()
    assert (await w.stage("grace@example.com"), w.hubspot_stage("grace@example.com")) == (
        Stage.OPPORTUNITY,
        "opportunity",
    )
    w.salesforce.user_sets_opportunity_stage(conversion.opportunity_id, "Closed Won")
    await w.settle()

    assert await w.stage("grace@example.com") is Stage.CUSTOMER
    assert w.hubspot_stage("grace@example.com") == "customer"
    moves = [(t.from_stage, t.to_stage) for t in await w.transitions()]
    assert moves[-3:] == [
        (Stage.MQL, Stage.SAL),
        (Stage.SAL, Stage.OPPORTUNITY),
        (Stage.OPPORTUNITY, Stage.CUSTOMER),
    ] or moves[-4:] == [
        (Stage.MQL, Stage.SAL),
        (Stage.SAL, Stage.SQL),
        (Stage.SQL, Stage.OPPORTUNITY),
        (Stage.OPPORTUNITY, Stage.CUSTOMER),
    ]


async def test_the_same_change_made_in_both_systems_at_once_converges(funnel_world: World) -> None:
    w = funnel_world
    contact, lead_id = await handed_off(w, "linus@example.com")

    w.salesforce.user_sets_status(lead_id, "Working - Contacted")
    w.hubspot.user_sets_lifecyclestage(
        contact, "salesqualifiedlead"
    )  # marketing jumps ahead at the same time
    await w.settle()

    assert await w.stage("linus@example.com") is Stage.SAL
    assert w.hubspot_stage("linus@example.com") == "salesqualifiedlead"
    assert w.salesforce_lead("linus@example.com")["Status"] == "Working - Contacted"


async def test_a_recycle_to_nurture_keeps_its_reason_and_moves_hubspot_back(funnel_world: World) -> None:
    w = funnel_world
    _, lead_id = await handed_off(w, "ken@example.com")
    w.salesforce.user_sets_status(lead_id, "Working - Contacted")
    await w.settle()
    conversion = w.salesforce.user_converts(lead_id)
    await w.settle()

    w.salesforce.user_sets_opportunity_stage(conversion.opportunity_id, "Closed Lost")
    await w.settle()

    assert await w.stage("ken@example.com") is Stage.NURTURE
    assert w.hubspot_stage("ken@example.com") == "lead"
    last = (await w.transitions())[-1]
    assert (last.to_stage, last.cause.reason) == (Stage.NURTURE, "salesforce set 'Closed Lost'")


async def test_disqualifying_in_salesforce_marks_the_hubspot_contact_other(funnel_world: World) -> None:
    w = funnel_world
    _, lead_id = await handed_off(w, "barbara@example.com")

    w.salesforce.user_sets_status(lead_id, "Closed - Not Converted")
    await w.settle()

    assert await w.stage("barbara@example.com") is Stage.DISQUALIFIED
    assert w.hubspot_stage("barbara@example.com") == "other"


async def test_every_real_change_causes_exactly_one_write_and_no_ping_pong(funnel_world: World) -> None:
    w = funnel_world
    _, lead_id = await handed_off(w, "edsger@example.com")
    w.hubspot.stage_writes.clear()
    w.salesforce.calls.clear()

    w.salesforce.user_sets_status(lead_id, "Working - Contacted")
    await w.settle()
    w.salesforce.user_converts(lead_id)
    await w.settle()

    assert len(w.hubspot.stage_writes) == 2  # salesqualifiedlead, then opportunity: the echoes caused none
    assert [
        c.method for c in w.salesforce.calls if c.method in ("PATCH", "POST") and "sobjects" in c.path
    ] == []


async def test_a_429_storm_delays_the_write_but_loses_nothing(funnel_world: World) -> None:
    w = funnel_world
    _, lead_id = await handed_off(w, "frances@example.com")
    w.hubspot.inject_rate_limit(count=6, retry_after=0.05)

    w.salesforce.user_sets_status(lead_id, "Working - Contacted")
    await w.settle()

    assert w.hubspot_stage("frances@example.com") == "salesqualifiedlead"
    assert sum(1 for c in w.hubspot.calls if c.status == 429) == 6


async def test_a_refused_write_is_listed_as_a_failure_and_replayed_once_fixed(funnel_world: World) -> None:
    w = funnel_world
    _, lead_id = await handed_off(w, "margaret@example.com")
    w.hubspot.inject_errors(status=400, count=1)  # a validation error: permanent

    w.salesforce.user_sets_status(lead_id, "Working - Contacted")
    await w.settle()
    unauthorized = await w.sync.get("/v1/sync/failures")
    listed = (await w.sync.get("/v1/sync/failures", headers={"Authorization": f"Bearer {API_TOKEN}"})).json()

    assert unauthorized.status_code == 401
    assert [(f["system"], f["value"]) for f in listed["failures"]] == [("hubspot", "salesqualifiedlead")]
    assert w.hubspot_stage("margaret@example.com") == "marketingqualifiedlead"
    assert await replay_failed(w.sessions) == 1
    await w.settle()
    assert w.hubspot_stage("margaret@example.com") == "salesqualifiedlead"


async def test_a_merge_in_hubspot_folds_two_leads_into_one_without_losing_history(
    funnel_world: World,
) -> None:
    w = funnel_world
    first = w.hubspot.user_creates_contact("alan@example.com", "lead")
    second = w.hubspot.user_creates_contact("alan.t@example.com", "subscriber")
    await w.settle()
    merged_away = await w.lead("alan.t@example.com")

    w.hubspot.user_merges(first, second)
    await w.settle()

    survivor = await w.lead("alan@example.com")
    async with w.sessions() as session:
        loser = await session.get(LeadRow, merged_away.id)
        history = (
            await session.scalars(select(StageEventRow).where(col(StageEventRow.lead_id) == survivor.id))
        ).all()
    assert loser is not None and loser.merged_into == survivor.id
    assert len(history) >= 2 and survivor.stage == Stage.LEAD


async def test_two_changes_delivered_in_reverse_order_end_at_the_later_one(funnel_world: World) -> None:
    w = funnel_world
    at = int(datetime(2026, 11, 20, 9, tzinfo=UTC).timestamp() * 1000)
    early = {**deliveries.hubspot_stage_change(7001, "lead"), "occurredAt": at}
    late = {**deliveries.hubspot_stage_change(7001, "marketingqualifiedlead"), "occurredAt": at + 60_000}
    email = {
        **deliveries.hubspot_stage_change(7001, "x"),
        "propertyName": "email",
        "propertyValue": "ida@example.com",
    }

    for change in (email, late, early):  # the later change arrives first
        path, headers, body = deliveries.hubspot(deliveries.hubspot_events(change))
        assert (await w.ingest.post(path, headers=headers, content=body)).status_code == 200
    await w.settle()

    assert await w.stage("ida@example.com") is Stage.MQL
    assert [(t.from_stage, t.to_stage) for t in await w.transitions()] == [(None, Stage.MQL)]


async def test_a_deleted_contact_is_unlinked_and_its_lead_keeps_no_personal_data(funnel_world: World) -> None:
    w = funnel_world
    contact = w.hubspot.user_creates_contact("rosalind@example.com", "lead")
    await w.settle()
    lead = await w.lead("rosalind@example.com")
    deletion = {
        **deliveries.hubspot_stage_change(int(contact), "lead"),
        "subscriptionType": "contact.deletion",
    }

    path, headers, body = deliveries.hubspot(deliveries.hubspot_events(deletion))
    assert (await w.ingest.post(path, headers=headers, content=body)).status_code == 200
    await w.settle()

    async with w.sessions() as session:
        purged = await session.get(LeadRow, lead.id)
    assert purged is not None and purged.email is None and purged.deleted_at is not None
    assert purged.stage == Stage.LEAD  # the anonymous funnel fact stays


async def test_with_the_propagate_policy_a_contact_deleted_in_hubspot_is_deleted_in_salesforce(
    kafka: KafkaBroker, postgres_url: str
) -> None:
    async with world(
        bootstrap_servers=kafka.bootstrap_servers, database_url=postgres_url, propagate_deletes=True
    ) as w:
        contact, lead_id = await handed_off(w, "hedy@example.com")
        lead = await w.lead("hedy@example.com")
        deletion = {
            **deliveries.hubspot_stage_change(int(contact), "lead"),
            "subscriptionType": "contact.deletion",
        }

        path, headers, body = deliveries.hubspot(deliveries.hubspot_events(deletion))
        assert (await w.ingest.post(path, headers=headers, content=body)).status_code == 200
        await w.settle()

        assert lead_id not in w.salesforce.snapshot()["Lead"]
        async with w.sessions() as session:
            purged = await session.get(LeadRow, lead.id)
        assert purged is not None and purged.email is None and purged.deleted_at is not None
