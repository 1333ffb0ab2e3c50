"""Logs in PostgreSQL (docs/scaling.md): a row per stream, a row per record keyed by its data
locator, the byte position its data would have in a file's frames, so the actor's index and
staging mean what they mean in the other modes. psycopg has no Trio support: every call runs
in a worker thread, under a capacity limiter as wide as the connection pool.

One process per database for now (issue 16, step 1); a commit still checks that the stream's
tail is the one this log read, so a second writer fails its commit instead of interleaving.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import attrs
import cbor2
import psycopg
import psycopg_pool
import trio

from actors.storage import Fold, Log, Restore, Staged, framing, pg_schema
from streams.protocol import records
from streams.protocol.extents import Slice

T = TypeVar("T")
Connection = psycopg.Connection[tuple[Any, ...]]
MAX_VALUE = (1 << 30) - 1  # PostgreSQL holds at most 1 GB in one value
REPLAY_ROWS = 1000  # recovery fetches record metadata this many rows at a time


class Superseded(RuntimeError):
    """The stream changed under this log (another writer): the actor recovers afresh."""


def key(name: str) -> bytes:
    """Rows are found by the SHA-256 of the name, as a data directory names its files:
    any name, of any length, makes an index entry of 32 bytes."""
    return hashlib.sha256(encoded(name)).digest()


def encoded(name: str) -> bytes:
    return name.encode("utf-8", "surrogatepass")


def decoded(raw: bytes) -> str:
    return bytes(raw).decode("utf-8", "surrogatepass")


def _expiry(meta: bytes) -> tuple[int | None, float | None]:
    """The TTL and Expires-At a log's first record carries, for the start-up expiry scan."""
    doc = cbor2.loads(meta)
    if isinstance(doc, dict) and doc.get("k") in ("create", "base"):
        return doc.get("ttl"), doc.get("exp")
    return None, None


@attrs.define
class PostgresLog:
    _storage: PostgresStorage
    stream: int  # the stream row's id
    end: int
    _staged: Staged = attrs.field(factory=Staged)
    _next: tuple[bytes, bytes] | None = None  # a compaction's prepared record

    def stage(self, meta: bytes, data: bytes) -> int:
        if len(data) > MAX_VALUE or len(meta) > MAX_VALUE:
            raise framing.FrameTooLarge(f"a record's data is at most {MAX_VALUE} bytes here")
        return self._staged.add(self.end, meta, data)

    async def commit(self) -> None:
        staged = self._staged.take()
        if staged:
            self.end = await self._storage.call(self._commit, staged)

    def _commit(self, connection: Connection, staged: list[tuple[bytes, bytes]]) -> int:
        rows, end = [], self.end
        for meta, data in staged:
            rows.append((self.stream, end + framing.data_offset(meta), meta, data))
            end += framing.frame_size(meta, len(data))
        ttl, expires = _expiry(staged[0][0]) if self.end == 0 else (None, None)
        with connection.transaction(), connection.cursor() as cursor:
            # The stream row first: it takes the row lock, and checks the tail is ours.
            cursor.execute(
                "UPDATE ds_streams SET tail = %s, ttl = coalesce(%s, ttl),"
                " expires_at = coalesce(%s, expires_at) WHERE id = %s AND tail = %s",
                (end, ttl, expires, self.stream, self.end),
            )
            if cursor.rowcount != 1:
                raise Superseded(f"stream row {self.stream} is not at {self.end} any more")
            cursor.executemany(
                "INSERT INTO ds_records (stream, at, meta, data) VALUES (%s, %s, %s, %s)", rows
            )
        return end

    async def read(self, slices: Iterable[Slice]) -> bytes:
        wanted = list(slices)
        if not wanted:
            return b""
        return await self._storage.call(self._read, wanted)

    def _read(self, connection: Connection, slices: list[Slice]) -> bytes:
        """One query: the slices' rows on the primary key, each cut in the database (the data
        is stored uncompressed, so a piece of a large record reads only that piece)."""
        with connection.cursor(binary=True) as cursor:
            cursor.execute(
                "SELECT substring(r.data FROM s.skip::integer + 1 FOR s.length::integer)"
                " FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[]) WITH ORDINALITY"
                " AS s(at, skip, length, n)"
                " JOIN ds_records r ON r.stream = %s AND r.at = s.at ORDER BY s.n",
                (
                    [s.locator for s in slices],
                    [s.skip for s in slices],
                    [s.length for s in slices],
                    self.stream,
                ),
            )
            pieces = [bytes(row[0]) for row in cursor]
        if len(pieces) != len(slices):
            raise Superseded(f"stream row {self.stream} no longer holds the records read")
        return b"".join(pieces)

    async def checkpoint(self, state: bytes) -> None:
        if self.end:
            await self._storage.call(
                _execute,
                "INSERT INTO ds_checkpoints (stream, tail, state) VALUES (%s, %s, %s)"
                " ON CONFLICT (stream) DO UPDATE SET tail = excluded.tail, state = excluded.state",
                (self.stream, self.end, state),
            )

    async def save_view(self, view: bytes) -> None:
        await self._storage.call(
            _execute,
            "INSERT INTO ds_views (stream, view) VALUES (%s, %s)"
            " ON CONFLICT (stream) DO UPDATE SET view = excluded.view",
            (self.stream, view),
        )

    async def load_view(self) -> bytes | None:
        row = await self._storage.call(
            _fetch_one, "SELECT view FROM ds_views WHERE stream = %s", (self.stream,)
        )
        return None if row is None else bytes(row[0])

    async def prepare_restart(self, meta: bytes, data: bytes) -> int:
        """Kept until `restart`, which writes it in the transaction that replaces the log."""
        framing.check_size(len(meta), len(data))
        self._next = (meta, data)
        return framing.data_offset(meta)

    async def restart(self, keep_from: int) -> int:
        assert self._next is not None, "restart without prepare_restart"
        shift: int = await self._storage.call(self._restart, self._next, keep_from)
        self._next = None
        self.end += shift
        return shift

    def _restart(self, connection: Connection, first: tuple[bytes, bytes], keep_from: int) -> int:
        """In one transaction: the records before `keep_from` go, the rest move to follow the
        prepared record (negated first, so no moved row meets one not yet moved)."""
        meta, data = first
        shift = framing.frame_size(meta, len(data)) - keep_from
        with connection.transaction(), connection.cursor() as cursor:
            cursor.execute(
                "DELETE FROM ds_records WHERE stream = %s AND at < %s", (self.stream, keep_from)
            )
            cursor.execute("UPDATE ds_records SET at = -at WHERE stream = %s", (self.stream,))
            cursor.execute(
                "UPDATE ds_records SET at = %s - at WHERE stream = %s", (shift, self.stream)
            )
            cursor.execute(
                "INSERT INTO ds_records (stream, at, meta, data) VALUES (%s, %s, %s, %s)",
                (self.stream, framing.data_offset(meta), meta, data),
            )
            cursor.execute(
                "UPDATE ds_streams SET tail = tail + %s WHERE id = %s AND tail = %s",
                (shift, self.stream, self.end),
            )
            if cursor.rowcount != 1:
                raise Superseded(f"stream row {self.stream} is not at {self.end} any more")
            cursor.execute("DELETE FROM ds_checkpoints WHERE stream = %s", (self.stream,))
            cursor.execute("DELETE FROM ds_views WHERE stream = %s", (self.stream,))
        return shift

    def close(self) -> None:
        self._staged.take()
        self._next = None


def _execute(connection: Connection, query: str, params: tuple[Any, ...]) -> None:
    connection.execute(query.encode(), params)


def _fetch_one(connection: Connection, query: str, params: tuple[Any, ...]) -> Any:
    return connection.execute(query.encode(), params).fetchone()


def _fetch_all(connection: Connection, query: str, params: tuple[Any, ...] = ()) -> list[Any]:
    return connection.execute(query.encode(), params).fetchall()


@attrs.define
class PostgresStorage:
    """Streams in one database, through a pool of `pool.max_size` connections."""

    pool: psycopg_pool.ConnectionPool[Connection]
    limiter: trio.CapacityLimiter

    @classmethod
    def connect(
        cls, url: str, min_size: int = 1, max_size: int = 10, timeout: float = 10.0
    ) -> PostgresStorage:
        """Blocking (run it in a worker thread): opens the pool and migrates the schema.
        Raises `pg_schema.SchemaTooNew`, or psycopg's error when the database is
        unreachable within `timeout`."""
        pool: psycopg_pool.ConnectionPool[Connection] = psycopg_pool.ConnectionPool(
            url,
            min_size=min(min_size, max_size),
            max_size=max_size,
            timeout=timeout,
            kwargs={"autocommit": True},
            open=False,
            name="ds",
        )
        try:
            with psycopg.connect(url, autocommit=True, connect_timeout=max(1, round(timeout))) as c:
                pg_schema.migrate(c)
            pool.open(wait=True, timeout=timeout)
        except BaseException:
            pool.close()
            raise
        return cls(pool, trio.CapacityLimiter(max_size))

    async def call(self, function: Callable[..., T], *args: Any) -> T:
        """`function(connection, *args)` in a worker thread, on a pooled connection."""

        def run() -> T:
            with self.pool.connection() as connection:
                return function(connection, *args)

        return await trio.to_thread.run_sync(run, limiter=self.limiter)

    async def check(self) -> str | None:
        """Why the database cannot serve (for /readyz), or None if it answers."""
        try:
            await self.call(_fetch_one, "SELECT 1", ())
        except (psycopg.Error, psycopg_pool.PoolTimeout) as error:
            return f"database unavailable: {' '.join(str(error).split())}"
        return None

    async def open(self, name: str, fold: Fold, restore: Restore | None = None) -> Log | None:
        return await self.call(self._open, name, fold, restore)

    def _open(
        self, connection: Connection, name: str, fold: Fold, restore: Restore | None
    ) -> Log | None:
        with connection.transaction():
            row = connection.execute(
                "SELECT id, tail FROM ds_streams WHERE key = %s", (key(name),)
            ).fetchone()
            if row is None or row[1] == 0:  # absent, or created with nothing committed
                return None
            stream, tail = int(row[0]), int(row[1])
            start = 0
            if restore is not None:
                saved = connection.execute(
                    "SELECT tail, state FROM ds_checkpoints WHERE stream = %s", (stream,)
                ).fetchone()
                if saved is not None and saved[0] <= tail and restore(bytes(saved[1])):
                    start = int(saved[0])
            _replay(connection, stream, start, fold)
        return PostgresLog(self, stream, tail)

    async def create(self, name: str) -> Log:
        return await self.call(self._create, name)

    def _create(self, connection: Connection, name: str) -> Log:
        """A stream row with nothing committed (no stream until its first commit), replacing
        whatever the name held, as a file is truncated."""
        with connection.transaction():
            connection.execute("DELETE FROM ds_streams WHERE key = %s", (key(name),))
            row = connection.execute(
                "INSERT INTO ds_streams (key, name) VALUES (%s, %s) RETURNING id",
                (key(name), encoded(name)),
            ).fetchone()
        assert row is not None
        return PostgresLog(self, int(row[0]), 0)

    async def remove(self, name: str) -> None:
        await self.call(self._remove, key(name))

    @staticmethod
    def _remove(connection: Connection, digest: bytes) -> None:
        with connection.transaction():
            connection.execute("DELETE FROM ds_streams WHERE key = %s", (digest,))
            connection.execute("DELETE FROM ds_links WHERE source = %s", (digest,))
            connection.execute("DELETE FROM ds_fork_sources WHERE source = %s", (digest,))

    async def add_link(self, source: str, fork: str, incarnation: str) -> None:
        await self.call(self._add_link, source, fork, incarnation)

    @staticmethod
    def _add_link(connection: Connection, source: str, fork: str, incarnation: str) -> None:
        with connection.transaction():
            connection.execute(
                "INSERT INTO ds_links (source, fork_key, fork, incarnation)"
                " VALUES (%s, %s, %s, %s) ON CONFLICT (source, fork_key)"
                " DO UPDATE SET incarnation = excluded.incarnation",
                (key(source), key(fork), encoded(fork), incarnation),
            )
            connection.execute(
                "INSERT INTO ds_fork_sources (source, name) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                (key(source), encoded(source)),
            )

    async def remove_link(self, source: str, fork: str) -> None:
        await self.call(
            _execute,
            "DELETE FROM ds_links WHERE source = %s AND fork_key = %s",
            (key(source), key(fork)),
        )

    async def links(self, source: str) -> dict[str, str]:
        rows = await self.call(
            _fetch_all, "SELECT fork, incarnation FROM ds_links WHERE source = %s", (key(source),)
        )
        return {decoded(fork): incarnation for fork, incarnation in rows}

    async def expiring(self) -> list[tuple[str, int | None, float | None]]:
        rows = await self.call(
            _fetch_all,
            "SELECT name, ttl, expires_at FROM ds_streams"
            " WHERE tail > 0 AND (ttl IS NOT NULL OR expires_at IS NOT NULL)",
        )
        return [(decoded(name), ttl, expires) for name, ttl, expires in rows]

    async def fork_sources(self) -> list[str]:
        rows = await self.call(_fetch_all, "SELECT name FROM ds_fork_sources")
        return [decoded(name) for (name,) in rows]

    async def names(self) -> list[str]:
        rows = await self.call(_fetch_all, "SELECT name FROM ds_streams WHERE tail > 0")
        return [decoded(name) for (name,) in rows]

    def count_logs(self) -> int:
        """The streams stored (blocking: /metrics calls it in a worker thread)."""
        with self.pool.connection() as connection:
            row = _fetch_one(connection, "SELECT count(*) FROM ds_streams WHERE tail > 0", ())
        return int(row[0])

    def close(self) -> None:
        self.pool.close()


def _replay(connection: Connection, stream: int, start: int, fold: Fold) -> None:
    """The records after `start`, metadata only, a batch of rows at a time (a server-side
    cursor), folded in log order; as `actors.storage.replay` does for frames."""
    first = start == 0
    with connection.cursor(name="ds_replay") as cursor:
        cursor.itersize = REPLAY_ROWS
        cursor.execute(
            "SELECT at, meta, length(data) FROM ds_records"
            " WHERE stream = %s AND at > %s ORDER BY at",
            (stream, start),
        )
        for at, meta, length in cursor:
            record = records.decode(bytes(meta))
            if first and not isinstance(record, records.CreateRecord | records.BaseRecord):
                raise ValueError("log does not start with a create record")
            first = False
            fold(record, int(at), int(length))
