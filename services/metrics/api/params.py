"""The query parameters the BI endpoints share: the time window, the filters and the page.

Every invalid value is a 422 in FastAPI's own shape, `{"detail": [{"loc": ["query", "<name>"],
"msg": "<why>", ...}]}`, so a client always learns which parameter was wrong and why.
"""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import Query
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field

from onefunnel.shared.events import SourceSystem

DEFAULT_WINDOW = timedelta(days=30)
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
_EARLIEST, _LATEST = datetime(1970, 1, 1, tzinfo=UTC), datetime(3000, 1, 1, tzinfo=UTC)
_MOMENT = (
    "ISO-8601 with a UTC offset, e.g. `2026-10-01T00:00:00Z` or `2026-10-01T02:00:00%2B02:00` "
    "(a `+` must be URL-encoded; an unencoded one arrives as a space and is read as `+`)."
)


def invalid(name: str, message: str, value: object = None) -> RequestValidationError:
    """A 422 naming the query parameter `name` and saying why it is wrong."""
    return RequestValidationError(
        [{"type": "value_error", "loc": ("query", name), "msg": message, "input": value}]
    )


def parse_moment(name: str, value: str) -> datetime:
    """Read an ISO-8601 instant with an offset, as UTC."""
    text = value.strip()
    if "T" in text[:-6] and text[-6] == " ":  # "+02:00" sent unencoded: the "+" became a space
        text = f"{text[:-6]}+{text[-5:]}"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise invalid(name, f"is not an ISO-8601 date-time; expected {_MOMENT}", value) from None
    if moment.tzinfo is None:
        raise invalid(name, "has no UTC offset; add one, e.g. `Z` or `+02:00`", value)
    moment = moment.astimezone(UTC)
    if not _EARLIEST <= moment < _LATEST:  # periods and deadlines must stay within datetime's range
        raise invalid(name, f"must lie in [{_EARLIEST.isoformat()}, {_LATEST.isoformat()})", value)
    return moment


class Window(BaseModel):
    """The half-open interval [from, to) of `occurred_at`, in UTC."""

    model_config = ConfigDict(frozen=True)

    start: datetime = Field(serialization_alias="from")
    end: datetime = Field(serialization_alias="to")


def window(
    start: Annotated[
        str | None,
        Query(alias="from", description=f"Window start, inclusive; {_MOMENT} Default: `to` - 30 days."),
    ] = None,
    end: Annotated[
        str | None, Query(alias="to", description=f"Window end, exclusive; {_MOMENT} Default: now.")
    ] = None,
) -> Window:
    """The requested time window (default: the last 30 days)."""
    until = parse_moment("to", end) if end is not None else datetime.now(UTC)
    since = parse_moment("from", start) if start is not None else until - DEFAULT_WINDOW
    if since >= until:
        raise invalid("from", "must be earlier than `to`", start)
    return Window(start=since, end=until)


class Filters(BaseModel):
    """Which facts count: all, or those of a campaign, source system (`origin_system`) and/or owner."""

    model_config = ConfigDict(frozen=True)

    campaign: str | None = None
    source_system: SourceSystem | None = None
    owner_id: str | None = None


def filters(
    campaign: Annotated[
        str | None, Query(min_length=1, max_length=255, description="Only facts attributed to this campaign.")
    ] = None,
    source_system: Annotated[
        SourceSystem | None,
        Query(description="Only leads first seen in this system (the facts' `origin_system`)."),
    ] = None,
    owner_id: Annotated[
        str | None, Query(min_length=1, max_length=255, description="Only facts with this owner id.")
    ] = None,
) -> Filters:
    return Filters(campaign=campaign, source_system=source_system, owner_id=owner_id)


@dataclass(frozen=True)
class Paging:
    cursor: str | None
    limit: int


def paging(
    cursor: Annotated[
        str | None,
        Query(max_length=2000, description="`next_cursor` of the previous page; omit for the first."),
    ] = None,
    limit: Annotated[
        int, Query(ge=1, le=MAX_LIMIT, description="Rows (or groups) per page.")
    ] = DEFAULT_LIMIT,
) -> Paging:
    return Paging(cursor=cursor, limit=limit)
