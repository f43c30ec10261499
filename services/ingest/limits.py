"""Cheap checks on a delivery before anything parses it: size, content type, JSON nesting."""

import re
from itertools import accumulate

from fastapi import Request

from onefunnel.shared.events import SourceSystem

# The content types each platform documents sending. Marketo sends whatever the admin's webhook
# definition says, so it is not checked.
CONTENT_TYPES: dict[SourceSystem, frozenset[str]] = {
    SourceSystem.HUBSPOT: frozenset({"application/json"}),
    SourceSystem.MAUTIC: frozenset({"application/json"}),
    SourceSystem.PIPEDRIVE: frozenset({"application/json"}),
    SourceSystem.GENERIC: frozenset({"application/json"}),
    SourceSystem.SALESFORCE: frozenset({"text/xml", "application/json"}),
}
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_DEPTH_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


class DeliveryRejected(Exception):
    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code


def check_content_type(source: SourceSystem, header: str | None) -> None:
    allowed = CONTENT_TYPES.get(source)
    media_type = (header or "").partition(";")[0].strip().lower()
    if allowed is not None and media_type not in allowed:
        raise DeliveryRejected(
            415, "unsupported_media_type", f"{source} sends {' or '.join(sorted(allowed))}"
        )


async def read_body(request: Request, *, limit: int) -> bytes:
    """Read the body, refusing it as soon as it exceeds `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise DeliveryRejected(413, "body_too_large", f"bodies are limited to {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise DeliveryRejected(413, "body_too_large", f"bodies are limited to {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def check_json_depth(body: bytes, *, limit: int) -> None:
    """Refuse JSON nested deeper than `limit` before a parser recurses into it."""
    if body.lstrip()[:1] not in (b"{", b"["):
        return
    brackets = _outside_strings(body).translate(None, _NOT_BRACKETS)
    if brackets.count(b"[") + brackets.count(b"{") <= limit:
        return  # too few openings to nest deeper, however they are arranged
    if max(accumulate(_DEPTH_STEP[b] for b in brackets)) > limit:
        raise DeliveryRejected(400, "invalid_payload", f"JSON nested deeper than {limit} levels")


def _outside_strings(body: bytes) -> bytes:
    """The body without the insides of its JSON strings, whose brackets do not nest anything."""
    pieces = body.split(b'"')
    if b"\\" in body or len(pieces) % 2 == 0:
        return _JSON_STRING.sub(b'""', body)  # an escaped or unclosed quote needs the full scan
    return b"".join(pieces[::2])  # without escapes, every other piece lies inside a string
