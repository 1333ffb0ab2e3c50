"""One stream's log in PostgreSQL (docs/scaling.md), as `PostgresStorage` opens it: its row
and generation, the records it stages, and the transaction that commits them.

Several processes may share a database: a commit holds the stream's row lock from `hold`
(which folds what others committed first) to its COMMIT, and a read `refresh`es first. A log
knows its stream row and that row's generation (a compaction starts the next one): another
process's delete, create or compaction makes it `Superseded`, and is notified (pg_listen.py).

A commit costs two worker-thread calls: `hold` (a pooled connection, `BEGIN`, the row lock,
the fold) and `commit` (one statement that moves the tail, inserts the records and notifies,
and `COMMIT`, sent together in pipeline mode, then the connection given back): each call from
Trio to a thread, and each statement, costs CPU per append (docs/scaling.md, "Throughput").
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

import attrs
import trio

from actors.storage import Fold, Staged, Superseded, framing, pg_rows
from actors.storage.pg_rows import Connection
from streams.protocol.extents import Slice

if TYPE_CHECKING:
    from actors.storage.postgres import PostgresStorage

T = TypeVar("T")
MAX_VALUE = (1 << 30) - 1  # PostgreSQL holds at most 1 GB in one value

# The tail moved (only if it is where this log left it) with the last access (the newest
# append's; GREATEST ignores a NULL), the records inserted and every process notified, in one
# statement: nothing of it happens, and no row comes back, unless the row was at `tail`.
APPEND = b"""WITH moved AS (
    UPDATE ds_streams SET tail = %(end)s, accessed_at = GREATEST(accessed_at, %(access)s)
    WHERE id = %(stream)s AND tail = %(tail)s RETURNING id
), added AS (
    INSERT INTO ds_records (stream, at, meta, data)
    SELECT moved.id, r.at, r.meta, r.data FROM moved,
        unnest(%(at)s::bigint[], %(meta)b::bytea[], %(data)b::bytea[]) AS r(at, meta, data)
)
SELECT pg_notify(%(channel)s, %(notice)s) FROM moved"""


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
        """One worker-thread call: a pooled connection, the row locked in a transaction
        left open, and what others committed folded."""
        assert self._held is None, "hold twice"
        if self.stream is None:  # nothing committed yet: nothing to fold, nothing to hold
            return False
        storage = self._storage

        def take() -> tuple[Connection, int, bool]:
            connection = storage.pool.getconn()
            try:
                connection.execute(b"BEGIN")
                return connection, *self._fold_since(connection, fold, " FOR UPDATE")
            except BaseException:
                storage.give_back(connection)
                raise

        self._held, self.end, moved = await storage.run(take, storage.limiter)
        return moved

    async def release(self) -> None:
        held, self._held = self._held, None
        if held is not None:
            await trio.to_thread.run_sync(self._storage.give_back, held)

    async def refresh(self, fold: Fold) -> bool:
        self.end, moved = await self._call(self._catch_up, fold)
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

    def _catch_up(self, connection: Connection, fold: Fold) -> tuple[int, bool]:
        """(the tail, whether it moved): the records others committed past `end` folded, as
        of one snapshot (a compaction elsewhere cannot move the rows between reading the row
        and them)."""
        if self.stream is None:  # nothing committed yet: nothing to fold
            return self.end, False
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
        """Held (`hold`): one worker-thread call that commits and gives the connection back
        (rolled back, if anything failed); else a transaction on a pooled connection."""
        staged = self._staged.take()
        if not staged:
            return
        held, self._held = self._held, None
        if held is None:
            self.end = await self._storage.call(self._commit, staged)
        else:

            def commit_held() -> int:
                try:
                    return self._commit_held(held, staged)
                finally:
                    self._storage.give_back(held)

            self.end = await self._storage.run(commit_held)
        assert self.stream is not None
        self._storage.logs[self.stream] = self

    def _commit_held(self, connection: Connection, staged: list[tuple[bytes, bytes]]) -> int:
        """`APPEND` and `COMMIT` in one round trip: if the row was not at `end` (it cannot
        be, under the lock), the COMMIT commits nothing and `Superseded` is raised."""
        params = self._append(staged)
        with connection.pipeline():
            cursor = connection.execute(APPEND, params)
            connection.execute(b"COMMIT")
        if cursor.fetchone() is None:
            raise Superseded(f"stream row {self.stream} is not at {self.end} any more")
        return self._committed(params)

    def _commit(self, connection: Connection, staged: list[tuple[bytes, bytes]]) -> int:
        """A new stream's row and first records, or records on a log not held, together."""
        with connection.transaction():
            if self.stream is None:  # a new stream: its row and first records together
                self.stream = self._insert_row(connection, staged)
            params = self._append(staged)
            if connection.execute(APPEND, params).fetchone() is None:
                raise Superseded(f"stream row {self.stream} is not at {self.end} any more")
        return self._committed(params)

    def _committed(self, params: dict[str, Any]) -> int:
        """The new end; the access `APPEND` wrote is seen (so `touched` need not write it)."""
        if params["access"] is not None:
            self._seen = max(self._seen, params["access"])
        end: int = params["end"]
        return end

    def _append(self, staged: list[tuple[bytes, bytes]]) -> dict[str, Any]:
        """`APPEND`'s parameters: the records at their data locators (byte positions)."""
        assert self.stream is not None
        at, end = [], self.end
        for meta, data in staged:
            at.append(end + framing.data_offset(meta))
            end += framing.frame_size(meta, len(data))
        return {
            "stream": self.stream,
            "tail": self.end,
            "end": end,
            "access": pg_rows.appended_at(staged[-1][0]),
            "at": at,
            "meta": [meta for meta, _ in staged],
            "data": [data for _, data in staged],
            # Sent at COMMIT, to every process listening (actors/storage/pg_listen.py).
            "channel": pg_rows.CHANNEL,
            "notice": pg_rows.notice(self.stream, end, self.generation),
        }

    def _insert_row(self, connection: Connection, staged: list[tuple[bytes, bytes]]) -> int:
        """The stream's row (at tail 0: `APPEND` moves it), unless another process created
        the stream meanwhile (the unique key waits for its transaction): then `Superseded`."""
        ttl, expires = pg_rows.expiry(staged[0][0])
        self._seen = pg_rows.first_access(staged[0][0]) or 0.0
        row = connection.execute(
            "INSERT INTO ds_streams (key, name, tail, ttl, expires_at, accessed_at)"
            " VALUES (%s, %s, 0, %s, %s, %s) ON CONFLICT (key) DO NOTHING RETURNING id",
            (pg_rows.key(self._name), pg_rows.encoded(self._name), ttl, expires, self._seen),
        ).fetchone()
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
