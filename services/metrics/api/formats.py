"""Every list in three formats: JSON (the default), CSV and NDJSON.

`?format=json|csv|ndjson` wins; otherwise the `Accept` header decides (`text/csv`,
`application/x-ndjson` or `application/ndjson`, by quality value) and anything else gets JSON.
CSV and NDJSON hold the rows only, one per line, with the JSON body's row fields as columns (CSV:
a header line, empty cells for null). JSON carries `next_cursor` in its body; every format also
carries it in `X-Next-Cursor` and `Link: <url>; rel="next"`, both absent on the last page.
"""

import csv
import io
from collections.abc import Sequence
from enum import StrEnum
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Query, Request, Response
from pydantic import BaseModel, Field

RowT = TypeVar("RowT", bound=BaseModel)


class Format(StrEnum):
    JSON = "json"
    CSV = "csv"
    NDJSON = "ndjson"


_MEDIA_TYPES = {
    "application/json": Format.JSON,
    "text/csv": Format.CSV,
    "application/x-ndjson": Format.NDJSON,
    "application/ndjson": Format.NDJSON,
}
_CONTENT_TYPES = {
    Format.JSON: "application/json",
    Format.CSV: "text/csv; charset=utf-8",
    Format.NDJSON: "application/x-ndjson",
}
ALTERNATIVES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/csv": {}, "application/x-ndjson": {}}},
}
"""OpenAPI `responses` of a list endpoint: besides its JSON model, CSV and NDJSON."""


class Listing(BaseModel, Generic[RowT]):
    rows: list[RowT]
    next_cursor: str | None = Field(
        description="Pass as `cursor` to get the next page; null on the last page."
    )


def negotiate(
    request: Request,
    format: Annotated[
        Format | None,
        Query(description="Response format; overrides `Accept` (`text/csv`, `application/x-ndjson`)."),
    ] = None,
) -> Format:
    """The format asked for by `?format=` or, failing that, the `Accept` header."""
    if format is not None:
        return format
    chosen, best = Format.JSON, 0.0
    for media_range in request.headers.get("accept", "").split(","):
        media, *parameters = (part.strip() for part in media_range.split(";"))
        candidate = _MEDIA_TYPES.get(media.lower())
        quality = _quality(parameters)
        if candidate is not None and quality > best:
            chosen, best = candidate, quality
    return chosen


def _quality(parameters: Sequence[str]) -> float:
    for parameter in parameters:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "q":
            try:
                return float(value)
            except ValueError:
                return 0.0
    return 1.0


def respond(request: Request, chosen: Format, page: Listing[RowT], *, row: type[RowT]) -> Response:
    """Render `page` in the chosen format, with the next page's cursor in the headers too."""
    headers = {}
    if page.next_cursor is not None:
        headers["X-Next-Cursor"] = page.next_cursor
        headers["Link"] = f'<{request.url.include_query_params(cursor=page.next_cursor)}>; rel="next"'
    if chosen is Format.JSON:
        body = page.model_dump_json(by_alias=True)
    elif chosen is Format.NDJSON:
        body = "".join(r.model_dump_json(by_alias=True) + "\n" for r in page.rows)
    else:
        body = _csv([r.model_dump(mode="json", by_alias=True) for r in page.rows], columns=_columns(row))
    return Response(body, media_type=_CONTENT_TYPES[chosen], headers=headers)


def _columns(row: type[BaseModel]) -> list[str]:
    return [field.serialization_alias or name for name, field in row.model_fields.items()]


def _csv(rows: list[dict[str, Any]], *, columns: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(columns)
    writer.writerows([_cell(r[c]) for c in columns] for r in rows)
    return buffer.getvalue()


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
