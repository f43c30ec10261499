"""The embedded backend: a durable append-only log in one SQLite file.

For one machine (`onefunnel run` on a laptop), not a second Kafka: each topic is a single
partition, and a consumer group has at most one active consumer at a time (a second one
subscribing to the same group is refused until the first leaves or its lease expires).
Several processes may share the file; SQLite's WAL mode serializes their writes. Topics need no
creation: a topic exists once something is appended to it.
"""

import asyncio
import contextlib
import json
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypeVar

from onefunnel.shared.bus.base import BusError, BusUnavailable, Message, OutgoingMessage

_SCHEMA = """
CREATE TABLE IF NOT EXISTS log (
    topic TEXT NOT NULL,
    "offset" INTEGER NOT NULL,
    key BLOB NOT NULL,
    value BLOB NOT NULL,
    headers TEXT NOT NULL,
    PRIMARY KEY (topic, "offset")
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS group_offset (
    group_name TEXT NOT NULL,
    topic TEXT NOT NULL,
    next_offset INTEGER NOT NULL,
    PRIMARY KEY (group_name, topic)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS group_lease (
    group_name TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    expires_at REAL NOT NULL
) WITHOUT ROWID;
"""

LEASE_SECONDS = 30.0

T = TypeVar("T")


class LocalBus:
    def __init__(self, *, path: Path, poll_interval: float = 0.2) -> None:
        self._path = path
        self.poll_interval = poll_interval
        self.appended = asyncio.Event()  # wakes this process's consumers without waiting a poll
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            db = self._connect()
            try:
                db.execute("PRAGMA journal_mode=WAL")
                db.executescript(_SCHEMA)
            finally:
                db.close()
        except sqlite3.OperationalError as error:
            raise BusUnavailable(f"cannot open the local bus at {path}: {error}") from error

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self._path, timeout=10.0, isolation_level=None)
        db.execute("PRAGMA synchronous=FULL")  # a published batch survives a power cut
        return db

    async def run(self, work: str, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` on a fresh connection in a worker thread; closing rolls back what it left open."""

        def call() -> T:
            db = self._connect()
            try:
                return fn(db)
            finally:
                db.close()

        try:
            return await asyncio.to_thread(call)
        except sqlite3.OperationalError as error:
            raise BusUnavailable(f"local bus {work} failed: {error}") from error

    async def publish(self, topic: str, messages: Sequence[OutgoingMessage]) -> None:
        def append(db: sqlite3.Connection) -> None:
            db.execute("BEGIN IMMEDIATE")
            (last,) = db.execute(
                'SELECT COALESCE(MAX("offset"), -1) FROM log WHERE topic = ?', (topic,)
            ).fetchone()
            db.executemany(
                'INSERT INTO log (topic, "offset", key, value, headers) VALUES (?, ?, ?, ?, ?)',
                [
                    (
                        topic,
                        last + 1 + i,
                        m.key,
                        m.value,
                        json.dumps([[k, v.decode("latin-1")] for k, v in m.headers]),
                    )
                    for i, m in enumerate(messages)
                ],
            )
            db.execute("COMMIT")

        if messages:
            await self.run("publish", append)
            self.appended.set()

    async def ready(self) -> bool:
        try:
            await self.run("ping", lambda db: db.execute("SELECT 1").fetchone())
        except BusUnavailable:
            return False
        return True

    @asynccontextmanager
    async def subscribe(self, topics: Sequence[str], *, group: str) -> AsyncIterator["LocalSubscription"]:
        owner = uuid.uuid4().hex
        subscription = LocalSubscription(self, topics=list(topics), group=group, owner=owner)
        await self.run("subscribe", lambda db: _take_lease(db, group, owner))
        renewer = asyncio.create_task(self._renew_lease(group, owner))
        try:
            yield subscription
        finally:
            renewer.cancel()
            await self.run(
                "unsubscribe",
                lambda db: db.execute(
                    "DELETE FROM group_lease WHERE group_name = ? AND owner = ?", (group, owner)
                ),
            )

    async def _renew_lease(self, group: str, owner: str) -> None:
        while True:
            await asyncio.sleep(LEASE_SECONDS / 3)
            await self.run(
                "lease renewal",
                lambda db: db.execute(
                    "UPDATE group_lease SET expires_at = ? WHERE group_name = ? AND owner = ?",
                    (time.time() + LEASE_SECONDS, group, owner),
                ),
            )

    async def close(self) -> None:
        return None  # every call opens and closes its own connection


def _take_lease(db: sqlite3.Connection, group: str, owner: str) -> None:
    db.execute("BEGIN IMMEDIATE")
    row = db.execute("SELECT owner, expires_at FROM group_lease WHERE group_name = ?", (group,)).fetchone()
    if row is not None and row[1] > time.time():
        db.execute("ROLLBACK")
        raise BusError(f"consumer group {group!r} already has an active consumer on the local bus")
    db.execute(
        "INSERT OR REPLACE INTO group_lease (group_name, owner, expires_at) VALUES (?, ?, ?)",
        (group, owner, time.time() + LEASE_SECONDS),
    )
    db.execute("COMMIT")


class LocalSubscription:
    def __init__(self, bus: LocalBus, *, topics: list[str], group: str, owner: str) -> None:
        self._bus = bus
        self._topics = topics
        self._group = group
        self._owner = owner
        self._positions: dict[str, int] | None = None  # next offset to read, per topic

    async def batches(self, *, max_records: int = 500, max_wait: float = 1.0) -> AsyncIterator[list[Message]]:
        while True:
            batch = await self._read(max_records)
            waited = 0.0
            while not batch and waited < max_wait:
                self._bus.appended.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._bus.appended.wait(), self._bus.poll_interval)
                waited += self._bus.poll_interval
                batch = await self._read(max_records)
            yield batch

    async def _read(self, max_records: int) -> list[Message]:
        def read(db: sqlite3.Connection) -> tuple[dict[str, int], list[Message]]:
            positions = (
                dict(self._positions)
                if self._positions is not None
                else _committed(db, self._group, self._topics)
            )
            placeholders = " OR ".join('(topic = ? AND "offset" >= ?)' for _ in positions)
            args = [value for item in positions.items() for value in item]
            rows = db.execute(
                f'SELECT topic, "offset", key, value, headers FROM log WHERE {placeholders} '  # noqa: S608
                'ORDER BY "offset", topic LIMIT ?',
                [*args, max_records],
            ).fetchall()
            batch = [
                Message(
                    topic=t,
                    partition=0,
                    offset=o,
                    key=k,
                    value=v,
                    headers=tuple((hk, hv.encode("latin-1")) for hk, hv in json.loads(h)),
                )
                for t, o, k, v, h in rows
            ]
            return positions, batch

        positions, batch = await self._bus.run("read", read)
        for m in batch:
            positions[m.topic] = m.offset + 1
        self._positions = positions
        return batch

    async def lag(self) -> int:
        def count(db: sqlite3.Connection) -> int:
            positions = self._positions or _committed(db, self._group, self._topics)
            return sum(
                db.execute(
                    'SELECT COUNT(*) FROM log WHERE topic = ? AND "offset" >= ?', (topic, offset)
                ).fetchone()[0]
                for topic, offset in positions.items()
            )

        return await self._bus.run("lag", count)

    async def commit(self, messages: Sequence[Message]) -> None:
        offsets: dict[str, int] = {}
        for m in messages:
            offsets[m.topic] = max(offsets.get(m.topic, 0), m.offset + 1)

        def store(db: sqlite3.Connection) -> None:
            db.execute("BEGIN IMMEDIATE")
            lease = db.execute(
                "SELECT owner FROM group_lease WHERE group_name = ?", (self._group,)
            ).fetchone()
            if lease is None or lease[0] != self._owner:
                db.execute("ROLLBACK")
                raise BusError(f"lost the lease of group {self._group!r}; messages will be redelivered")
            db.executemany(
                "INSERT INTO group_offset (group_name, topic, next_offset) VALUES (?, ?, ?) "
                "ON CONFLICT (group_name, topic) "
                "DO UPDATE SET next_offset = MAX(next_offset, excluded.next_offset)",
                [(self._group, topic, offset) for topic, offset in offsets.items()],
            )
            db.execute("COMMIT")

        if offsets:
            await self._bus.run("commit", store)


def _committed(db: sqlite3.Connection, group: str, topics: list[str]) -> dict[str, int]:
    placeholders = ",".join("?" * len(topics))
    query = f"SELECT topic, next_offset FROM group_offset WHERE group_name = ? AND topic IN ({placeholders})"  # noqa: S608
    stored = dict(db.execute(query, [group, *topics]).fetchall())
    return {topic: stored.get(topic, 0) for topic in topics}
