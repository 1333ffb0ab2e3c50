"""Logs in PostgreSQL (docs/scaling.md): a row per stream, a row per record keyed by its data
locator, the byte position its data would have in a file's frames, so the actor's index and
staging mean what they mean in the other modes. psycopg has no Trio support: every call runs
in a worker thread, under a capacity limiter as wide as the connection pool.

Several processes may share a database: a commit holds the stream's row lock from `hold`
(which folds what others committed first) to its COMMIT, and a read `refresh`es first. A log
knows its stream row and that row's generation (a compaction starts the next one): another
process's delete, create or compaction makes it `Superseded`, and is notified (pg_listen.py).

A sliding TTL's last access is the row's `accessed_at`, shared by every process. A process
writes an access only when it is more than `access_secs` past the value it last saw there,
so every access made anywhere is at most `access_secs` after the row's value: a stream is
expired once `accessed_at + ttl + access_secs` has passed, decided by the `DELETE` itself
under the row lock (docs/scaling.md, "TTL").
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import attrs
import psycopg
import psycopg_pool
import trio

from actors.storage import (
    Fold,
    Log,
    Restore,
    Staged,
    Superseded,
    Unavailable,
    framing,
    pg_rows,
    pg_schema,
)
from actors.storage.pg_rows import Connection
from streams.protocol.extents import Slice

T = TypeVar("T")
MAX_VALUE = (1 << 30) - 1  # PostgreSQL holds at most 1 GB in one value


@attrs.define
class PostgresLog:
    _storage: PostgresStorage
    _name: str
    stream: int | None  # the stream row's id (None: created, its first commit to come)
    generation: int  # and the row's generation
    end: int
    _seen: float = 0.0  # the row's `accessed_at` as last seen or written here
    _staged: Staged = attrs.field(factory=Staged)
    _next: tuple[bytes, bytes] | None = None  # a compaction's prepared record
    _held: Connection | None = None  # in a transaction holding the row lock, from `hold`

    async def _call(self, function: Callable[..., T], *args: Any) -> T:
        """On the held connection (no pool wait: it is ours), else on a pooled one."""
        held = self._held
        if held is None:
            return await self._storage.call(function, *args)
        return await self._storage.run(lambda: function(held, *args))

    async def hold(self, fold: Fold) -> bool:
        assert self._held is None, "hold twice"
        connection = await self._storage.acquire()
        try:
            self.end, moved = await self._storage.run(
                lambda: self._catch_up(connection, fold, True)
            )
        except BaseException:
            self._storage.give_back(connection)
            raise
        self._held = connection
        return moved

    async def release(self) -> None:
        held, self._held = self._held, None
        if held is not None:
            await trio.to_thread.run_sync(self._storage.give_back, held)

    async def refresh(self, fold: Fold) -> bool:
        self.end, moved = await self._call(self._catch_up, fold, False)
        return moved

    @property
    def accessed(self) -> float | None:
        """The latest any process may have read or written the stream: accesses more than
        `access_secs` past the row's value are written there."""
        return self._seen + self._storage.access_secs

    async def touched(self, at: float) -> None:
        if self.stream is None or at <= self._seen + self._storage.access_secs:
            return
        row = await self._call(
            pg_rows.fetch_one,
            "UPDATE ds_streams SET accessed_at = GREATEST(accessed_at, %s) WHERE id = %s"
            " RETURNING accessed_at",
            (at, self.stream),
        )
        if row is not None:
            self._seen = max(self._seen, float(row[0]))

    def _catch_up(self, connection: Connection, fold: Fold, lock: bool) -> tuple[int, bool]:
        """(the tail, whether it moved): the records others committed past `end` folded,
        with the row locked in a transaction left open when `lock`, else as of one snapshot
        (a compaction elsewhere cannot move the rows between reading the row and them)."""
        if self.stream is None:  # nothing committed yet: nothing to fold, nothing to hold
            return self.end, False
        if lock:
            connection.execute("BEGIN")
            return self._fold_since(connection, fold, " FOR UPDATE")
        with pg_rows.snapshot(connection):
            return self._fold_since(connection, fold, "")

    def _fold_since(self, connection: Connection, fold: Fold, lock: str) -> tuple[int, bool]:
        row = connection.execute(
            ("SELECT tail, generation, accessed_at FROM ds_streams WHERE id = %s" + lock).encode(),
            (self.stream,),
        ).fetchone()
        if row is None or row[1] != self.generation:
            raise Superseded(f"stream row {self.stream} was removed or replaced")
        if row[2] is not None:
            self._seen = max(self._seen, float(row[2]))
        tail = int(row[0])
        if tail <= self.end:
            return self.end, False
        assert self.stream is not None
        pg_rows.replay(connection, self.stream, self.end, tail, fold)
        return tail, True

    def stage(self, meta: bytes, data: bytes) -> int:
        if len(data) > MAX_VALUE or len(meta) > MAX_VALUE:
            raise framing.FrameTooLarge(f"a record's data is at most {MAX_VALUE} bytes here")
        return self._staged.add(self.end, meta, data)

    async def commit(self) -> None:
        staged = self._staged.take()
        if staged:
            self.end = await self._call(self._commit, staged)
            assert self.stream is not None
            self._storage.logs[self.stream] = self
            if self._held is not None:
                await self._call(pg_rows.execute, "COMMIT", ())
                await self.release()

    def _commit(self, connection: Connection, staged: list[tuple[bytes, bytes]]) -> int:
        with connection.transaction(), connection.cursor() as cursor:
            if self.stream is None:  # a new stream: its row and first records together
                self.stream = self._insert_row(cursor, staged)
            else:  # the row first: it takes the row lock, and checks the tail is ours
                cursor.execute(
                    "UPDATE ds_streams SET tail = %s WHERE id = %s AND tail = %s",
                    (self.end + pg_rows.size(staged), self.stream, self.end),
                )
                if cursor.rowcount != 1:
                    raise Superseded(f"stream row {self.stream} is not at {self.end} any more")
            rows, end = [], self.end
            for meta, data in staged:
                rows.append((self.stream, end + framing.data_offset(meta), meta, data))
                end += framing.frame_size(meta, len(data))
            cursor.executemany(
                "INSERT INTO ds_records (stream, at, meta, data) VALUES (%s, %s, %s, %s)", rows
            )
            # Sent at COMMIT, to every process listening (actors/storage/pg_listen.py).
            notice = pg_rows.notice(self.stream, end, self.generation)
            cursor.execute("SELECT pg_notify(%s, %s)", (pg_rows.CHANNEL, notice))
        return end

    def _insert_row(
        self, cursor: psycopg.Cursor[tuple[Any, ...]], staged: list[tuple[bytes, bytes]]
    ) -> int:
        """The stream's row, unless another process created the stream meanwhile (the unique
        key waits for its transaction): then `Superseded`."""
        ttl, expires = pg_rows.expiry(staged[0][0])
        self._seen = pg_rows.first_access(staged[0][0]) or 0.0
        cursor.execute(
            "INSERT INTO ds_streams (key, name, tail, ttl, expires_at, accessed_at)"
            " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (key) DO NOTHING RETURNING id",
            (
                pg_rows.key(self._name),
                pg_rows.encoded(self._name),
                pg_rows.size(staged),
                ttl,
                expires,
                self._seen,
            ),
        )
        row = cursor.fetchone()
        if row is None:
            raise Superseded(f"stream {self._name!r} was created by another process")
        return int(row[0])

    async def read(self, slices: Iterable[Slice]) -> bytes:
        wanted = list(slices)
        if not wanted:
            return b""
        return await self._call(self._read, wanted)

    def _read(self, connection: Connection, slices: list[Slice]) -> bytes:
        assert self.stream is not None
        pieces = pg_rows.read(connection, self.stream, self.generation, slices)
        if len(pieces) != len(slices):
            raise Superseded(f"stream row {self.stream} no longer holds the records read")
        return b"".join(pieces)

    async def checkpoint(self, state: bytes) -> None:
        """Replaces only a checkpoint covering less (another process may have folded more)."""
        if self.end:
            await self._call(
                self._if_current,
                "INSERT INTO ds_checkpoints (stream, tail, state) VALUES (%s, %s, %s)"
                " ON CONFLICT (stream) DO UPDATE SET tail = excluded.tail, state = excluded.state"
                " WHERE ds_checkpoints.tail < excluded.tail",
                (self.stream, self.end, state),
            )

    async def save_view(self, view: bytes) -> None:
        await self._call(
            self._if_current,
            "INSERT INTO ds_views (stream, view) VALUES (%s, %s)"
            " ON CONFLICT (stream) DO UPDATE SET view = excluded.view",
            (self.stream, view),
        )

    def _if_current(self, connection: Connection, statement: str, params: tuple[Any, ...]) -> None:
        assert self.stream is not None
        pg_rows.if_generation(connection, self.stream, self.generation, statement, params)

    async def load_view(self) -> bytes | None:
        row = await self._call(
            pg_rows.fetch_one, "SELECT view FROM ds_views WHERE stream = %s", (self.stream,)
        )
        return None if row is None else bytes(row[0])

    async def prepare_restart(self, meta: bytes, data: bytes) -> int:
        """Kept until `restart`, which writes it in the transaction that replaces the log."""
        framing.check_size(len(meta), len(data))
        self._next = (meta, data)
        return framing.data_offset(meta)

    async def restart(self, keep_from: int) -> int:
        assert self._next is not None, "restart without prepare_restart"
        shift: int = await self._call(self._restart, self._next, keep_from)
        self._next = None
        self.end += shift
        self.generation += 1
        return shift

    def _restart(self, connection: Connection, first: tuple[bytes, bytes], keep_from: int) -> int:
        """In one transaction: the records before `keep_from` go, the rest move to follow the
        prepared record (negated first, so no moved row meets one not yet moved)."""
        meta, data = first
        shift = framing.frame_size(meta, len(data)) - keep_from
        with connection.transaction(), connection.cursor() as cursor:
            cursor.execute(  # the row first: it takes the row lock, and checks it is ours
                "UPDATE ds_streams SET tail = tail + %s, generation = generation + 1"
                " WHERE id = %s AND tail = %s AND generation = %s",
                (shift, self.stream, self.end, self.generation),
            )
            if cursor.rowcount != 1:
                raise Superseded(f"stream row {self.stream} is not at {self.end} any more")
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
            cursor.execute("DELETE FROM ds_checkpoints WHERE stream = %s", (self.stream,))
            cursor.execute("DELETE FROM ds_views WHERE stream = %s", (self.stream,))
            # Other processes' actors of the stream recover from the new generation at once.
            assert self.stream is not None
            notice = pg_rows.notice(self.stream, self.end + shift, self.generation + 1)
            cursor.execute("SELECT pg_notify(%s, %s)", (pg_rows.CHANNEL, notice))
        return shift

    def close(self) -> None:
        self._staged.take()
        self._next = None
        held, self._held = self._held, None
        if held is not None:  # a failure between `hold` and `commit`
            self._storage.give_back(held)


@attrs.define
class PostgresStorage:
    """Streams in one database, through a pool of `pool.max_size` connections."""

    pool: psycopg_pool.ConnectionPool[Connection]
    limiter: trio.CapacityLimiter
    access_secs: float = 1.0  # how stale a shared last access may be (module docstring)
    # The open logs by stream row, for notifications of other processes' commits (Trio only).
    logs: weakref.WeakValueDictionary[int, PostgresLog] = attrs.field(
        factory=weakref.WeakValueDictionary
    )
    url: str = attrs.field(default="", repr=False)  # may hold a password

    @classmethod
    def connect(
        cls,
        url: str,
        min_size: int = 1,
        max_size: int = 10,
        timeout: float = 10.0,
        access_secs: float = 1.0,
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
        return cls(pool, trio.CapacityLimiter(max_size), access_secs=access_secs, url=url)

    async def run(
        self, function: Callable[[], T], limiter: trio.CapacityLimiter | None = None
    ) -> T:
        """`function()` in a worker thread, the database's failures raised as `Unavailable`.
        A restart of the database leaves every idle connection in the pool closed: after a
        failure the pool tries each (`check`), so that only this request fails on one."""
        try:
            return await trio.to_thread.run_sync(function, limiter=limiter)
        except psycopg.OperationalError as error:  # a lost connection, a pool timeout, ...
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(self.check_pool)
            raise Unavailable(f"database unavailable: {' '.join(str(error).split())}") from error

    def check_pool(self) -> None:
        """Blocking: the idle connections tried, those the database closed replaced (after a
        failure, and when the listening connection is back: the database may have restarted)."""
        with contextlib.suppress(psycopg.Error):
            self.pool.check()

    async def acquire(self) -> Connection:
        """A pooled connection, for a caller that gives it back (`pool.putconn`)."""
        return await self.run(self.pool.getconn, self.limiter)

    def give_back(self, connection: Connection) -> None:
        """A connection from `acquire` back to the pool, its transaction (if any) rolled back."""
        if connection.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS:
            with contextlib.suppress(psycopg.Error):
                connection.execute("ROLLBACK")
        self.pool.putconn(connection)

    async def call(self, function: Callable[..., T], *args: Any) -> T:
        """`function(connection, *args)` in a worker thread, on a pooled connection."""

        def run() -> T:
            with self.pool.connection() as connection:
                return function(connection, *args)

        return await self.run(run, self.limiter)

    async def check(self) -> str | None:
        """Why the database cannot serve (for /readyz), or None if it answers: asked on a
        pooled connection, and if that fails (a restart of the database closed them all) on
        a new one, which fails at once if the database is down or gone."""
        try:
            await self.call(pg_rows.fetch_one, "SELECT 1", ())
            return None
        except Unavailable:
            pass
        try:
            await self.run(self._ask_anew)
        except Unavailable as error:
            return str(error)
        return None

    def _ask_anew(self) -> None:
        timeout = max(1, round(self.pool.timeout))
        with psycopg.connect(self.url, autocommit=True, connect_timeout=timeout) as c:
            c.execute("SELECT 1")

    async def open(self, name: str, fold: Fold, restore: Restore | None = None) -> Log | None:
        log = await self.call(self._open, name, fold, restore)
        if log is not None and log.stream is not None:
            self.logs[log.stream] = log
        return log

    def behind(self, stream: int, tail: int, generation: int | None = None) -> str | None:
        """The name of the open log of stream row `stream` if it ends before `tail` (another
        process committed past it) or is of another `generation` (compacted or removed
        elsewhere), else None (not open here, or our own change)."""
        log = self.logs.get(stream)
        if log is None:
            return None
        if log.end < tail or (generation is not None and generation != log.generation):
            return log._name
        return None

    def _open(
        self, connection: Connection, name: str, fold: Fold, restore: Restore | None
    ) -> PostgresLog | None:
        with pg_rows.snapshot(connection):
            row = connection.execute(
                "SELECT id, tail, generation, accessed_at FROM ds_streams WHERE key = %s",
                (pg_rows.key(name),),
            ).fetchone()
            if row is None:
                return None
            stream, tail, generation = int(row[0]), int(row[1]), int(row[2])
            seen = 0.0 if row[3] is None else float(row[3])
            start = 0
            if restore is not None:
                saved = connection.execute(
                    "SELECT tail, state FROM ds_checkpoints WHERE stream = %s", (stream,)
                ).fetchone()
                if saved is not None and saved[0] <= tail and restore(bytes(saved[1])):
                    start = int(saved[0])
            pg_rows.replay(connection, stream, start, tail, fold)
        return PostgresLog(self, name, stream, generation, tail, seen)

    async def create(self, name: str) -> Log:
        """A log whose first commit inserts the stream's row with its first records, so no
        process ever sees a stream row with nothing committed."""
        return PostgresLog(self, name, None, 0, 0)

    async def remove(self, name: str, expired_at: float | None = None) -> bool:
        return await self.call(self._remove, pg_rows.key(name), expired_at)

    def _remove(self, connection: Connection, digest: bytes, expired_at: float | None) -> bool:
        """The row goes (its records, checkpoint and view cascade), and every process is told.
        An expiry is decided here, under the row lock, by the row's shared last access."""
        with connection.transaction():
            rows = connection.execute(
                "DELETE FROM ds_streams WHERE key = %(key)s AND (%(now)s::float8 IS NULL"
                " OR ttl IS NULL OR expires_at IS NOT NULL"
                " OR accessed_at + ttl + %(grace)s <= %(now)s) RETURNING id",
                {"key": digest, "now": expired_at, "grace": self.access_secs},
            ).fetchall()
            if expired_at is not None and not rows:
                return False  # accessed meanwhile (or gone already)
            for (stream,) in rows:
                notice = pg_rows.notice(int(stream), 0, pg_rows.REMOVED)
                connection.execute("SELECT pg_notify(%s, %s)", (pg_rows.CHANNEL, notice))
            connection.execute("DELETE FROM ds_links WHERE source = %s", (digest,))
            connection.execute("DELETE FROM ds_fork_sources WHERE source = %s", (digest,))
        return True

    async def add_link(self, source: str, fork: str, incarnation: str) -> None:
        await self.call(self._add_link, source, fork, incarnation)

    @staticmethod
    def _add_link(connection: Connection, source: str, fork: str, incarnation: str) -> None:
        with connection.transaction():
            connection.execute(
                "INSERT INTO ds_links (source, fork_key, fork, incarnation)"
                " VALUES (%s, %s, %s, %s) ON CONFLICT (source, fork_key)"
                " DO UPDATE SET incarnation = excluded.incarnation",
                (pg_rows.key(source), pg_rows.key(fork), pg_rows.encoded(fork), incarnation),
            )
            connection.execute(
                "INSERT INTO ds_fork_sources (source, name) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                (pg_rows.key(source), pg_rows.encoded(source)),
            )

    async def remove_link(self, source: str, fork: str) -> None:
        await self.call(
            pg_rows.execute,
            "DELETE FROM ds_links WHERE source = %s AND fork_key = %s",
            (pg_rows.key(source), pg_rows.key(fork)),
        )

    async def links(self, source: str) -> dict[str, str]:
        rows = await self.call(
            pg_rows.fetch_all,
            "SELECT fork, incarnation FROM ds_links WHERE source = %s",
            (pg_rows.key(source),),
        )
        return {pg_rows.decoded(fork): incarnation for fork, incarnation in rows}

    async def expiring(self) -> list[tuple[str, int | None, float | None]]:
        rows = await self.call(
            pg_rows.fetch_all,
            "SELECT name, ttl, expires_at FROM ds_streams"
            " WHERE ttl IS NOT NULL OR expires_at IS NOT NULL",
        )
        return [(pg_rows.decoded(name), ttl, expires) for name, ttl, expires in rows]

    async def due(self, before: float) -> list[tuple[str, float]]:
        """By the rows: a sliding TTL's deadline counts the precision of the shared access."""
        deadline = "LEAST(expires_at, accessed_at + ttl + %(grace)s)"
        rows = await self.call(
            pg_rows.fetch_all,
            f"SELECT name, {deadline} FROM ds_streams WHERE {deadline} < %(before)s",
            {"grace": self.access_secs, "before": before},
        )
        return [(pg_rows.decoded(name), float(deadline)) for name, deadline in rows]

    async def fork_sources(self) -> list[str]:
        rows = await self.call(pg_rows.fetch_all, "SELECT name FROM ds_fork_sources")
        return [pg_rows.decoded(name) for (name,) in rows]

    async def names(self) -> list[str]:
        rows = await self.call(pg_rows.fetch_all, "SELECT name FROM ds_streams")
        return [pg_rows.decoded(name) for (name,) in rows]

    def count_logs(self) -> int:
        """The streams stored (blocking: /metrics calls it in a worker thread)."""
        with self.pool.connection() as connection:
            row = pg_rows.fetch_one(connection, "SELECT count(*) FROM ds_streams", ())
        return int(row[0])

    def close(self) -> None:
        self.pool.close()
