"""Bearer-token authentication of the read-only HTTP APIs (BI queries, sync failures)."""

import hmac
from collections.abc import Callable, Sequence

from fastapi import HTTPException, Request, status


def bearer_auth(tokens: Sequence[str]) -> Callable[[Request], None]:
    """A FastAPI dependency that admits a request only with one of `tokens` (none configured: nobody)."""
    accepted = [token.encode() for token in tokens]

    def check(request: Request) -> None:
        scheme, _, offered = request.headers.get("authorization", "").partition(" ")
        matched = False
        for token in accepted:  # every token compared, so timing does not tell which one matched
            matched |= hmac.compare_digest(offered.strip().encode(), token)
        if scheme.lower() != "bearer" or not offered or not matched:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                detail="a valid bearer token is required (ONEFUNNEL_API_TOKENS)",
                headers={"WWW-Authenticate": "Bearer"},
            )

    return check
