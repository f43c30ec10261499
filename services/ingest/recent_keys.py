"""A bounded memory of recently published idempotency keys.

An optimisation, not the guarantee: it lets ingest acknowledge a platform's retry of a delivery
it already published without publishing it again. Exactly-once effects come from the consumers,
which deduplicate on the event id (sync's inbox, metrics' fact table).
"""

from collections import OrderedDict
from collections.abc import Iterable


class RecentKeys:
    def __init__(self, *, capacity: int) -> None:
        self._capacity = capacity
        self._keys: OrderedDict[str, None] = OrderedDict()

    def __contains__(self, key: str) -> bool:
        return key in self._keys

    def remember(self, keys: Iterable[str]) -> None:
        for key in keys:
            self._keys[key] = None
            self._keys.move_to_end(key)
        while len(self._keys) > self._capacity:
            self._keys.popitem(last=False)
