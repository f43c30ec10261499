"""What every platform adapter implements, and the errors the webhook route turns into responses.

Errors:
- `Unauthorized` (401): the delivery is not proven to come from the platform. Nothing is stored.
- `InvalidPayload` (400): authenticated, but not a payload we can read. The raw delivery goes
  to the dead-letter topic for an operator.
"""

import hashlib
import hmac
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from onefunnel.shared.events import SourceEvent, SourceSystem
from onefunnel.shared.stage_mapping import StageMapping


class Unauthorized(Exception):
    """The delivery failed verification; the message says which check, never a secret."""


class InvalidPayload(Exception):
    """The delivery verified but cannot be read; the message says why, without personal data."""


@dataclass(frozen=True)
class Delivery:
    """One HTTP request from a platform, exactly as received."""

    method: str
    url: str  # the public URL the platform called, query string included
    headers: Mapping[str, str]  # names lower-cased
    query: Mapping[str, str]
    body: bytes
    received_at: datetime  # timezone-aware UTC


@dataclass(frozen=True)
class Normalized:
    """What a delivery meant: the events to publish, and how many it held that we do not use."""

    events: list[SourceEvent] = field(default_factory=list)
    ignored: int = 0


@dataclass(frozen=True)
class Acknowledgement:
    """The 2xx body a platform expects once its delivery is stored (Salesforce wants SOAP)."""

    body: bytes
    media_type: str


class Platform(Protocol):
    source: SourceSystem

    def verify(self, delivery: Delivery) -> None:
        """Raise Unauthorized unless the delivery is authentic (and fresh, where the platform signs time)."""
        ...

    def normalize(self, delivery: Delivery, mapping: StageMapping) -> Normalized:
        """Turn a verified delivery into source events, or raise InvalidPayload."""
        ...

    def acknowledgement(self) -> Acknowledgement | None:
        """The success body the platform needs, or None for a plain JSON answer."""
        ...


def delivery_hash(*parts: str | bytes) -> str:
    """A stable idempotency key for platforms whose events carry no id of their own."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part if isinstance(part, bytes) else part.encode())
        digest.update(b"\x00")
    return digest.hexdigest()


def matches_any(offered: bytes, accepted: Iterable[bytes]) -> bool:
    """Whether the offered secret or signature equals any accepted one, compared in constant time."""
    matched = False
    for candidate in accepted:
        # No early exit on a match, so timing does not reveal which accepted value matched.
        matched |= hmac.compare_digest(offered, candidate)
    return matched


def aware_instant(text: str, *, error: str) -> datetime:
    """Read an ISO-8601 date-time that carries a UTC offset as UTC, or raise InvalidPayload(error)."""
    try:
        instant = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidPayload(error) from None
    # A time without an offset is wall-clock time in an unknown zone; platforms that document their zone
    # (Pipedrive, Marketo) read their times themselves.
    if instant.tzinfo is None:
        raise InvalidPayload(error)
    try:
        return instant.astimezone(UTC)
    except OverflowError:  # year 1 with a positive offset, or 9999 with a negative one
        raise InvalidPayload(error) from None


_EVENT_NAMESPACE = uuid.UUID("5b0e7c8e-3d1a-4f6e-9a51-0c2f6f1d9a7e").bytes
# The bits of a 128-bit UUID that hold its version and its variant (RFC 4122, section 4.1).
_VERSION_AND_VARIANT = (0xF000 << 64) | (0xC000 << 48)
_VERSION_5 = (0x5000 << 64) | (0x8000 << 48)


def event_id(source: SourceSystem, idempotency_key: str) -> uuid.UUID:
    """Our event id: derived from the idempotency key, so a redelivered event keeps its id.

    `uuid.uuid5(namespace, f"{source}:{idempotency_key}")`, computed as uuid5 does but handed to `UUID` as
    an int, which it takes in a third of the time (one id per event on ingest's hot path).
    """
    digest = hashlib.sha1(_EVENT_NAMESPACE + f"{source}:{idempotency_key}".encode()).digest()  # noqa: S324
    return uuid.UUID(int=(int.from_bytes(digest[:16]) & ~_VERSION_AND_VARIANT) | _VERSION_5)
