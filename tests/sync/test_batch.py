"""A consumer batch handled at once leaves the database exactly as its events handled one by one.

Random batches of events about a few people, from both systems: creations, emails, stage values
(echoes of our own writes among them), scores, owners, merges, deletions and redeliveries, in
random source-time order. The same events go through `handle_batch` (one transaction per batch) on
one database and through `handle` (one transaction per event) on another; every table must end the
same, and so must each event's outcome. `handle_batch` runs without the consumer's fallback, so an
error or a conflict in it fails the test instead of being handled one by one.
"""

import json
import random
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from onefunnel.shared.database import create_engine, migrate
from onefunnel.shared.events import (
    Changes,
    ObjectType,
    RecordLink,
    SourceEvent,
    SourceEventType,
    SourceSystem,
)
from onefunnel.shared.funnel import load_funnel
from onefunnel.shared.settings import DatabaseSettings
from onefunnel.shared.stage_mapping import load_stage_mapping
from onefunnel.sync import batch
from onefunnel.sync.batch import handle_batch
from onefunnel.sync.handler import Handled, Rules, handle
from tests.conftest import create_database

pytestmark = pytest.mark.asyncio(loop_scope="session")
FUNNEL = load_funnel()
MAPPING = load_stage_mapping()
RULES = Rules(
    funnel=FUNNEL,
    writable={SourceSystem.HUBSPOT: ObjectType.CONTACT, SourceSystem.SALESFORCE: ObjectType.LEAD},
)
T0 = datetime(2026, 11, 20, 9, tzinfo=UTC)
HUBSPOT_VALUES = [
    "subscriber",
    "lead",
    "marketingqualifiedlead",
    "salesqualifiedlead",
    "opportunity",
    "customer",
    "other",
]
SALESFORCE_VALUES = [
    "Open - Not Contacted",
    "Working - Contacted",
    "Closed - Converted",
    "Closed - Not Converted",
]
PEOPLE = 6


def _event(rng: random.Random, n: int) -> SourceEvent:
    person = rng.randrange(PEOPLE)
    hubspot = rng.random() < 0.55
    system = SourceSystem.HUBSPOT if hubspot else SourceSystem.SALESFORCE
    if not hubspot and rng.random() < 0.3:
        return _opportunity_event(rng, n, person)
    kind = rng.choices(
        ["stage", "score", "owner", "email", "created", "merged", "deleted"], [12, 3, 2, 2, 2, 1, 1]
    )[0]
    event_type = {
        "created": SourceEventType.CREATED,
        "merged": SourceEventType.MERGED,
        "deleted": SourceEventType.DELETED,
    }.get(kind, SourceEventType.CHANGED)
    changes = Changes()
    if kind in ("stage", "created"):
        if hubspot:
            raw = rng.choice(HUBSPOT_VALUES)
            changes = Changes(stage=MAPPING.to_canonical(system, "lifecyclestage", raw), stage_raw=raw)
        else:
            raw = rng.choice(SALESFORCE_VALUES)
            changes = Changes(stage=MAPPING.to_canonical(system, "lead_status", raw), stage_raw=raw)
    elif kind == "score":
        changes = Changes(score=rng.choice([10.0, 40.0, 55.0, 80.0]))
    elif kind == "owner":
        changes = Changes(owner_id=f"owner-{rng.randrange(3)}", campaign=rng.choice([None, "spring"]))
    elif kind == "email" or (kind == "created" and rng.random() < 0.7):
        changes = Changes(stage=changes.stage, stage_raw=changes.stage_raw, email=f"p{person}@example.com")
    return SourceEvent(
        id=uuid.UUID(int=n + 1),
        idempotency_key=f"key-{n}",
        source=system,
        object_type=ObjectType.CONTACT if hubspot else ObjectType.LEAD,
        object_id=f"{'c' if hubspot else '00Q'}{person}",
        event_type=event_type,
        changes=changes,
        merged_object_ids=[f"{'c' if hubspot else '00Q'}{rng.randrange(PEOPLE)}"] if kind == "merged" else [],
        occurred_at=T0 + timedelta(seconds=rng.randrange(600)),
        received_at=T0,
    )


def _opportunity_event(rng: random.Random, n: int, person: int) -> SourceEvent:
    """A converted lead naming its opportunity, or the opportunity's own stage (parked until linked)."""
    converting = rng.random() < 0.4
    raw = "Closed - Converted" if converting else rng.choice(["Prospecting", "Closed Won", "Closed Lost"])
    field = "lead_status" if converting else "opportunity_stage"
    return SourceEvent(
        id=uuid.UUID(int=n + 1),
        idempotency_key=f"key-{n}",
        source=SourceSystem.SALESFORCE,
        object_type=ObjectType.LEAD if converting else ObjectType.OPPORTUNITY,
        object_id=f"00Q{person}" if converting else f"006{person}",
        event_type=SourceEventType.CHANGED,
        changes=Changes(stage=MAPPING.to_canonical(SourceSystem.SALESFORCE, field, raw), stage_raw=raw),
        related=[
            RecordLink(
                system=SourceSystem.SALESFORCE, object_type=ObjectType.OPPORTUNITY, record_id=f"006{person}"
            )
        ]
        if converting
        else [],
        occurred_at=T0 + timedelta(seconds=rng.randrange(600)),
        received_at=T0,
    )


def _batches(seed: int) -> list[list[SourceEvent]]:
    rng = random.Random(seed)
    events = [_event(rng, n) for n in range(rng.randrange(20, 120))]
    events += rng.sample(events, len(events) // 8)  # redeliveries, some within the same batch
    rng.shuffle(events)
    cuts = sorted(rng.sample(range(1, len(events)), 3))
    return [events[a:b] for a, b in zip([0, *cuts], [*cuts, len(events)], strict=True)]


TABLES = {  # every row that matters; lead ids are named after the first event audited for them
    "sync_lead": "select id, stage, email, score, owner_id, campaign, lead_source, version, "
    "merged_into, deleted_at is not null from sync_lead",
    "sync_lead_link": "select lead_id, system, record_id, object_type, stage_raw from sync_lead_link",
    "sync_stage_event": "select lead_id, event_id, system, stage, raw, score, occurred_at "
    "from sync_stage_event",
    "sync_audit": "select lead_id, event_id, outcome, from_stage, to_stage, reason "
    "from sync_audit order by id",
    "sync_outbox": "select payload from sync_outbox order by id",
    "sync_write": 'select lead_id, system, stage, value, backward, "create", "delete", record_id, status, '
    "cause_event_id from sync_write order by id",
    "sync_expected_echo": "select lead_id, system, value from sync_expected_echo order by id",
    "sync_inbox": "select source, idempotency_key from sync_inbox",
    "sync_parked_event": "select event_id from sync_parked_event order by id",
}


async def _snapshot(engine: AsyncEngine) -> dict[str, object]:
    async with engine.connect() as connection:
        leads: dict[str, str] = {}  # a lead by the first event audited for it: the same in both databases
        audits = await connection.execute(text("select lead_id, event_id from sync_audit order by id"))
        for lead_id, event_id in audits:  # SQLite keeps uuids as 32 hex digits, JSON with dashes
            for form in (uuid.UUID(str(lead_id)).hex, str(uuid.UUID(str(lead_id)))):
                leads.setdefault(form, f"lead-of-{uuid.UUID(str(event_id))}")
        snapshot: dict[str, object] = {}
        for table, query in TABLES.items():
            rows = [tuple(_anonymous(v, leads) for v in row) for row in await connection.execute(text(query))]
            if table == "sync_outbox":  # the transition id is derived from the (random) lead id
                rows = [(json.dumps({**json.loads(str(p)), "id": None}, sort_keys=True),) for (p,) in rows]
            snapshot[table] = rows if "order by" in query else sorted(rows, key=repr)
    return snapshot


def _anonymous(value: object, leads: dict[str, str]) -> object:
    text_value = str(value)
    for lead_id, name in leads.items():
        text_value = text_value.replace(lead_id, name)
    if isinstance(value, datetime):
        return value.replace(tzinfo=value.tzinfo or UTC).isoformat()
    return text_value


def _outcomes(handled: list[Handled]) -> list[str]:
    return [h.outcome for h in handled]


@pytest.fixture(params=["sqlite", "postgresql"])
async def two_databases(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[AsyncEngine, AsyncEngine]]:
    engines = []
    for name in ("batch", "single"):
        if request.param == "sqlite":
            url = f"sqlite+aiosqlite:///{tmp_path}/{name}.sqlite3"
        else:
            url = await create_database(request.getfixturevalue("postgres_server_url"))
        engine = create_engine(DatabaseSettings(database_url=url))
        await migrate(engine, service="sync")
        engines.append(engine)
    yield engines[0], engines[1]
    for engine in engines:
        await engine.dispose()


@pytest.mark.parametrize(
    ("seed", "lookahead"), [(seed, 100) for seed in range(8)] + [(8, 3), (9, 3), (10, 1)]
)
async def test_a_batch_ends_exactly_as_its_events_one_by_one(
    two_databases: tuple[AsyncEngine, AsyncEngine], seed: int, lookahead: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(batch, "LOOKAHEAD", lookahead)
    await _compare(two_databases, _batches(seed))


async def test_an_opportunity_parked_and_linked_within_one_batch_ends_as_one_by_one(
    two_databases: tuple[AsyncEngine, AsyncEngine],
) -> None:
    rng = random.Random(1)
    events = [_event(rng, n) for n in range(40)]
    opportunity, conversion = (
        _opportunity_event(random.Random(seed), 100 + seed, person=0) for seed in (0, 1)
    )  # seed 0: the opportunity's stage, seed 1: the lead's conversion naming it
    assert (opportunity.object_type, conversion.object_type) == (ObjectType.OPPORTUNITY, ObjectType.LEAD)
    await _compare(two_databases, [[*events[:5], opportunity, conversion, opportunity, *events[5:]]])


async def test_an_unparked_event_that_folds_another_lead_in_is_left_to_handle(
    two_databases: tuple[AsyncEngine, AsyncEngine],
) -> None:
    """An opportunity parked naming a contact that another lead links later: unparking it folds that lead
    in, which the batch cannot plan (nor know the contact's link: it looks up its own events' records)."""

    def salesforce(n: int, object_type: ObjectType, record_id: str, related: list[str]) -> SourceEvent:
        raw = "Prospecting" if object_type is ObjectType.OPPORTUNITY else "Closed - Converted"
        field = "opportunity_stage" if object_type is ObjectType.OPPORTUNITY else "lead_status"
        return SourceEvent(
            id=uuid.UUID(int=500 + n),
            idempotency_key=f"fold-{n}",
            source=SourceSystem.SALESFORCE,
            object_type=object_type,
            object_id=record_id,
            event_type=SourceEventType.CHANGED,
            changes=Changes(stage=MAPPING.to_canonical(SourceSystem.SALESFORCE, field, raw), stage_raw=raw),
            related=[
                RecordLink(system=SourceSystem.SALESFORCE, object_type=ObjectType.CONTACT, record_id=r)
                if r.startswith("003")
                else RecordLink(
                    system=SourceSystem.SALESFORCE, object_type=ObjectType.OPPORTUNITY, record_id=r
                )
                for r in related
            ],
            occurred_at=T0 + timedelta(seconds=n),
            received_at=T0,
        )

    opportunity = salesforce(1, ObjectType.OPPORTUNITY, "006A", ["003A"])  # parked: nothing is linked yet
    contact_linked = salesforce(2, ObjectType.LEAD, "00Q1", ["003A"])  # lead 1 links the contact
    conversion = salesforce(3, ObjectType.LEAD, "00Q2", ["006A"])  # lead 2 links the opportunity: unparked
    rng = random.Random(3)
    await _compare(
        two_databases,
        [[opportunity], [contact_linked], [*(_event(rng, n) for n in range(5)), conversion, _event(rng, 6)]],
    )


async def test_a_write_and_its_echo_within_one_batch_end_as_one_by_one(
    two_databases: tuple[AsyncEngine, AsyncEngine],
) -> None:
    """Salesforce moves the lead to sal: a HubSpot write of salesqualifiedlead, whose webhook comes back in
    the same batch and is an echo (and a second real change after it is not)."""

    def event(n: int, system: SourceSystem, raw: str, field: str, email: str | None = None) -> SourceEvent:
        hubspot = system is SourceSystem.HUBSPOT
        return SourceEvent(
            id=uuid.UUID(int=700 + n),
            idempotency_key=f"echo-{n}",
            source=system,
            object_type=ObjectType.CONTACT if hubspot else ObjectType.LEAD,
            object_id="c0" if hubspot else "00Q0",
            event_type=SourceEventType.CHANGED,
            changes=Changes(stage=MAPPING.to_canonical(system, field, raw), stage_raw=raw, email=email),
            occurred_at=T0 + timedelta(seconds=n),
            received_at=T0,
        )

    await _compare(
        two_databases,
        [
            [
                event(1, SourceSystem.HUBSPOT, "marketingqualifiedlead", "lifecyclestage", "p0@example.com"),
                event(2, SourceSystem.SALESFORCE, "Working - Contacted", "lead_status", "p0@example.com"),
                event(3, SourceSystem.HUBSPOT, "salesqualifiedlead", "lifecyclestage"),  # the echo
                event(
                    4, SourceSystem.HUBSPOT, "salesqualifiedlead", "lifecyclestage"
                ),  # not one: already used
            ]
        ],
    )


async def _compare(databases: tuple[AsyncEngine, AsyncEngine], batches: list[list[SourceEvent]]) -> None:
    """Each batch through `handle_batch` on one database and one by one on the other: the same result."""
    batched, single = databases
    batch_sessions = async_sessionmaker(batched, expire_on_commit=False)
    single_sessions = async_sessionmaker(single, expire_on_commit=False)
    now = T0 + timedelta(hours=1)
    for events in batches:
        async with batch_sessions() as session, session.begin():
            by_batch = await handle_batch(session, events, rules=RULES, now=now)
        by_event = []
        for event in events:
            async with single_sessions() as session, session.begin():
                by_event.append(await handle(session, event, rules=RULES, now=now))
        assert _outcomes(by_batch) == _outcomes(by_event)

    assert await _snapshot(batched) == await _snapshot(single)
