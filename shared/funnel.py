"""The funnel definition (funnel.yaml): systems, authority, backward moves, sales-ready rule, values.

Loaded once at start-up and validated, so a mistake in the file stops the service with a message
that says where, instead of mis-routing leads at 3 a.m.
"""

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

from onefunnel.shared.events import SourceSystem
from onefunnel.shared.stage_mapping import (
    DEFAULT_FUNNEL_FILE,
    FunnelDefinitionError,
    StageMapping,
    parse_stage_values,
    read_funnel_file,
)
from onefunnel.shared.stages import FUNNEL, Stage


class Role(StrEnum):
    MARKETING = "marketing"
    CRM = "crm"


@dataclass(frozen=True)
class SalesReadyRule:
    stage: Stage
    score_at_least: float
    required_fields: tuple[str, ...]


@dataclass(frozen=True)
class WriteValues:
    """How canonical stages are written to one system: its field and the value per stage."""

    field: str
    values: Mapping[Stage, str]


@dataclass(frozen=True)
class Funnel:
    systems: Mapping[Role, SourceSystem]
    owners: Mapping[Stage, Role]
    backward_moves: frozenset[tuple[Stage, Stage]]  # (from, to)
    sales_ready: SalesReadyRule
    crm_handoff: Stage
    write_values: Mapping[SourceSystem, WriteValues]
    stage_mapping: StageMapping
    sla: Mapping[Stage, timedelta]  # a lead must leave the stage within this time

    def role_of(self, system: SourceSystem) -> Role | None:
        return next((role for role, s in self.systems.items() if s is system), None)

    def other(self, role: Role) -> SourceSystem:
        return self.systems[Role.CRM if role is Role.MARKETING else Role.MARKETING]


_SALES_READY_FIELDS = frozenset({"email", "owner_id", "campaign", "lead_source"})


def load_funnel(path: Path = DEFAULT_FUNNEL_FILE) -> Funnel:
    """Read and validate a funnel definition file."""
    document = read_funnel_file(path)
    where = str(path)
    systems = _systems(document.get("systems"), where)
    owners = _owners(document.get("authority"), where)
    return Funnel(
        systems=systems,
        owners=owners,
        backward_moves=_backward_moves(document.get("backward_moves"), where),
        sales_ready=_sales_ready(document.get("sales_ready"), where),
        crm_handoff=_stage(document.get("crm_handoff"), f"{where}: crm_handoff"),
        write_values=_write_values(document.get("write_values"), where),
        stage_mapping=parse_stage_values(document.get("stage_values"), where=where),
        sla=_sla(document.get("sla") or {}, where),
    )


def _stage(value: object, where: str) -> Stage:
    try:
        return Stage(str(value))
    except ValueError:
        raise FunnelDefinitionError(f"{where}: unknown stage {value!r}") from None


def _mapping(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise FunnelDefinitionError(f"{where}: must be a mapping")
    return value


def _systems(raw: object, where: str) -> dict[Role, SourceSystem]:
    systems: dict[Role, SourceSystem] = {}
    section = _mapping(raw, f"{where}: systems")
    for role in Role:
        try:
            systems[role] = SourceSystem(str(section.get(role)))
        except ValueError:
            raise FunnelDefinitionError(
                f"{where}: systems.{role}: unknown system {section.get(role)!r}"
            ) from None
    if systems[Role.MARKETING] is systems[Role.CRM]:
        raise FunnelDefinitionError(f"{where}: systems: marketing and crm must be two systems")
    return systems


def _owners(raw: object, where: str) -> dict[Stage, Role]:
    owners: dict[Stage, Role] = {}
    for role_name, stages in _mapping(raw, f"{where}: authority").items():
        try:
            role = Role(role_name)
        except ValueError:
            raise FunnelDefinitionError(f"{where}: authority: unknown role {role_name!r}") from None
        for name in stages or []:
            stage = _stage(name, f"{where}: authority.{role_name}")
            if stage in owners:
                raise FunnelDefinitionError(f"{where}: authority: {stage} is owned by two roles")
            owners[stage] = role
    if unowned := [s for s in Stage if s not in owners]:
        raise FunnelDefinitionError(f"{where}: authority: no role owns {', '.join(unowned)}")
    return owners


def _backward_moves(raw: object, where: str) -> frozenset[tuple[Stage, Stage]]:
    if not isinstance(raw, list):
        raise FunnelDefinitionError(f"{where}: backward_moves must be a list")
    moves: set[tuple[Stage, Stage]] = set()
    for index, item in enumerate(raw):
        place = f"{where}: backward_moves[{index}]"
        entry = _mapping(item, place)
        target = _stage(entry.get("to"), place)
        for name in entry.get("from") or []:
            source = _stage(name, place)
            if not target.is_side_state and source.rank <= target.rank and not source.is_side_state:
                raise FunnelDefinitionError(f"{place}: {source} -> {target} is not a backward move")
            moves.add((source, target))
    _refuse_cycles(moves, where)
    return frozenset(moves)


def _refuse_cycles(moves: set[tuple[Stage, Stage]], where: str) -> None:
    """Backward moves between side states must not loop (nurture -> disqualified -> nurture)."""
    edges: dict[Stage, set[Stage]] = {}
    for source, target in moves:
        edges.setdefault(source, set()).add(target)

    def visit(stage: Stage, path: tuple[Stage, ...]) -> None:
        for target in edges.get(stage, ()):
            if target in path:
                cycle = " -> ".join([*path[path.index(target) :], target])
                raise FunnelDefinitionError(f"{where}: backward_moves form a cycle: {cycle}")
            visit(target, (*path, target))

    for stage in edges:
        visit(stage, (stage,))


def _sales_ready(raw: object, where: str) -> SalesReadyRule:
    section = _mapping(raw, f"{where}: sales_ready")
    fields = tuple(section.get("required_fields") or ())
    if unknown := [f for f in fields if f not in _SALES_READY_FIELDS]:
        raise FunnelDefinitionError(f"{where}: sales_ready.required_fields: unknown {', '.join(unknown)}")
    try:
        threshold = float(section["score_at_least"])
    except (KeyError, TypeError, ValueError):
        raise FunnelDefinitionError(f"{where}: sales_ready.score_at_least must be a number") from None
    stage = _stage(section.get("stage"), f"{where}: sales_ready.stage")
    if stage not in FUNNEL:
        raise FunnelDefinitionError(f"{where}: sales_ready.stage must be a funnel stage")
    return SalesReadyRule(stage=stage, score_at_least=threshold, required_fields=fields)


def _write_values(raw: object, where: str) -> dict[SourceSystem, WriteValues]:
    result: dict[SourceSystem, WriteValues] = {}
    for system_name, section in _mapping(raw, f"{where}: write_values").items():
        place = f"{where}: write_values.{system_name}"
        try:
            system = SourceSystem(system_name)
        except ValueError:
            raise FunnelDefinitionError(f"{place}: unknown system") from None
        entry = _mapping(section, place)
        values = {
            _stage(k, f"{place}.values"): str(v) for k, v in _mapping(entry.get("values"), place).items()
        }
        result[system] = WriteValues(field=str(entry.get("field") or ""), values=values)
        if not result[system].field:
            raise FunnelDefinitionError(f"{place}: field is missing")
    return result


_DURATION = re.compile(r"^(\d+)\s*([mhd])$")
_UNITS = {"m": timedelta(minutes=1), "h": timedelta(hours=1), "d": timedelta(days=1)}


def _sla(raw: object, where: str) -> dict[Stage, timedelta]:
    sla = {}
    for name, value in _mapping(raw, f"{where}: sla").items():
        stage = _stage(name, f"{where}: sla")
        match = _DURATION.match(str(value).strip())
        if match is None or int(match.group(1)) == 0:
            raise FunnelDefinitionError(
                f"{where}: sla.{name}: {value!r} is not a duration like 30m, 24h or 7d"
            )
        sla[stage] = int(match.group(1)) * _UNITS[match.group(2)]
    return sla
