"""The BI API of the metrics service: the funnel, cohorts, velocity and the facts, for BI tools.

Served on the metrics port (default 8002) under /v1, documented at /docs (OpenAPI). Read-only: it
reads the transition facts (`metrics_stage_transition`, one row per `LeadStageChanged`), never the
Prometheus counters, and changes nothing.

- Auth: `Authorization: Bearer <one of ONEFUNNEL_API_TOKENS>`; otherwise 401 with
  `WWW-Authenticate: Bearer`. Every token has the one scope there is, read-only, so there is no 403.
- Time: `from`/`to` are ISO-8601 instants with a UTC offset; the window is [from, to) of
  `occurred_at` (when the change happened in the source system), by default the last 30 days.
  Periods are UTC days, ISO weeks (from Monday) and calendar months.
- Filters: `campaign`, `source_system` (the system the lead was first seen in: the facts'
  `origin_system`) and `owner_id`, applied to the facts that put a lead in a report (its entries).
- Lists: JSON by default; CSV with `Accept: text/csv` or `?format=csv`, NDJSON with
  `Accept: application/x-ndjson` or `?format=ndjson`. Pages of `limit` rows (or groups), at most
  1000; `next_cursor` in the JSON body and in `X-Next-Cursor` and `Link: <...>; rel="next"` headers.
- Errors: 422 names the invalid parameter (`detail[].loc`) and says why (`detail[].msg`).

The definitions of each number are in the module of its endpoint (`funnel_query`, `cohorts`,
`velocity`, `transitions`) and in its OpenAPI description. Every query is SQL with bound parameters,
the same on SQLite and PostgreSQL except the few date expressions of `dialects`.
"""

from onefunnel.metrics.api.router import bi_router

__all__ = ["bi_router"]
