"""Live reads across processes (docs/scaling.md): one connection per process, outside the
pool, on a thread of its own, `LISTEN`s for the commits, compactions and deletes every
process notifies and hands each (stream row, tail, generation) to Trio. psycopg has no Trio
support, so the thread blocks in `notifies`, waking every `retry` seconds to see whether it
is still wanted.

A lost connection is opened again after `retry` seconds; once listening again, `listening`
runs, which has every resident stream look at its tail: a notification lost meanwhile costs a
query, never a reader waiting past its timeout for data that exists.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Awaitable, Callable, Mapping

import psycopg
import trio

from actors.storage import pg_rows

logger = logging.getLogger(__name__)


async def _nothing() -> None:
    pass


class Listener:
    """`await listener.run()` in a nursery: `moved(stream, tail, generation)` for each change
    notified (generation None from a server that sends none; `pg_rows.REMOVED`: deleted),
    `listening()` after each (re)connection, `lost()` (awaited before reconnecting) after a
    connection is lost; `channels` are more to listen on, each notification's payload handed
    to its handler. All run in Trio except `reconnected()`, which runs in the listener's thread
    before `listening()` after a lost connection came back (the database may have restarted,
    closing every connection the storage's pool holds: it checks them then)."""

    def __init__(
        self,
        url: str,
        moved: Callable[[int, int, int | None], None],
        listening: Callable[[], None],
        *,
        retry: float = 1.0,
        lost: Callable[[], Awaitable[None]] = _nothing,
        channels: Mapping[str, Callable[[str], None]] | None = None,
        reconnected: Callable[[], None] = lambda: None,
    ) -> None:
        self.url = url
        self.retry = retry
        self._moved = moved
        self._listening = listening
        self._lost = lost
        self._channels = dict(channels or {})
        self._reconnected = reconnected
        self._was_lost = False
        self._stop = threading.Event()
        self.backend: int | None = None  # the listening connection's server process id

    async def run(self) -> None:
        try:
            await trio.to_thread.run_sync(
                self._listen, abandon_on_cancel=True, limiter=trio.CapacityLimiter(1)
            )
        finally:
            self._stop.set()  # the abandoned thread ends within `retry` seconds

    def _listen(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    self._serve()
                except psycopg.Error as error:
                    self.backend = None
                    self._was_lost = True
                    logger.warning("notifications lost (%s); listening again", error)
                    trio.from_thread.run(self._lost)
                    self._stop.wait(self.retry)
        except trio.RunFinishedError:
            pass  # the server stopped

    def _serve(self) -> None:
        timeout = max(1, round(self.retry))
        with psycopg.connect(self.url, autocommit=True, connect_timeout=timeout) as connection:
            for channel in (pg_rows.CHANNEL, *self._channels):
                connection.execute(f"LISTEN {channel}")
            self.backend = connection.info.backend_pid
            if self._was_lost:
                self._was_lost = False
                self._reconnected()
            trio.from_thread.run_sync(self._listening)
            while not self._stop.is_set():
                for notification in connection.notifies(timeout=self.retry):
                    handler = self._channels.get(notification.channel)
                    if handler is not None:
                        trio.from_thread.run_sync(handler, notification.payload)
                        continue
                    stream, tail, *generation = notification.payload.split(":")
                    again = int(generation[0]) if generation else None
                    trio.from_thread.run_sync(self._moved, int(stream), int(tail), again)
