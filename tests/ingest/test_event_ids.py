"""Event ids are uuid5 of the source and idempotency key: a redelivered event keeps its id."""

import uuid

from hypothesis import given
from hypothesis import strategies as st

from onefunnel.ingest.platforms.base import event_id
from onefunnel.shared.events import SourceSystem

NAMESPACE = uuid.UUID("5b0e7c8e-3d1a-4f6e-9a51-0c2f6f1d9a7e")


@given(source=st.sampled_from(SourceSystem), key=st.text(max_size=200))
def test_an_event_id_is_the_uuid5_of_its_source_and_key(source: SourceSystem, key: str) -> None:
    made = event_id(source, key)
    assert made == uuid.uuid5(NAMESPACE, f"{source}:{key}")
    assert (made.version, made.variant) == (5, uuid.RFC_4122)
