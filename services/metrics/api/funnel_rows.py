"""The rows of a funnel report, from the counts its query returns."""

from collections.abc import Mapping
from itertools import pairwise
from typing import Any

from pydantic import BaseModel

from onefunnel.shared.stages import FUNNEL, Stage


class FunnelRow(BaseModel):
    group: str | None
    stage: Stage
    entries: int
    leads: int
    previous_stage: Stage | None
    converted_from_previous: int | None
    rate_from_previous: float | None
    converted_from_base: int | None
    rate_from_base: float | None


def pairs(base: Stage) -> list[tuple[Stage, Stage]]:
    """The conversions a report shows: each funnel step, and from `base` to each later funnel stage."""
    steps = list(pairwise(FUNNEL))
    overall = [(base, later) for later in FUNNEL[FUNNEL.index(base) + 1 :]]
    return list(dict.fromkeys(steps + overall))


def rows(group: str | None, counts: Mapping[str, Any], base: Stage) -> list[FunnelRow]:
    """One group's rows, stages in canonical order, from `entries_S`, `leads_S` and `converted_S_T` counts."""

    def count(name: str) -> int:
        return int(counts.get(name) or 0)

    def rate(converted: int, stage: Stage) -> float | None:
        return converted / count(f"leads_{stage}") if count(f"leads_{stage}") else None

    result = []
    for stage in Stage:
        previous = FUNNEL[FUNNEL.index(stage) - 1] if stage in FUNNEL[1:] else None
        from_previous = count(f"converted_{previous}_{stage}") if previous else None
        from_base = None
        if stage == base:
            from_base = count(f"leads_{stage}")
        elif stage in FUNNEL[FUNNEL.index(base) + 1 :]:
            from_base = count(f"converted_{base}_{stage}")
        result.append(
            FunnelRow(
                group=group,
                stage=stage,
                entries=count(f"entries_{stage}"),
                leads=count(f"leads_{stage}"),
                previous_stage=previous,
                converted_from_previous=from_previous,
                rate_from_previous=None
                if previous is None or from_previous is None
                else rate(from_previous, previous),
                converted_from_base=from_base,
                rate_from_base=None if from_base is None else rate(from_base, base),
            )
        )
    return result
