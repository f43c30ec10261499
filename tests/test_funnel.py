"""The funnel definition is validated at start-up, with errors that say where."""

from pathlib import Path

import pytest
import yaml

from onefunnel.shared.events import SourceSystem
from onefunnel.shared.funnel import Role, load_funnel
from onefunnel.shared.stage_mapping import DEFAULT_FUNNEL_FILE, FunnelDefinitionError
from onefunnel.shared.stages import Stage


def write_variant(tmp_path: Path, change: dict[str, object]) -> Path:
    document = yaml.safe_load(DEFAULT_FUNNEL_FILE.read_text())
    document.update(change)
    path = tmp_path / "funnel.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def test_the_shipped_definition_loads_with_marketing_owning_the_stages_up_to_mql() -> None:
    funnel = load_funnel()

    assert funnel.systems == {Role.MARKETING: SourceSystem.HUBSPOT, Role.CRM: SourceSystem.SALESFORCE}
    assert [s for s, role in funnel.owners.items() if role is Role.MARKETING] == [
        Stage.SUBSCRIBER,
        Stage.LEAD,
        Stage.MQL,
    ]
    assert (Stage.OPPORTUNITY, Stage.NURTURE) in funnel.backward_moves
    assert funnel.write_values[SourceSystem.HUBSPOT].values[Stage.MQL] == "marketingqualifiedlead"
    assert (
        funnel.stage_mapping.to_canonical(SourceSystem.SALESFORCE, "lead_status", "Working - Contacted")
        is Stage.SAL
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"authority": {"marketing": ["subscriber", "lead", "mql", "qualified"]}},
            "unknown stage 'qualified'",
        ),
        ({"authority": {"marketing": ["subscriber"], "crm": ["subscriber"]}}, "owned by two roles"),
        ({"authority": {"marketing": ["subscriber"]}}, "no role owns"),
        ({"stage_values": {"hubspot": {"lifecyclestage": {"lead": "lead", "LEAD ": "mql"}}}}, "mapped twice"),
        (
            {
                "backward_moves": [
                    {"from": ["nurture"], "to": "disqualified"},
                    {"from": ["disqualified"], "to": "nurture"},
                ]
            },
            "cycle",
        ),
        ({"backward_moves": [{"from": ["lead"], "to": "sql"}]}, "not a backward move"),
        ({"systems": {"marketing": "hubspot", "crm": "hubspot"}}, "must be two systems"),
        (
            {"sales_ready": {"stage": "mql", "score_at_least": "high", "required_fields": []}},
            "must be a number",
        ),
        ({"write_values": {"zoho": {"field": "x", "values": {}}}}, "unknown system"),
        ({"sla": {"mql": "a day"}}, "not a duration"),
    ],
)
def test_a_mistake_in_the_definition_is_refused_with_where_it_is(
    tmp_path: Path, change: dict[str, object], message: str
) -> None:
    path = write_variant(tmp_path, change)

    with pytest.raises(FunnelDefinitionError, match=message) as raised:
        load_funnel(path)
    assert str(path) in str(raised.value)
