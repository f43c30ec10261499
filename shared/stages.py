"""The canonical lifecycle vocabulary every service and every report uses."""

from enum import StrEnum


class Stage(StrEnum):
    """A lead's canonical lifecycle stage.

    The funnel stages are ordered (`FUNNEL`); `disqualified` and `nurture` (recycled) are side
    states outside that order, reached only by an allowed backward move.
    """

    SUBSCRIBER = "subscriber"
    LEAD = "lead"
    MQL = "mql"
    SAL = "sal"
    SQL = "sql"
    OPPORTUNITY = "opportunity"
    CUSTOMER = "customer"
    DISQUALIFIED = "disqualified"
    NURTURE = "nurture"

    @property
    def is_side_state(self) -> bool:
        return self in SIDE_STATES

    @property
    def rank(self) -> int:
        """Position in the funnel; side states rank below every funnel stage."""
        return FUNNEL.index(self) if self in FUNNEL else -1


FUNNEL: tuple[Stage, ...] = (
    Stage.SUBSCRIBER,
    Stage.LEAD,
    Stage.MQL,
    Stage.SAL,
    Stage.SQL,
    Stage.OPPORTUNITY,
    Stage.CUSTOMER,
)
SIDE_STATES: frozenset[Stage] = frozenset({Stage.DISQUALIFIED, Stage.NURTURE})
