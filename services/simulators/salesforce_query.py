"""The one SOQL statement the fake Salesforce understands: the client's lookup of Leads by email.

`query?q=` understands only `SELECT ... FROM Lead WHERE Email = '...'` or `Email IN ('...', ...)`, string
literal escapes included;
anything else is 400 `MALFORMED_QUERY` (REST API Developer Guide, "Status Codes and Error Responses",
https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/errorcodes.htm).
"""

import re

from onefunnel.simulators.salesforce_errors import ApiError
from onefunnel.simulators.salesforce_fields import READ_ONLY, WRITABLE

_LITERAL = r"'(?:[^'\\]|\\.)*'"
_QUERY = re.compile(
    r"SELECT\s+(?P<fields>\w+(?:\s*,\s*\w+)*)\s+FROM\s+Lead\s+WHERE\s+Email\s*"
    rf"(?:=\s*(?P<email>{_LITERAL})|IN\s*\((?P<emails>\s*{_LITERAL}(?:\s*,\s*{_LITERAL})*\s*)\))"
    r"(?:\s+ORDER\s+BY\s+CreatedDate\s+ASC)?(?:\s+LIMIT\s+(?P<limit>\d{1,4}))?\s*",
    re.IGNORECASE | re.DOTALL,
)
_SOQL_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "b": "\b", "f": "\f", '"': '"', "'": "'", "\\": "\\"}


def soql_lead_query(statement: str) -> tuple[list[str], list[str], int]:
    """Read `SELECT f, ... FROM Lead WHERE Email = '...' | Email IN ('...', ...) [ORDER BY CreatedDate ASC]
    [LIMIT n]`: the fields, the emails and the limit."""
    match = _QUERY.fullmatch(statement.strip())
    if match is None:
        raise ApiError(
            400, "MALFORMED_QUERY", "unexpected token: the fake understands only the client's query"
        )
    fields = [name.strip() for name in match["fields"].split(",")]
    if any(name not in WRITABLE | READ_ONLY for name in fields):
        raise ApiError(400, "INVALID_FIELD", "No such column on entity 'Lead'")
    literals = re.findall(_LITERAL, match["emails"]) if match["emails"] else [match["email"]]
    return fields, [_unquoted(literal[1:-1]) for literal in literals], int(match["limit"] or 2000)


def _unquoted(literal: str) -> str:
    value, escaped = "", iter(literal)
    for char in escaped:
        if char == "\\":
            char = _SOQL_ESCAPES.get(next(escaped), "")
            if not char:  # \_ and \% exist only in LIKE patterns; anything else is malformed
                raise ApiError(400, "MALFORMED_QUERY", "Invalid string literal: illegal escape sequence")
        value += char
    return value
