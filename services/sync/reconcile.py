"""The reconciliation rules: a pure function of (lead state, incoming event, funnel) -> decision.

No I/O here. The handler loads the state, calls `decide`, and carries out the decision.

Out-of-order safety comes from folding, not from arrival order: a lead keeps the stage events it
has seen (its history), and its canonical stage is the history replayed in the sources' time
order through the rules below. A late event is inserted where it happened and the history is
replayed, so the same events give the same stage whatever order they arrive in.

The rules for one event, in the order they are checked:
1. Echo: a stage value we wrote to a system, coming back from that system, changes nothing and
   does not enter the history. Neither does a cleared value (HubSpot's first step of a recycle).
2. The target stage is the event's stage, or the sales-ready rule's stage when the score so far
   and the lead's required fields meet it (the same rule whichever system computed the score).
3. Authority: a system can only move a lead (a new one too) to a stage its role owns; only the
   shared sales-ready rule promotes a lead whichever system reported the score.
4. Direction: stages only move forward, or out of a side state back into the funnel, except the
   funnel's backward moves (recycle to nurture, disqualify), each recorded with its reason. A side
   state is reached only by such a move, so a new lead cannot start in one.
5. Write-back: when the lead's stage changes, it is written to every other system of the funnel
   that has a value for it and does not hold that value already; a missing record is created there
   when the funnel says (marketing always, the CRM from its hand-off stage).
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from uuid import UUID

from onefunnel.shared.events import ObjectType, SourceEvent, SourceSystem
from onefunnel.shared.funnel import Funnel, Role
from onefunnel.shared.stages import Stage


class Outcome(StrEnum):
    APPLIED = "applied"  # the lead's stage changed
    NO_OP = "no_op"  # nothing to move, or already there
    ECHO = "echo"  # our own write coming back
    REJECTED_AUTHORITY = "rejected_authority"  # the system does not own the target stage
    REJECTED_REGRESSION = "rejected_regression"  # a backward move the funnel does not allow
    STALE = "stale"  # valid where it happened, but newer changes already decide the stage


@dataclass(frozen=True)
class StageEvent:
    """What a lead's history keeps of an event that may move its stage."""

    event_id: UUID
    system: SourceSystem
    stage: Stage | None
    raw: str | None
    score: float | None
    occurred_at: datetime

    @property
    def order(self) -> tuple[datetime, str, str]:
        return (self.occurred_at, self.system, str(self.event_id))  # ties broken the same way everywhere


@dataclass(frozen=True)
class Move:
    """One transition of the canonical stage, caused by one event of the history."""

    event_id: UUID
    system: SourceSystem
    from_stage: Stage | None
    to_stage: Stage
    occurred_at: datetime
    reason: str | None


@dataclass(frozen=True)
class Fold:
    stage: Stage | None = None
    moves: tuple[Move, ...] = ()
    results: Mapping[UUID, tuple[Outcome, str | None]] = field(default_factory=dict)


@dataclass(frozen=True)
class LinkState:
    """One platform record of the lead, with the last stage value seen on it or written to it."""

    system: SourceSystem
    object_type: ObjectType
    record_id: str
    stage_raw: str | None = None


@dataclass(frozen=True)
class LeadState:
    history: Sequence[StageEvent] = ()
    known_fields: frozenset[str] = frozenset()  # canonical fields the lead has a value for (email, ...)
    links: Sequence[LinkState] = ()
    expected_echoes: Sequence[tuple[SourceSystem, str]] = ()  # (system, value) we wrote, not yet back


@dataclass(frozen=True)
class Write:
    """Set `stage` in `system`: `value` is the platform's value; `create` when it has no record yet."""

    system: SourceSystem
    stage: Stage
    value: str
    backward: bool
    create: bool


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    reason: str | None = None
    stage: Stage | None = None  # the lead's stage after the event
    moves: tuple[Move, ...] = ()  # transitions to publish, in order
    writes: tuple[Write, ...] = ()
    recorded: StageEvent | None = None  # the history entry to store
    echo: tuple[SourceSystem, str] | None = None  # the expected echo this event was


def decide(
    lead: LeadState, event: SourceEvent, funnel: Funnel, *, writable: Mapping[SourceSystem, ObjectType]
) -> Decision:
    """Decide what `event` does to `lead`; `writable` maps each system sync writes to its record type."""
    raw = event.changes.stage_raw
    if raw is not None:
        echo = next(((s, v) for s, v in lead.expected_echoes if s is event.source and _same(v, raw)), None)
        if echo is not None:
            return Decision(Outcome.ECHO, echo=echo)
        if raw == "":
            return Decision(Outcome.NO_OP, reason="a cleared value moves nothing")
    if event.changes.stage is None and event.changes.score is None:
        return Decision(Outcome.NO_OP)

    entry = StageEvent(
        event_id=event.id,
        system=event.source,
        stage=event.changes.stage,
        raw=raw,
        score=event.changes.score,
        occurred_at=event.occurred_at,
    )
    before = fold(lead.history, funnel, known_fields=lead.known_fields)
    after = fold([*lead.history, entry], funnel, known_fields=lead.known_fields)
    if after.stage is before.stage or not after.moves:
        outcome, reason = after.results[entry.event_id]
        if outcome is Outcome.APPLIED:
            outcome, reason = Outcome.STALE, "newer changes already decide the stage"
        return Decision(outcome, reason=reason, stage=after.stage, recorded=entry)
    moves = _new_moves(before, after)
    backward = (
        before.stage is not None and after.stage is not None and not _is_forward(before.stage, after.stage)
    )
    writes = tuple(_writes(lead, event.source, after.stage, funnel, backward=backward, writable=writable))
    return Decision(
        Outcome.APPLIED,
        reason=moves[-1].reason,
        stage=after.stage,
        moves=moves,
        writes=writes,
        recorded=entry,
    )


def rejoin(
    lead: LeadState,
    stage: Stage | None,
    decision: Decision,
    funnel: Funnel,
    *,
    writable: Mapping[SourceSystem, ObjectType],
) -> Decision:
    """`decision` for an event after which another lead's records and history joined this one.

    The joined history may decide another stage than the lead's `stage`: then that is one move,
    written to every system that does not hold it yet (the event's own included).
    """
    if decision.outcome is Outcome.APPLIED:
        return decision  # decided on the joined history already
    history = [*lead.history, decision.recorded] if decision.recorded is not None else lead.history
    after = fold(history, funnel, known_fields=lead.known_fields)
    if after.stage is None or after.stage is stage:
        return decision
    last = after.moves[-1]
    reason = "another lead of the same person joined this one"
    backward = stage is not None and not _is_forward(stage, after.stage)
    return replace(
        decision,
        outcome=Outcome.APPLIED,
        reason=reason,
        stage=after.stage,
        moves=(Move(last.event_id, last.system, stage, after.stage, last.occurred_at, reason),),
        writes=tuple(_writes(lead, None, after.stage, funnel, backward=backward, writable=writable)),
    )


def fold(history: Sequence[StageEvent], funnel: Funnel, *, known_fields: frozenset[str]) -> Fold:
    """Replay a lead's history in source-time order; the stage it ends at is the canonical one."""
    stage: Stage | None = None
    score: float | None = None
    moves: list[Move] = []
    results: dict[UUID, tuple[Outcome, str | None]] = {}
    for entry in sorted(history, key=lambda e: e.order):
        score = entry.score if entry.score is not None else score
        outcome, target, reason = _step(stage, entry, score, funnel, known_fields)
        results[entry.event_id] = (outcome, reason)
        if outcome is Outcome.APPLIED and target is not None:
            moves.append(Move(entry.event_id, entry.system, stage, target, entry.occurred_at, reason))
            stage = target
    return Fold(stage=stage, moves=tuple(moves), results=results)


def _step(
    current: Stage | None,
    entry: StageEvent,
    score: float | None,
    funnel: Funnel,
    known_fields: frozenset[str],
) -> tuple[Outcome, Stage | None, str | None]:
    target, by_rule = entry.stage, False
    rule = funnel.sales_ready
    if target is None and score is not None and score >= rule.score_at_least:
        eligible = current is None or current is Stage.NURTURE or 0 <= current.rank < rule.stage.rank
        if eligible and set(rule.required_fields) <= known_fields:
            target, by_rule = rule.stage, True
    if target is None or target is current:
        return Outcome.NO_OP, None, None
    if not by_rule and funnel.owners[target] is not funnel.role_of(entry.system):
        return Outcome.REJECTED_AUTHORITY, None, f"{entry.system} does not own {target}"
    forward = (current is None and not target.is_side_state) or (
        current is not None and _is_forward(current, target)
    )
    if not forward and (current, target) not in funnel.backward_moves:
        return Outcome.REJECTED_REGRESSION, None, f"{current} -> {target} is not an allowed move"
    if by_rule:
        return Outcome.APPLIED, target, f"sales-ready: score >= {rule.score_at_least:g}"
    return Outcome.APPLIED, target, None if forward else f"{entry.system} set {entry.raw!r}"


def _is_forward(current: Stage, target: Stage) -> bool:
    if target.is_side_state:
        return False
    return current.is_side_state or target.rank > current.rank


def _new_moves(before: Fold, after: Fold) -> tuple[Move, ...]:
    """The transitions to publish: what the new history adds, or one move from the old stage to the new."""
    if after.moves[: len(before.moves)] == before.moves:
        return after.moves[len(before.moves) :]
    # The late event rewrote what happened after it: publish the net change, from the stage
    # consumers last heard of to the stage the lead has now.
    last = after.moves[-1]
    return (Move(last.event_id, last.system, before.stage, last.to_stage, last.occurred_at, last.reason),)


def _same(a: str, b: str) -> bool:
    return a.strip().casefold() == b.strip().casefold()


def _writes(
    lead: LeadState,
    source: SourceSystem | None,  # the system the change came from, not written back to
    target: Stage | None,
    funnel: Funnel,
    *,
    backward: bool,
    writable: Mapping[SourceSystem, ObjectType],
) -> list[Write]:
    writes: list[Write] = []
    if target is None:
        return writes
    for role, system in funnel.systems.items():
        values = funnel.write_values.get(system)
        value = values.values.get(target) if values else None
        if system is source or system not in writable or value is None:
            continue
        records = [k for k in lead.links if k.system is system and k.object_type is writable[system]]
        if not records:
            handoff = role is Role.MARKETING or (
                not target.is_side_state and target.rank >= funnel.crm_handoff.rank
            )
            if handoff:
                writes.append(Write(system, target, value, backward=False, create=True))
            continue
        if all(k.stage_raw is not None and _same(k.stage_raw, value) for k in records):
            continue  # already there: writing again would only cause an echo
        writes.append(Write(system, target, value, backward=backward, create=False))
    return writes
