"""Platform stage values to canonical stages, as the funnel definition (funnel.yaml) states them."""

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from onefunnel.shared.events import SourceSystem
from onefunnel.shared.stages import Stage

DEFAULT_FUNNEL_FILE = Path(__file__).resolve().parent / "funnel.yaml"


class FunnelDefinitionError(ValueError):
    """The funnel definition is not valid; the message says where."""


@dataclass(frozen=True)
class StageMapping:
    """{system: {field: {normalized platform value: canonical stage or None}}}."""

    values: Mapping[SourceSystem, Mapping[str, Mapping[str, Stage | None]]]

    def knows(self, system: SourceSystem, field: str, value: str) -> bool:
        return _normalized(value) in self.values.get(system, {}).get(field, {})

    def to_canonical(self, system: SourceSystem, field: str, value: str) -> Stage | None:
        """The canonical stage of a platform value, or None if it has none (or is unknown)."""
        return self.values.get(system, {}).get(field, {}).get(_normalized(value))


def _normalized(value: str) -> str:
    return value.strip().casefold()


def read_funnel_file(path: Path) -> dict[str, Any]:
    """Read a funnel definition file as a mapping, or raise FunnelDefinitionError."""
    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise FunnelDefinitionError(f"{path}: cannot read: {error}") from error
    if not isinstance(document, dict):
        raise FunnelDefinitionError(f"{path}: must be a YAML mapping")
    return document


def load_stage_mapping(path: Path = DEFAULT_FUNNEL_FILE) -> StageMapping:
    """Read `stage_values` from a funnel definition file."""
    return parse_stage_values(read_funnel_file(path).get("stage_values"), where=str(path))


def parse_stage_values(raw: object, *, where: str) -> StageMapping:
    """Validate a `stage_values` section, rejecting unknown systems or stages and duplicate values."""
    if not isinstance(raw, dict):
        raise FunnelDefinitionError(f"{where}: `stage_values` must be a mapping of systems")
    values: dict[SourceSystem, dict[str, dict[str, Stage | None]]] = {}
    for system_name, fields in raw.items():
        try:
            system = SourceSystem(system_name)
        except ValueError:
            raise FunnelDefinitionError(f"{where}: stage_values: unknown system {system_name!r}") from None
        values[system] = {}
        for field, mapping in (fields or {}).items():
            values[system][field] = {}
            for value, stage in (mapping or {}).items():
                place = f"{where}: stage_values.{system_name}.{field}.{value!r}"
                key = _normalized(str(value))
                if key in values[system][field]:
                    raise FunnelDefinitionError(f"{place}: value mapped twice")
                try:
                    values[system][field][key] = None if stage is None else Stage(stage)
                except ValueError:
                    raise FunnelDefinitionError(f"{place}: unknown stage {stage!r}") from None
    return StageMapping(values=values)
