"""The port every platform client implements, and the errors it raises.

Errors: `PlatformError` is the root, with `retriable` saying whether the same call may succeed
later. `RateLimited` (retriable) carries the wait the platform asked for. Anything else the
platform refused (validation, a missing record, a read-only record, bad credentials) is
permanent: retrying the same call cannot help, an operator must look (GET /v1/sync/failures).
"""

from dataclasses import dataclass
from typing import Protocol

from onefunnel.shared.events import ObjectType, SourceSystem


class PlatformError(Exception):
    def __init__(
        self, message: str, *, retriable: bool, status: int | None = None, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.retriable = retriable
        self.status = status
        self.code = code  # the platform's own error code, e.g. REQUEST_LIMIT_EXCEEDED


class RateLimited(PlatformError):
    def __init__(
        self, message: str, *, retry_after: float, status: int | None, code: str | None = None
    ) -> None:
        super().__init__(message, retriable=True, status=status, code=code)
        self.retry_after = retry_after


@dataclass(frozen=True)
class StageWrite:
    """A forward move of one record's lifecycle value."""

    record_id: str
    stage_value: str


class PlatformClient(Protocol):
    """What sync needs from a platform: find, create and move a person's lifecycle record."""

    system: SourceSystem
    object_type: ObjectType  # the record type sync writes: HubSpot contact, Salesforce lead

    async def find_by_emails(self, emails: list[str]) -> dict[str, str]:
        """The record id of each email (casefolded) that has one, in as few calls as the platform allows."""
        ...

    async def create(self, *, email: str, stage_value: str) -> str:
        """Create a record at this platform stage value and return its id."""
        ...

    async def write_stage(self, *, record_id: str, stage_value: str, backward: bool) -> None:
        """Set the record's lifecycle value; `backward` moves it to an earlier value (a recycle)."""
        ...

    async def write_stages(self, writes: list[StageWrite]) -> list[PlatformError | None]:
        """Make forward writes to several records in as few calls as the platform allows; per write, in
        order, None when it was made, else why not."""
        ...

    async def delete(self, record_id: str) -> None:
        """Delete the record; one that is already gone counts as deleted."""
        ...

    async def ready(self) -> bool:
        """Whether the platform answers with our credentials (readiness, not liveness)."""
        ...
