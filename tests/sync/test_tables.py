"""`detached_lead` builds the LeadRow the batch works on with what SQLModel's constructor would give it."""

import uuid
from datetime import UTC, datetime

import pytest

from onefunnel.sync.tables import LEAD_COLUMNS, LeadRow, detached_lead


def test_a_detached_lead_has_the_given_columns_and_the_models_defaults() -> None:
    lead_id, now = uuid.uuid4(), datetime.now(UTC)

    lead = detached_lead({"id": lead_id, "created_at": now, "updated_at": now, "origin_system": "hubspot"})

    expected = LeadRow(id=lead_id, created_at=now, updated_at=now, origin_system="hubspot")
    assert {c.name: getattr(lead, c.name) for c in LEAD_COLUMNS} == {
        c.name: getattr(expected, c.name) for c in LEAD_COLUMNS
    }


def test_a_detached_lead_needs_its_id_and_times() -> None:
    with pytest.raises(TypeError, match="created_at, id"):
        detached_lead({"updated_at": datetime.now(UTC)})
