"""The HubSpot fake's checks before any route runs (auth, injected faults, rate limits) and its error bodies.

Follows https://developers.hubspot.com/docs/api/usage-details (rate limits, the 429 body,
X-HubSpot-RateLimit-*):
- Auth: `Authorization: Bearer <private app token>`; otherwise 401 with HubSpot's "Authentication
  credentials not found" body, category INVALID_AUTHENTICATION.
- Errors: `{"status": "error", "message", "correlationId", "category"}`.
- Rate limits: `limit` calls per rolling `window` (TEN_SECONDLY_ROLLING). A 429 carries `Retry-After`
  (seconds; fractions allowed here so tests run fast) and `{"status", "message", "errorType": "RATE_LIMIT",
  "correlationId", "policyName"}`.
"""

import time
import uuid
from collections import deque
from collections.abc import Sequence
from typing import Any

from fastapi import Request, Response
from fastapi.responses import JSONResponse

_UNAUTHENTICATED = (
    "Authentication credentials not found. This API supports OAuth 2.0 authentication and you can find "
    "more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview"
)


def error(status: int, message: str, category: str | None = None) -> JSONResponse:
    """A HubSpot error answer."""
    body: dict[str, Any] = {"status": "error", "message": message, "correlationId": str(uuid.uuid4())}
    if category is not None:
        body["category"] = category
    return JSONResponse(body, status_code=status)


class Gate:
    """The private app tokens, the faults a test injected, and the rolling windows of recent calls."""

    def __init__(self, *, access_tokens: Sequence[str], limit: int, window: float) -> None:
        self.injected_errors: list[int] = []
        self.injected_limits: list[float] = []
        self._tokens = frozenset(access_tokens)
        self._limit, self._window = limit, window
        self._recent: deque[float] = deque()

    def refusal(self, request: Request) -> tuple[Response | None, dict[str, str]]:
        """HubSpot's refusal of this call if any, and the rate-limit headers of an accepted one."""
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or token not in self._tokens:
            return error(401, _UNAUTHENTICATED, "INVALID_AUTHENTICATION"), {}
        if self.injected_limits:
            return _rate_limited(self.injected_limits.pop(0), "TEN_SECONDLY_ROLLING"), {}
        if self.injected_errors:
            return error(self.injected_errors.pop(0), "internal error", "INTERNAL_ERROR"), {}
        now = time.monotonic()
        recent, limit, window = self._recent, self._limit, self._window
        while recent and recent[0] <= now - window:
            recent.popleft()
        if len(recent) >= limit:
            return _rate_limited(recent[0] + window - now, "TEN_SECONDLY_ROLLING"), {}
        recent.append(now)
        return None, {
            "X-HubSpot-RateLimit-Interval-Milliseconds": str(int(window * 1000)),
            "X-HubSpot-RateLimit-Max": str(limit),
            "X-HubSpot-RateLimit-Remaining": str(limit - len(recent)),
        }


def _rate_limited(retry_after: float, policy: str) -> JSONResponse:
    limit = "ten_secondly_rolling" if policy == "TEN_SECONDLY_ROLLING" else policy.lower()
    body = {
        "status": "error",
        "message": f"You have reached your {limit} limit.",
        "errorType": "RATE_LIMIT",
        "correlationId": str(uuid.uuid4()),
        "policyName": policy,
    }
    return JSONResponse(body, status_code=429, headers={"Retry-After": _seconds(max(retry_after, 0.0))})


def _seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.3f}"
