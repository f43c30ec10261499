"""The bus contract both backends implement.

Delivery semantics:
- `Bus.publish` returns only after the backend has durably accepted every message of the batch
  (Kafka: acknowledged by all in-sync replicas; local: committed to the SQLite file). If it
  raises, none, some or all of the batch may be stored: callers retry the whole batch and
  consumers deduplicate on the event id.
- A subscription delivers each message at least once. Offsets move only when the caller commits
  the messages it has finished with; a consumer that stops without committing gets the same
  messages again, in the same order per key, the next time its group subscribes.

Errors: `BusError` is the root. `BusUnavailable` (retriable=True) means the backend could not be
reached or did not answer in time; `MessageTooLarge` that a message exceeds the backend's limit (none
of the batch was published); anything else is a `BusError` with retriable=False.
"""

from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Protocol


class BusError(Exception):
    retriable = False


class BusUnavailable(BusError):
    retriable = True


class MessageTooLarge(BusError):
    """A message is larger than the backend accepts; publishing it again will not help."""


Headers = tuple[tuple[str, bytes], ...]


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    key: bytes
    value: bytes
    headers: Headers = ()


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    partition: int
    offset: int
    key: bytes
    value: bytes
    headers: Headers = field(default=())

    def header(self, name: str) -> bytes | None:
        return next((value for key, value in self.headers if key == name), None)


class Subscription(Protocol):
    def batches(self, *, max_records: int = 500, max_wait: float = 1.0) -> AsyncIterator[list[Message]]:
        """Yield batches of messages as they arrive; an empty batch after `max_wait` seconds idle."""
        ...

    async def commit(self, messages: Sequence[Message]) -> None:
        """Mark these messages (and everything before them in their partitions) as done."""
        ...

    async def lag(self) -> int:
        """Messages on the subscribed topics this subscription has not read yet."""
        ...


class Bus(Protocol):
    async def publish(self, topic: str, messages: Sequence[OutgoingMessage]) -> None:
        """Store the batch durably, or raise."""
        ...

    async def ready(self) -> bool:
        """Whether the backend accepts writes right now."""
        ...

    def subscribe(self, topics: Sequence[str], *, group: str) -> AbstractAsyncContextManager[Subscription]:
        """Join `group` and consume `topics` from the group's committed offsets."""
        ...

    async def close(self) -> None:
        """Flush and release everything the bus holds."""
        ...
