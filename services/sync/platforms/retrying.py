"""Retries of outbound platform calls: exponential backoff with jitter, honouring Retry-After.

Only calls that raise a retriable PlatformError are retried; a permanent one surfaces at once.
The wait before the next attempt is the platform's own Retry-After when it sent one (RateLimited),
else exponential backoff with jitter, so a fleet of workers does not retry in lockstep.
"""

from collections.abc import Awaitable, Callable
from typing import TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

from onefunnel.sync.platforms.base import PlatformError, RateLimited

T = TypeVar("T")


def _retriable(error: BaseException) -> bool:
    return isinstance(error, PlatformError) and error.retriable


def _wait(*, initial: float, maximum: float) -> Callable[[RetryCallState], float]:
    backoff = wait_random_exponential(multiplier=initial, max=maximum)

    def wait(state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, RateLimited):
            return min(max(error.retry_after, 0.0), maximum)
        return float(backoff(state))

    return wait


async def with_retries(
    call: Callable[[], Awaitable[T]], *, attempts: int, initial_wait: float = 0.5, max_wait: float = 30.0
) -> T:
    """Run `call`, retrying retriable platform errors up to `attempts` tries in all."""
    async for attempt in AsyncRetrying(
        retry=retry_if_exception(_retriable),
        wait=_wait(initial=initial_wait, maximum=max_wait),
        stop=stop_after_attempt(attempts),
        reraise=True,
    ):
        with attempt:
            return await call()
    raise AssertionError("unreachable: tenacity reraises the last error")
