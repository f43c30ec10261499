"""The reconciliation rules, table-tested on the pure function, and their convergence property-tested."""

import random
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from onefunnel.shared.events import Changes, ObjectType, SourceEvent, SourceEventType, SourceSystem
from onefunnel.shared.funnel import load_funnel
from onefunnel.shared.stages import Stage
from onefunnel.sync.reconcile import Decision, LeadState, LinkState, Outcome, StageEvent, Write, decide, fold

FUNNEL = load_funnel()
HUBSPOT, SALESFORCE = SourceSystem.HUBSPOT, SourceSystem.SALESFORCE
WRITABLE = {HUBSPOT: ObjectType.CONTACT, SALESFORCE: ObjectType.LEAD}
T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
CONTACT = LinkState(HUBSPOT, ObjectType.CONTACT, "101")
SF_LEAD = LinkState(SALESFORCE, ObjectType.LEAD, "00Q1")
EMAIL = frozenset({"email"})


def event(
    system: SourceSystem,
    stage: Stage | None = None,
    *,
    raw: str | None = None,
    at: datetime = T0,
    score: float | None = None,
) -> SourceEvent:
    return SourceEvent(
        id=uuid.uuid4(),
        idempotency_key=uuid.uuid4().hex,
        source=system,
        object_type=ObjectType.CONTACT if system is HUBSPOT else ObjectType.LEAD,
        object_id="101" if system is HUBSPOT else "00Q1",
        event_type=SourceEventType.CHANGED,
        changes=Changes(
            stage=stage, stage_raw=raw if raw is not None else (str(stage) if stage else None), score=score
        ),
        occurred_at=at,
        received_at=at,
    )


def entry(system: SourceSystem, stage: Stage, at: datetime) -> StageEvent:
    return StageEvent(uuid.uuid4(), system, stage, str(stage), None, at)


def at_stage(
    stage: Stage | None, *links: LinkState, at: datetime = T0 - timedelta(hours=1), **values: object
) -> LeadState:
    """A lead whose history folds to `stage`, reached by the owner of each step."""
    owner = {s: HUBSPOT if FUNNEL.owners[s] == "marketing" else SALESFORCE for s in Stage}
    path = [] if stage is None else ([Stage.MQL, stage] if stage.is_side_state else [stage])
    history = [entry(owner[s], s, at - timedelta(minutes=len(path) - i)) for i, s in enumerate(path)]
    state = LeadState(history=history, links=links)
    assert fold(state.history, FUNNEL, known_fields=frozenset()).stage is stage
    return replace(state, **values)  # type: ignore[arg-type]


def run(state: LeadState, incoming: SourceEvent) -> Decision:
    return decide(state, incoming, FUNNEL, writable=WRITABLE)


def test_an_mql_set_in_hubspot_is_applied_and_handed_off_to_salesforce_as_a_new_lead() -> None:
    decision = run(at_stage(Stage.LEAD, CONTACT), event(HUBSPOT, Stage.MQL, raw="marketingqualifiedlead"))

    assert decision.outcome is Outcome.APPLIED and decision.stage is Stage.MQL
    assert [(m.from_stage, m.to_stage) for m in decision.moves] == [(Stage.LEAD, Stage.MQL)]
    assert decision.writes == (
        Write(SALESFORCE, Stage.MQL, "Open - Not Contacted", backward=False, create=True),
    )


def test_a_lead_below_the_handoff_stage_is_not_created_in_the_crm() -> None:
    decision = run(at_stage(Stage.SUBSCRIBER, CONTACT), event(HUBSPOT, Stage.LEAD, raw="lead"))

    assert decision.outcome is Outcome.APPLIED and decision.writes == ()


def test_sales_accepting_a_lead_in_salesforce_moves_hubspot_forward() -> None:
    contact = replace(CONTACT, stage_raw="marketingqualifiedlead")

    decision = run(
        at_stage(Stage.MQL, contact, SF_LEAD), event(SALESFORCE, Stage.SAL, raw="Working - Contacted")
    )

    assert decision.outcome is Outcome.APPLIED
    assert decision.writes == (Write(HUBSPOT, Stage.SAL, "salesqualifiedlead", backward=False, create=False),)


def test_marketing_cannot_move_a_lead_to_a_stage_sales_owns() -> None:
    decision = run(at_stage(Stage.MQL, CONTACT, SF_LEAD), event(HUBSPOT, Stage.SQL, raw="salesqualifiedlead"))

    assert decision.outcome is Outcome.REJECTED_AUTHORITY and decision.writes == ()
    assert decision.recorded is not None  # kept in the history: recorded, not applied


def test_marketing_cannot_downgrade_a_crm_customer() -> None:
    decision = run(at_stage(Stage.CUSTOMER, CONTACT, SF_LEAD), event(HUBSPOT, Stage.LEAD, raw="lead"))

    assert decision.outcome is Outcome.REJECTED_REGRESSION and decision.stage is Stage.CUSTOMER


def test_sales_recycling_an_opportunity_to_nurture_is_a_backward_write_with_its_reason() -> None:
    contact = replace(CONTACT, stage_raw="opportunity")

    decision = run(
        at_stage(Stage.OPPORTUNITY, contact, SF_LEAD), event(SALESFORCE, Stage.NURTURE, raw="Closed Lost")
    )

    assert decision.outcome is Outcome.APPLIED and decision.stage is Stage.NURTURE
    assert decision.reason == "salesforce set 'Closed Lost'"
    assert decision.writes == (Write(HUBSPOT, Stage.NURTURE, "lead", backward=True, create=False),)


def test_disqualifying_is_a_move_only_sales_may_make() -> None:
    state = at_stage(Stage.MQL, CONTACT, SF_LEAD)

    by_sales = run(state, event(SALESFORCE, Stage.DISQUALIFIED, raw="Closed - Not Converted"))
    by_marketing = run(state, event(HUBSPOT, Stage.DISQUALIFIED, raw="other"))

    assert by_sales.outcome is Outcome.APPLIED and by_sales.writes[0].value == "other"
    assert by_marketing.outcome is Outcome.REJECTED_AUTHORITY


def test_the_echo_of_our_own_write_changes_nothing_and_is_not_history() -> None:
    state = at_stage(Stage.SAL, CONTACT, SF_LEAD, expected_echoes=((HUBSPOT, "salesqualifiedlead"),))

    decision = run(state, event(HUBSPOT, Stage.SQL, raw="SalesQualifiedLead"))

    assert decision.outcome is Outcome.ECHO and decision.echo == (HUBSPOT, "salesqualifiedlead")
    assert decision.recorded is None


def test_the_echo_is_recognised_even_after_a_newer_real_change() -> None:
    state = at_stage(
        Stage.SQL, CONTACT, SF_LEAD, at=T0 + timedelta(minutes=5), expected_echoes=((HUBSPOT, "lead"),)
    )

    assert run(state, event(HUBSPOT, Stage.LEAD, raw="lead", at=T0)).outcome is Outcome.ECHO


def test_a_cleared_value_moves_nothing() -> None:
    assert run(at_stage(Stage.MQL, CONTACT), event(HUBSPOT, raw="")).outcome is Outcome.NO_OP


def test_a_backward_move_older_than_the_current_stage_cannot_undo_it() -> None:
    state = LeadState(
        history=[
            entry(HUBSPOT, Stage.MQL, T0 - timedelta(minutes=5)),
            entry(SALESFORCE, Stage.OPPORTUNITY, T0 - timedelta(minutes=1)),
            entry(SALESFORCE, Stage.CUSTOMER, T0 + timedelta(minutes=10)),
        ],
        links=(CONTACT, SF_LEAD),
    )

    decision = run(state, event(SALESFORCE, Stage.NURTURE, raw="Closed Lost", at=T0))

    assert decision.outcome is Outcome.STALE and decision.stage is Stage.CUSTOMER
    assert decision.moves == () and decision.writes == ()


def test_a_forward_move_that_arrives_late_still_applies() -> None:
    state = at_stage(Stage.MQL, CONTACT, SF_LEAD, at=T0 + timedelta(minutes=10))

    decision = run(state, event(SALESFORCE, Stage.SAL, raw="Working - Contacted", at=T0))

    assert decision.outcome is Outcome.APPLIED and decision.stage is Stage.SAL


def test_a_late_event_that_rewrites_history_publishes_the_net_change() -> None:
    # mql at 09:00 and a recycle at 09:20 arrive before the disqualification made at 09:10.
    state = LeadState(
        history=[entry(HUBSPOT, Stage.MQL, T0), entry(SALESFORCE, Stage.NURTURE, T0 + timedelta(minutes=20))],
        links=(CONTACT, SF_LEAD),
    )

    decision = run(
        state,
        event(SALESFORCE, Stage.DISQUALIFIED, raw="Closed - Not Converted", at=T0 + timedelta(minutes=10)),
    )

    assert decision.stage is Stage.DISQUALIFIED
    assert [(m.from_stage, m.to_stage) for m in decision.moves] == [(Stage.NURTURE, Stage.DISQUALIFIED)]


def test_the_sales_ready_rule_promotes_to_mql_whichever_system_computed_the_score() -> None:
    state = at_stage(Stage.LEAD, CONTACT, known_fields=EMAIL)

    from_salesforce = run(state, event(SALESFORCE, score=75))
    too_low = run(state, event(HUBSPOT, score=30))
    no_email = run(replace(state, known_fields=frozenset()), event(HUBSPOT, score=90))

    assert from_salesforce.outcome is Outcome.APPLIED and from_salesforce.stage is Stage.MQL
    assert from_salesforce.reason == "sales-ready: score >= 50"
    assert too_low.outcome is Outcome.NO_OP and no_email.outcome is Outcome.NO_OP


def test_a_disqualified_lead_is_not_requalified_by_its_score() -> None:
    state = at_stage(Stage.DISQUALIFIED, CONTACT, known_fields=EMAIL)

    assert run(state, event(HUBSPOT, score=99)).outcome is Outcome.NO_OP


def test_a_value_the_other_system_already_holds_is_not_written_again() -> None:
    contact = replace(CONTACT, stage_raw="salesqualifiedlead")

    decision = run(
        at_stage(Stage.SAL, contact, SF_LEAD), event(SALESFORCE, Stage.SQL, raw="Closed - Converted")
    )

    assert decision.outcome is Outcome.APPLIED and decision.writes == ()


def test_a_new_lead_enters_at_a_stage_its_system_owns() -> None:
    accepted = run(LeadState(links=(SF_LEAD,)), event(SALESFORCE, Stage.SAL, raw="Working - Contacted"))
    not_owned = run(LeadState(links=(SF_LEAD,)), event(SALESFORCE, Stage.MQL, raw="Open - Not Contacted"))
    side_state = run(LeadState(links=(SF_LEAD,)), event(SALESFORCE, Stage.NURTURE, raw="Closed Lost"))

    assert accepted.outcome is Outcome.APPLIED
    assert accepted.writes == (Write(HUBSPOT, Stage.SAL, "salesqualifiedlead", backward=False, create=True),)
    assert not_owned.outcome is Outcome.REJECTED_AUTHORITY
    assert side_state.outcome is Outcome.REJECTED_REGRESSION


MARKETING_STAGES = [Stage.SUBSCRIBER, Stage.LEAD, Stage.MQL]
CRM_STAGES = [Stage.SAL, Stage.SQL, Stage.OPPORTUNITY, Stage.CUSTOMER, Stage.NURTURE, Stage.DISQUALIFIED]
histories = st.lists(
    st.tuples(
        st.sampled_from([HUBSPOT, SALESFORCE]),
        st.integers(0, 5),
        st.integers(0, 10_000),
        st.none() | st.integers(0, 100),
    ),
    min_size=1,
    max_size=14,
)


def arrive(events: list[SourceEvent]) -> LeadState:
    """Process events one by one the way the handler does: keep what each decision records."""
    state = LeadState(known_fields=EMAIL, links=(CONTACT, SF_LEAD))
    for incoming in events:
        decision = run(state, incoming)
        if decision.recorded is not None:
            state = replace(state, history=[*state.history, decision.recorded])
    return state


@settings(max_examples=400)
@given(moves=histories, seed=st.integers(0, 2**32))
def test_any_mix_of_changes_from_both_systems_converges_whatever_the_arrival_order(
    moves: list[tuple[SourceSystem, int, int, int | None]], seed: int
) -> None:
    events = []
    for system, index, seconds, score in moves:
        stages = MARKETING_STAGES if system is HUBSPOT else CRM_STAGES
        stage = None if score is not None else stages[index % len(stages)]
        events.append(event(system, stage, score=score, at=T0 + timedelta(seconds=seconds)))
    shuffled = list(events)
    random.Random(seed).shuffle(shuffled)

    in_order, reordered = arrive(events), arrive(shuffled)

    final = fold(in_order.history, FUNNEL, known_fields=EMAIL).stage
    assert final is fold(reordered.history, FUNNEL, known_fields=EMAIL).stage
    # and the transitions published on the way always end at that stage
    published: list[Stage] = []
    state = LeadState(known_fields=EMAIL, links=(CONTACT, SF_LEAD))
    for incoming in shuffled:
        decision = run(state, incoming)
        if decision.recorded is not None:
            state = replace(state, history=[*state.history, decision.recorded])
        published.extend(m.to_stage for m in decision.moves)
    assert (published[-1] if published else None) is final
