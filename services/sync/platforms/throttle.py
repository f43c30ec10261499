"""Client-side limits on calls to one platform: a rate (token bucket) and a concurrency cap.

Staying under a platform's documented limits is cheaper than being refused by them: HubSpot
counts 429s against an app, Salesforce's limit is per org per 24 h, Marketo allows 10 concurrent
calls.
"""

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class Throttle:
    def __init__(self, *, per_second: float, burst: int, concurrency: int) -> None:
        self._rate = per_second
        self._burst = float(burst)
        self._tokens = float(burst)
        self._updated = time.monotonic()
        self._lock = asyncio.Lock()
        self._slots = asyncio.Semaphore(concurrency)

    async def _take(self) -> None:
        async with self._lock:  # one waiter at a time, so tokens go out in arrival order
            while True:
                now = time.monotonic()
                self._tokens = min(self._burst, self._tokens + (now - self._updated) * self._rate)
                self._updated = now
                if self._tokens >= 1:
                    self._tokens -= 1
                    return
                await asyncio.sleep((1 - self._tokens) / self._rate)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one call's place: a token from the bucket and one of the concurrent slots."""
        async with self._slots:
            await self._take()
            yield
