"""Opaque page cursors: base64url of the sort key of a page's last row, tagged with its kind.

Only the API makes cursors; one of another kind, or not made by us, is a 422 on `cursor` rather
than a silently wrong page.
"""

import base64
import binascii
import json

from fastapi.exceptions import RequestValidationError

from onefunnel.metrics.api.params import invalid


def encode(kind: str, *key: str) -> str:
    """The cursor after the row whose sort key is `key`."""
    return base64.urlsafe_b64encode(json.dumps([kind, *key]).encode()).decode().rstrip("=")


def decode(token: str, kind: str, size: int) -> list[str]:
    """The sort key inside `token`, which must be a cursor of `kind` with `size` parts."""
    try:
        parts = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (binascii.Error, UnicodeDecodeError, ValueError):
        parts = None
    if (
        not isinstance(parts, list)
        or len(parts) != size + 1
        or parts[0] != kind
        or not all(isinstance(part, str) for part in parts)
    ):
        raise malformed(token)
    return parts[1:]


def malformed(token: str) -> RequestValidationError:
    """The 422 for a cursor this query did not return."""
    return invalid("cursor", "is not a cursor this query returned; pass `next_cursor` back unchanged", token)
