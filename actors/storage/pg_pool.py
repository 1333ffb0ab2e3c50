"""A psycopg connection pool used from Trio: each blocking call in a worker thread under a
capacity limiter, and the database's failures raised as `Unavailable` (answered 503)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg
import psycopg_pool
import trio

from actors.storage import Unavailable
from actors.storage.pg_rows import Connection

T = TypeVar("T")


class Pooled:
    """What both the streams' storage and the subscriptions' store call the database with."""

    pool: psycopg_pool.ConnectionPool[Connection]
    limiter: trio.CapacityLimiter

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

    async def call(self, function: Callable[..., T], *args: Any) -> T:
        """`function(connection, *args)` in a worker thread, on a pooled connection."""

        def run() -> T:
            with self.pool.connection() as connection:
                return function(connection, *args)

        return await self.run(run, self.limiter)
