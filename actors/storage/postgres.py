"""Logs in PostgreSQL (docs/scaling.md): a row per stream, a row per record keyed by its data
locator, the byte position its data would have in a file's frames, so the actor's index and
staging mean what they mean in the other modes. psycopg has no Trio support: every call runs
in a worker thread, under a capacity limiter as wide as the connection pool.

Several processes may share a database: each stream's log (actors/storage/pg_log.py) holds
its row lock to commit, and another process's commit, compaction or delete is notified
(pg_listen.py) to the logs open here (`behind`).

A sliding TTL's last access is the row's `accessed_at`, shared by every process. A process
writes an access only when it is more than `access_secs` past the value it last saw there,
so every access made anywhere is at most `access_secs` after the row's value: a stream is
expired once `accessed_at + ttl + access_secs` has passed, decided by the `DELETE` itself
under the row lock (docs/scaling.md, "TTL").
"""

from __future__ import annotations

import contextlib
import weakref

import attrs
import psycopg
import psycopg_pool
import trio

from actors.storage import Fold, Log, Restore, Unavailable, pg_rows, pg_schema
from actors.storage.pg_log import PostgresLog
from actors.storage.pg_pool import Pooled
from actors.storage.pg_rows import Connection

__all__ = ["PostgresLog", "PostgresStorage"]


@attrs.define
class PostgresStorage(Pooled):
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

    def give_back(self, connection: Connection) -> None:
        """A connection from `pool.getconn` back, its transaction (if any) rolled back."""
        status = connection.info.transaction_status
        if status in (psycopg.pq.TransactionStatus.INTRANS, psycopg.pq.TransactionStatus.INERROR):
            with contextlib.suppress(psycopg.Error):
                connection.execute("ROLLBACK")
        self.pool.putconn(connection)

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

    def behind(
        self, stream: int, tail: int, generation: int | None = None
    ) -> tuple[str, bool] | None:
        """The name of the open log of stream row `stream` if it ends before `tail` (another
        process committed past it) or is of another `generation` (compacted or removed
        elsewhere: then True), else None (not open here, or our own change)."""
        log = self.logs.get(stream)
        if log is None:
            return None
        if generation is not None and generation != log.generation:
            return log._name, True
        if log.end < tail:
            return log._name, False
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
