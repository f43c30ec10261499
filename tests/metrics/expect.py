"""Reading BI responses in tests: funnel rows by stage, compared with hand-counted tuples."""

from typing import Any

# (stage, entries, leads, converted_from_previous, rate_from_previous, converted_from_base, rate_from_base)
Expected = tuple[str, int, int, int | None, float | None, int | None, float | None]


def funnel_rows(body: dict[str, Any], group: str | None = None) -> list[Expected]:
    """The funnel rows of `group`, as tuples in response order."""
    return [
        (
            row["stage"],
            row["entries"],
            row["leads"],
            row["converted_from_previous"],
            row["rate_from_previous"],
            row["converted_from_base"],
            row["rate_from_base"],
        )
        for row in body["rows"]
        if row["group"] == group
    ]
