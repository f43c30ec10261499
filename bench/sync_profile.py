"""Summarize a cProfile of the sync process: where its CPU goes, by library and by function.

The profile runs on the process's CPU clock (sync_process.py), and cProfile charges a coroutine only
while it runs, not while it awaits: `own` times add up to the process's CPU. Round trips to
PostgreSQL show up as call counts per event (and in pg_stat_statements), not as time here.
"""

import pstats
from collections import defaultdict
from pathlib import Path

# First match wins: a path fragment and the group it belongs to.
_GROUPS = (
    ("/sqlalchemy/", "SQLAlchemy (ORM, Core, compiler)"),
    ("/sqlmodel/", "SQLAlchemy (ORM, Core, compiler)"),
    ("/asyncpg/", "asyncpg (PostgreSQL protocol)"),
    ("asyncpg.", "asyncpg (PostgreSQL protocol)"),
    ("/pydantic", "pydantic (settings, API bodies)"),
    ("/aiokafka/", "aiokafka"),
    ("/kafka/", "aiokafka"),
    ("/logging/", "logging + JSON log lines"),
    ("onefunnel/shared/logs.py", "logging + JSON log lines"),
    ("/json/", "logging + JSON log lines"),
    ("/onefunnel/", "onefunnel (handler, reconcile, writer, relay)"),
    ("/services/", "onefunnel (handler, reconcile, writer, relay)"),
    ("/shared/", "onefunnel (handler, reconcile, writer, relay)"),
    ("/httpx/", "httpx/httpcore (write-back calls)"),
    ("/httpcore/", "httpx/httpcore (write-back calls)"),
    ("/h11/", "httpx/httpcore (write-back calls)"),
    ("/asyncio/", "asyncio event loop"),
    ("<method 'poll' of 'select.epoll'", "socket syscalls (send, recv, epoll)"),
    ("<method 'send' of '_socket", "socket syscalls (send, recv, epoll)"),
    ("<method 'recv", "socket syscalls (send, recv, epoll)"),
    ("/uuid.py", "uuid, datetime, other stdlib"),
    ("<built-in", "C built-ins (other)"),
    ("<method", "C built-ins (other)"),
)
# Calls per event worth knowing: (label, file fragment, function name).
COUNTED = (
    ("statements executed (asyncpg)", "asyncpg/prepared_stmt.py", "__do_execute"),
    ("SQLAlchemy statement cache keys built", "sqlalchemy/sql/cache_key.py", "_generate_cache_key"),
    ("ORM flushes", "sqlalchemy/orm/session.py", "_flush"),
    ("sessions opened", "sqlalchemy/ext/asyncio/session.py", "__aenter__"),
    ("transactions committed", "sqlalchemy/engine/base.py", "_commit_impl"),
    ("log lines formatted", "onefunnel/shared/logs.py", "format"),
)


def _group(filename: str) -> str:
    return next((group for fragment, group in _GROUPS if fragment in filename), "other Python")


def summarize(path: Path, *, events: int, top: int = 20) -> str:
    """A text report: CPU by group, top functions by own time, calls per event."""
    stats = pstats.Stats(str(path))
    entries = stats.stats  # type: ignore[attr-defined]
    total = sum(tottime for (_, _, tottime, _, _) in entries.values())
    by_group: dict[str, float] = defaultdict(float)
    for (filename, _, name), (_, _, tottime, _, _) in entries.items():
        by_group[_group(filename if filename != "~" else name)] += tottime
    lines = [f"profiled CPU {total:.1f} s over {events} events = {1000 * total / events:.2f} ms/event", ""]
    lines.append(f"{'where the CPU goes':<48} {'s':>7} {'share':>6} {'ms/event':>9}")
    for group, seconds in sorted(by_group.items(), key=lambda kv: -kv[1]):
        lines.append(f"{group:<48} {seconds:7.1f} {seconds / total:6.1%} {1000 * seconds / events:9.3f}")
    lines += ["", f"{'top functions by own time':<72} {'calls':>9} {'own s':>7} {'cum s':>7}"]
    ranked = sorted(entries.items(), key=lambda kv: -kv[1][2])[:top]
    for (filename, line, name), (_, calls, tottime, cumtime, _) in ranked:
        where = f"{_short(filename)}:{line}({name})"
        lines.append(f"{where[-72:]:<72} {calls:9d} {tottime:7.2f} {cumtime:7.2f}")
    lines += ["", f"{'per event':<48} {'calls':>9} {'per event':>9}"]
    for label, fragment, function in COUNTED:
        calls = sum(c for (f, _, n), (_, c, _, _, _) in entries.items() if fragment in f and n == function)
        lines.append(f"{label:<48} {calls:9d} {calls / events:9.2f}")
    return "\n".join(lines)


def _short(filename: str) -> str:
    for marker in ("site-packages/", "lib/python3.11/", "/work/main/"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename
