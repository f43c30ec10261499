"""Generate the committed JSON Schema files from the wire models (`onefunnel schemas`)."""

import json
from pathlib import Path

import msgspec

from onefunnel.shared.envelope import EVENT_TYPES, Event
from onefunnel.shared.events import SCHEMA_VERSION, Lead, LeadStageChanged, SourceEvent

# resolve(): an editable install reaches this file through a link; the schemas live beside the source.
SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"
_NAMES: dict[type[Event], str] = {
    SourceEvent: "source_event",
    LeadStageChanged: "lead_stage_changed",
    Lead: "lead",
}


def render() -> dict[str, str]:
    """Return {file name: JSON text} for every wire model at the current schema version."""
    files = {}
    for model, name in _NAMES.items():
        schema = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"https://onefunnel.io/schemas/{name}.v{SCHEMA_VERSION}.schema.json",
            "x-cloudevents-type": EVENT_TYPES[model],
            **msgspec.json.schema(model),
        }
        files[f"{name}.v{SCHEMA_VERSION}.schema.json"] = json.dumps(schema, indent=2) + "\n"
    return files


def write(directory: Path = SCHEMA_DIR) -> list[Path]:
    """Write the schema files into `directory` and return their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in render().items():
        path = directory / name
        path.write_text(text)
        paths.append(path)
    return paths
