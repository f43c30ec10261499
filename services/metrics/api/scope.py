"""The facts a BI query reads, as SQL conditions on any alias of the facts table."""

from datetime import datetime
from typing import Any

from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import col

from onefunnel.metrics.api.params import Filters

# A facts alias (`aliased(TransitionRow)`) or the class itself; its attributes are columns.
Facts = Any


def between(facts: Facts, start: datetime, end: datetime) -> list[ColumnElement[bool]]:
    """Facts that occurred in [start, end): the (to_stage|campaign|lead_id, occurred_at) indexes serve it."""
    return [col(facts.occurred_at) >= start, col(facts.occurred_at) < end]


def matching(facts: Facts, filters: Filters) -> list[ColumnElement[bool]]:
    """Facts of the filters' campaign, source system (`origin_system`) and owner, when given."""
    conditions = []
    if filters.campaign is not None:
        conditions.append(col(facts.campaign) == filters.campaign)
    if filters.source_system is not None:
        conditions.append(col(facts.origin_system) == filters.source_system.value)
    if filters.owner_id is not None:
        conditions.append(col(facts.owner_id) == filters.owner_id)
    return conditions
