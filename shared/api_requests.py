"""How the HTTP APIs people and BI tools call answer: requests by route and status, and their duration.

Served by the metrics service (the BI API) and sync (its failures API); ingest counts its webhooks
its own way. The route label is the path template the request matches in the app's OpenAPI
description (`/v1/campaigns/{campaign}`), or `other`, so a client cannot grow the label set by asking
for paths that do not exist. The operations endpoints (`/healthz`, `/readyz`, `/metrics`: the
`operations` tag) are not counted: probes and scrapes would drown the requests people make.
"""

import re
import time
from typing import Any

from fastapi import FastAPI
from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from onefunnel.shared.ops import OPERATIONS_TAG

OTHER = "other"


def api_instruments(registry: CollectorRegistry) -> tuple[Counter, Histogram]:
    requests = Counter(
        "onefunnel_api_requests_total",
        "HTTP API requests answered, by route template and status code.",
        ["route", "status"],
        registry=registry,
    )
    seconds = Histogram(
        "onefunnel_api_request_duration_seconds",
        "From a request's arrival to the end of its answer, by route template.",
        ["route"],
        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
        registry=registry,
    )
    return requests, seconds


class ApiRequestMetrics:
    """ASGI middleware that counts and times every HTTP request (a plain ASGI app: no task per request)."""

    def __init__(self, app: ASGIApp, *, api: FastAPI, requests: Counter, seconds: Histogram) -> None:
        self.app = app
        self.api = api
        self.requests = requests
        self.seconds = seconds
        self._templates: list[tuple[re.Pattern[str], str | None]] | None = None  # None: not counted

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # unless the app answers: an exception escapes before any response starts

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            route = self._template(scope["path"])
            if route is not None:
                self.requests.labels(route, str(status)).inc()
                self.seconds.labels(route).observe(time.perf_counter() - started)

    def _template(self, path: str) -> str | None:
        if self._templates is None:  # read once every router is included: at the first request
            self._templates = [
                (compile_path(template)[0], None if _operations(item) else template)
                for template, item in self.api.openapi()["paths"].items()
            ]
        return next((template for pattern, template in self._templates if pattern.match(path)), OTHER)


def _operations(path_item: dict[str, Any]) -> bool:
    return all(OPERATIONS_TAG in operation.get("tags", []) for operation in path_item.values())
