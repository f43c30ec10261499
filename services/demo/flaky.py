"""Delivery faults platforms really produce: a webhook sent twice when an acknowledgement is lost."""

import random

import httpx


class DuplicatingTransport(httpx.AsyncBaseTransport):
    """Send a share of requests twice, as a platform does when our acknowledgement goes missing."""

    def __init__(self, inner: httpx.AsyncBaseTransport, *, rng: random.Random, share: float) -> None:
        self.inner, self.rng, self.share, self.duplicated = inner, rng, share, 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if self.rng.random() < self.share:
            await response.aread()
            self.duplicated += 1
            response = await self.inner.handle_async_request(request)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()
