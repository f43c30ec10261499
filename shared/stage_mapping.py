"""Platform stage values to canonical stages, as the funnel definition (funnel.yaml) states them."""

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

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


def load_stage_mapping(path: Path = DEFAULT_FUNNEL_FILE) -> StageMapping:
    """Read `stage_values` from a funnel definition file, rejecting unknown systems or stages."""
    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise FunnelDefinitionError(f"{path}: cannot read: {error}") from error
    raw = (document or {}).get("stage_values")
    if not isinstance(raw, dict):
        raise FunnelDefinitionError(f"{path}: `stage_values` must be a mapping of systems")
    values: dict[SourceSystem, dict[str, dict[str, Stage | None]]] = {}
    for system_name, fields in raw.items():
        try:
            system = SourceSystem(system_name)
        except ValueError:
            raise FunnelDefinitionError(f"{path}: stage_values: unknown system {system_name!r}") from None
        values[system] = {}
        for field, mapping in (fields or {}).items():
            values[system][field] = {}
            for value, stage in (mapping or {}).items():
                where = f"{path}: stage_values.{system_name}.{field}.{value!r}"
                key = _normalized(str(value))
                if key in values[system][field]:
                    raise FunnelDefinitionError(f"{where}: value mapped twice")
                try:
                    values[system][field][key] = None if stage is None else Stage(stage)
                except ValueError:
                    raise FunnelDefinitionError(f"{where}: unknown stage {stage!r}") from None
    return StageMapping(values=values)
