"""Subscriptions and the webhook signing key ring in PostgreSQL (docs/subscriptions.md,
"Several processes"), shared by every server process on the database.

A change to a subscription runs in one transaction that holds the subscription's advisory
lock (`pg_advisory_xact_lock`, which also serializes two creates of an id that has no row
yet), reads the record, and writes the changed one with a `pg_notify` on `ds_subs` (payload:
the id; empty: the key ring changed), so the other processes read it again. Exactly one
process delivers webhooks and runs timers: the one holding the session advisory lock
`LEAD` on a connection of its own; when it dies, its connection goes, the lock with it, and
another process takes it at its next try. psycopg has no Trio support: calls run in worker
threads, on a pool of the subscriptions' own (a subscription held while its streams' actors
are asked for their tails never waits for a connection of the streams' pool its hold took),
and a hold's own queries run on the hold's connection (holds never wait for each other's).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncIterator, Callable

import psycopg
import psycopg_pool
import trio

from actors.storage import pg_rows
from actors.storage.pg_pool import Pooled
from actors.storage.pg_rows import Connection

CHANNEL = "ds_subs"  # NOTIFY channel: a subscription's id changed ("" for the key ring)
LOCKS = 0x6473  # advisory lock class of subscription ids ("ds"); the key ring is (LOCKS, 0)
LEAD = (0x6473, -1)  # the session lock of the delivering process
CREATES = (0x6473, 1)  # held by a hold of an id with no record (a create counts under it)


def lock_key(id: str) -> int:
    """An id's advisory lock (a 32-bit hash: a collision serializes two ids, nothing more)."""
    return int.from_bytes(hashlib.sha256(pg_rows.encoded(id)).digest()[:4], "big", signed=True)


class _Held:
    def __init__(
        self, store: PostgresSubscriptions, connection: Connection, id: str, record: bytes | None
    ) -> None:
        self.store, self.connection, self.id, self.record = store, connection, id, record

    def _save(self, record: bytes) -> None:
        self.connection.execute(
            "INSERT INTO ds_subscriptions (id, record) VALUES (%s, %s)"
            " ON CONFLICT (id) DO UPDATE SET record = excluded.record",
            (pg_rows.encoded(self.id), record),
        )
        self.connection.execute("SELECT pg_notify(%s, %s)", (CHANNEL, self.id))

    def _remove(self) -> None:
        self.connection.execute(
            "DELETE FROM ds_subscriptions WHERE id = %s", (pg_rows.encoded(self.id),)
        )
        self.connection.execute("SELECT pg_notify(%s, %s)", (CHANNEL, self.id))

    async def save(self, record: bytes) -> None:
        await self.store.run(lambda: self._save(record))

    async def remove(self) -> None:
        await self.store.run(self._remove)

    # On the hold's connection: a hold never waits for a second one (the pool could be
    # all holds, each waiting).
    async def count(self) -> int:
        query = "SELECT count(*) FROM ds_subscriptions"
        row = await self.store.run(lambda: pg_rows.fetch_one(self.connection, query, ()))
        return int(row[0])

    async def names(self, containing: str) -> list[str]:
        query = "SELECT name FROM ds_streams WHERE position(%s::bytea IN name) > 0"
        params = (pg_rows.encoded(containing),)
        rows = await self.store.run(lambda: pg_rows.fetch_all(self.connection, query, params))
        return [pg_rows.decoded(name) for (name,) in rows]


class PostgresSubscriptions(Pooled):
    """`ds_subscriptions` (id, record) and `ds_subscription_keys` (one row: the ring), in the
    database `url` (its schema migrated by `PostgresStorage.connect`)."""

    shared = True

    def __init__(self, url: str, max_size: int = 4, timeout: float = 10.0) -> None:
        self.url = url
        self.timeout = timeout
        self.pool: psycopg_pool.ConnectionPool[Connection] = psycopg_pool.ConnectionPool(
            url,
            min_size=1,
            max_size=max_size,
            timeout=timeout,
            kwargs={"autocommit": True},
            open=True,  # connecting in the background; a call waits up to `timeout`
            name="ds-subs",
        )
        self.limiter = trio.CapacityLimiter(max_size)
        self._lead: Connection | None = None  # on which LEAD is tried for, and held
        self._leads = False

    def close(self) -> None:
        self.pool.close()
        lead, self._lead = self._lead, None
        if lead is not None:
            with contextlib.suppress(psycopg.Error):
                lead.close()

    # ---- subscriptions --------------------------------------------------------------------

    async def load(self) -> list[bytes]:
        rows = await self.call(pg_rows.fetch_all, "SELECT record FROM ds_subscriptions")
        return [bytes(record) for (record,) in rows]

    async def load_one(self, id: str) -> bytes | None:
        row = await self.call(
            pg_rows.fetch_one,
            "SELECT record FROM ds_subscriptions WHERE id = %s",
            (pg_rows.encoded(id),),
        )
        return None if row is None else bytes(row[0])

    @contextlib.asynccontextmanager
    async def hold(self, id: str) -> AsyncIterator[_Held]:
        connection = await self.run(self.pool.getconn, self.limiter)
        try:
            record = await self.run(lambda: self._begin(connection, id))
            yield _Held(self, connection, id, record)
            await self.run(lambda: pg_rows.execute(connection, "COMMIT", ()))
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(self._give_back, connection)

    @staticmethod
    def _begin(connection: Connection, id: str) -> bytes | None:
        connection.execute("BEGIN")
        connection.execute("SELECT pg_advisory_xact_lock(%s, %s)", (LOCKS, lock_key(id)))
        row = connection.execute(
            "SELECT record FROM ds_subscriptions WHERE id = %s", (pg_rows.encoded(id),)
        ).fetchone()
        if row is None:  # perhaps a create: creates take turns, so each counts the others
            connection.execute("SELECT pg_advisory_xact_lock(%s, %s)", CREATES)
            return None
        return bytes(row[0])

    def _give_back(self, connection: Connection) -> None:
        if connection.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            with contextlib.suppress(psycopg.Error):
                connection.execute("ROLLBACK")  # a hold that failed: nothing it wrote stays
        self.pool.putconn(connection)

    async def save(self, id: str, record: bytes) -> None:
        async with self.hold(id) as held:
            await held.save(record)

    async def remove(self, id: str) -> None:
        async with self.hold(id) as held:
            await held.remove()

    async def stream_name(self, row: int) -> str | None:
        found = await self.call(
            pg_rows.fetch_one, "SELECT name FROM ds_streams WHERE id = %s", (row,)
        )
        return None if found is None else pg_rows.decoded(found[0])

    # ---- the key ring ---------------------------------------------------------------------

    async def load_keys(self) -> bytes | None:
        row = await self.call(pg_rows.fetch_one, "SELECT ring FROM ds_subscription_keys", ())
        return None if row is None else bytes(row[0])

    async def save_keys(self, ring: bytes) -> None:
        await self.update_keys(lambda _: ring)

    async def update_keys(self, change: Callable[[bytes | None], bytes]) -> bytes:
        return await self.call(self._update_keys, change)

    @staticmethod
    def _update_keys(connection: Connection, change: Callable[[bytes | None], bytes]) -> bytes:
        with connection.transaction():
            connection.execute("SELECT pg_advisory_xact_lock(%s, 0)", (LOCKS,))
            row = connection.execute("SELECT ring FROM ds_subscription_keys").fetchone()
            old = None if row is None else bytes(row[0])
            new = change(old)
            if new != old:
                connection.execute(
                    "INSERT INTO ds_subscription_keys (ring) VALUES (%s)"
                    " ON CONFLICT (one) DO UPDATE SET ring = excluded.ring",
                    (new,),
                )
                connection.execute("SELECT pg_notify(%s, '')", (CHANNEL,))
        return new

    # ---- the delivering process -----------------------------------------------------------

    async def lead(self) -> bool:
        """Whether this process delivers: it holds `LEAD` (taken now if free), on a
        connection that still answers."""
        return await trio.to_thread.run_sync(self._try_lead)

    def _try_lead(self) -> bool:
        """On a connection of its own, kept: `LEAD` taken if free, or still held (the
        connection answers); a lost connection loses it (the server released it)."""
        try:
            if self._lead is None:
                self._lead = psycopg.connect(
                    self.url, autocommit=True, connect_timeout=max(1, round(self.timeout))
                )
                self._leads = False
            if self._leads:
                self._lead.execute("SELECT 1")
                return True
            row = self._lead.execute("SELECT pg_try_advisory_lock(%s, %s)", LEAD).fetchone()
            self._leads = row is not None and bool(row[0])
        except psycopg.Error:
            lead, self._lead, self._leads = self._lead, None, False
            if lead is not None:
                with contextlib.suppress(psycopg.Error):
                    lead.close()
        return self._leads
