"""The operations endpoints every service serves: /healthz, /readyz and /metrics."""

import asyncio
from collections.abc import Awaitable, Callable, Mapping

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

ReadinessCheck = Callable[[], Awaitable[bool]]
OPERATIONS_TAG = "operations"  # the OpenAPI tag of these endpoints
CHECK_TIMEOUT_SECONDS = 2.0


def ops_router(*, registry: CollectorRegistry, checks: Mapping[str, ReadinessCheck]) -> APIRouter:
    """Build the router; `checks` name what readiness depends on (e.g. `bus`, `database`)."""
    router = APIRouter(tags=[OPERATIONS_TAG])

    @router.get("/healthz", summary="The process is up")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/readyz", summary="Every dependency answers", responses={503: {"description": "Not ready"}})
    async def readyz() -> JSONResponse:
        results = await asyncio.gather(*(_run(check) for check in checks.values()))
        state = dict(zip(checks, results, strict=True))
        ready = all(results)
        return JSONResponse(
            {
                "status": "ready" if ready else "not ready",
                "checks": {k: "ok" if v else "failing" for k, v in state.items()},
            },
            status_code=200 if ready else 503,
        )

    @router.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return router


async def _run(check: ReadinessCheck) -> bool:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_SECONDS):
            return await check()
    except Exception:  # a failing dependency means "not ready", whatever it raised
        return False
