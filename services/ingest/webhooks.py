"""POST /webhooks/{source}: verify, normalize, publish, then answer.

Answers, and what the platform should make of them:
- 2xx: every event of the delivery is on the bus (acknowledged by the broker), or it held nothing
  we use, or it was a redelivery of events already published. Nothing more to do.
- 401: the delivery failed verification. Nothing was stored.
- 400/413/415: authenticated or not, we cannot read it (an authenticated one is kept on the
  dead-letter topic for an operator), or one of its events is larger than the bus takes (413,
  kept there too). Retrying the same bytes will not help.
- 404: the source is unknown or not configured (disabled).
- 503 with Retry-After: the bus did not acknowledge in time. Nothing is lost: retry later.
"""

import logging
import time
import uuid
from collections import Counter
from datetime import UTC, datetime

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from onefunnel.ingest import instruments
from onefunnel.ingest.limits import DeliveryRejected, check_content_type, check_json_depth, read_body
from onefunnel.ingest.platforms.base import Delivery, InvalidPayload, Platform, Unauthorized
from onefunnel.ingest.recent_keys import RecentKeys
from onefunnel.ingest.request_ids import REQUEST_ID
from onefunnel.shared import envelope
from onefunnel.shared.bus import Bus, BusError, MessageTooLarge, OutgoingMessage
from onefunnel.shared.events import SourceSystem
from onefunnel.shared.settings import TopicSettings
from onefunnel.shared.stage_mapping import StageMapping

log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 5
_STATUS = {"invalid_payload": 400, "event_too_large": 413}  # of a delivery sent to the dead letters
CE_SOURCE = "/onefunnel/ingest"


class WebhookReceiver:
    """Everything the webhook route needs, built once at start-up."""

    def __init__(
        self,
        *,
        bus: Bus,
        topics: TopicSettings,
        sources: dict[SourceSystem, Platform],
        mapping: StageMapping,
        public_base_url: str | None,
        max_body_bytes: int,
        max_json_depth: int,
        recent: RecentKeys,
    ) -> None:
        self.bus = bus
        self.topics = topics
        self.sources = sources
        self.mapping = mapping
        self.public_base_url = public_base_url.rstrip("/") if public_base_url else None
        self.max_body_bytes = max_body_bytes
        self.max_json_depth = max_json_depth
        self.recent = recent

    def public_url(self, request: Request) -> str:
        """The URL the platform called, as it signed it: raw path and query, public base if configured."""
        raw_path = request.scope.get("raw_path") or request.url.path.encode()
        query = request.scope.get("query_string", b"")
        target = raw_path.decode("latin-1") + (f"?{query.decode('latin-1')}" if query else "")
        base = self.public_base_url or f"{request.url.scheme}://{request.url.netloc}"
        return base + target

    async def receive(self, source_name: str, request: Request) -> Response:
        received_at = datetime.now(UTC)
        try:
            source = SourceSystem(source_name)
            platform = self.sources[source]
        except (ValueError, KeyError):
            return _error(404, "unknown_source", f"no enabled source named {source_name!r}")
        try:
            check_content_type(source, request.headers.get("content-type"))
            body = await read_body(request, limit=self.max_body_bytes)
        except DeliveryRejected as rejected:
            return self._finish(source, "invalid", _error(rejected.status, rejected.code, str(rejected)))
        delivery = Delivery(
            method=request.method,
            url=self.public_url(request),
            headers={k.lower(): v for k, v in request.headers.items()},
            query=dict(request.query_params),
            body=body,
            received_at=received_at,
        )
        try:
            platform.verify(delivery)
        except Unauthorized as error:
            return self._finish(source, "unauthorized", _error(401, "unauthorized", str(error)))
        try:
            check_json_depth(body, limit=self.max_json_depth)
            normalized = platform.normalize(delivery, self.mapping)
        except (InvalidPayload, DeliveryRejected) as error:
            return await self._dead_letter(source, delivery, reason=str(error), code="invalid_payload")

        if normalized.ignored:
            instruments.IGNORED_BY[source].inc(normalized.ignored)
        fresh = [e for e in normalized.events if e.idempotency_key not in self.recent]
        if fresh:
            started = time.perf_counter()
            try:
                await self.bus.publish(
                    self.topics.topic_source_events, [envelope.encode(e, source=CE_SOURCE) for e in fresh]
                )
            except MessageTooLarge as error:
                return await self._dead_letter(source, delivery, reason=str(error), code="event_too_large")
            except BusError as error:
                # Not stored, whatever the cause: ask for a retry. Only an outage is expected here.
                level = logging.WARNING if error.retriable else logging.ERROR
                log.log(
                    level,
                    "bus did not take the delivery; asking %s to retry",
                    source,
                    extra={"error": str(error)},
                )
                return self._finish(source, "unavailable", _unavailable())
            instruments.PUBLISH_SECONDS_BY[source].observe(time.perf_counter() - started)
            self.recent.remember(e.idempotency_key for e in fresh)
            for event_type, count in Counter(e.event_type for e in fresh).items():
                instruments.PUBLISHED_BY[source, event_type].inc(count)
        outcome = "accepted" if fresh else ("duplicate" if normalized.events else "ignored")
        acknowledgement = platform.acknowledgement()
        if acknowledgement is not None:
            response: Response = Response(acknowledgement.body, media_type=acknowledgement.media_type)
        else:
            response = JSONResponse(
                {
                    "accepted": len(fresh),
                    "duplicates": len(normalized.events) - len(fresh),
                    "ignored": normalized.ignored,
                }
            )
        return self._finish(source, outcome, response, events=len(fresh))

    async def _dead_letter(
        self, source: SourceSystem, delivery: Delivery, *, reason: str, code: str
    ) -> Response:
        """Keep an authenticated delivery we cannot publish for an operator, then refuse it."""
        message = OutgoingMessage(
            key=source.encode(),
            value=delivery.body,
            headers=(
                ("ce_specversion", b"1.0"),
                ("ce_id", str(uuid.uuid4()).encode()),
                ("ce_source", CE_SOURCE.encode()),
                ("ce_type", b"io.onefunnel.ingest.delivery_rejected.v1"),
                ("ce_time", delivery.received_at.isoformat().encode()),
                ("content-type", delivery.headers.get("content-type", "application/octet-stream").encode()),
                ("onefunnel_source", source.encode()),
                ("onefunnel_reason", reason.encode()),
            ),
        )
        try:
            await self.bus.publish(self.topics.topic_dead_letters, [message])
        except BusError as error:  # not kept: ask for a retry (the start-up check makes any body fit)
            log.warning("cannot keep a rejected delivery from %s", source, extra={"error": str(error)})
            return self._finish(source, "unavailable", _unavailable())
        instruments.DEAD_LETTERED.inc()
        return self._finish(source, "invalid", _error(_STATUS[code], code, reason))

    def _finish(self, source: SourceSystem, outcome: str, response: Response, *, events: int = 0) -> Response:
        instruments.RECEIVED_BY[source, outcome].inc()
        log.info(
            "webhook %s %s",
            source,
            outcome,
            extra={
                "request_id": REQUEST_ID.get(),
                "source": str(source),
                "outcome": outcome,
                "status": response.status_code,
                "events": events,
            },
        )
        return response


def _error(status: int, code: str, detail: str) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail}, status_code=status)


def _unavailable() -> JSONResponse:
    response = _error(503, "unavailable", "the event bus did not acknowledge in time; retry later")
    response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


def webhook_router(receiver: WebhookReceiver) -> APIRouter:
    router = APIRouter(tags=["webhooks"])

    @router.post(
        "/webhooks/{source}",
        summary="Receive a platform's webhook",
        description="`source` is one of "
        + ", ".join(f"`{s}`" for s in SourceSystem)
        + ". Each verifies the platform's own signature or credential (see docs/platforms/).",
        responses={
            200: {"description": "Stored on the bus (or a redelivery, or nothing we use)."},
            400: {"description": "Authenticated but unreadable; kept on the dead-letter topic."},
            401: {"description": "Verification failed; nothing stored."},
            404: {"description": "Unknown or disabled source."},
            413: {"description": "Body or one of its events too large (the delivery is then dead-lettered)."},
            415: {"description": "Content type this source never sends."},
            503: {"description": "The bus did not acknowledge; retry after Retry-After seconds."},
        },
    )
    async def receive_webhook(source: str, request: Request) -> Response:
        return await receiver.receive(source, request)

    return router
