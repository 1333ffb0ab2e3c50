"""Following a stream: its committed batches, one after another, as they are committed.

Every live consumer is built on this (long-poll and SSE now; the State Protocol layer and
subscriptions next), so the wait-and-reread loop exists once. A follower parked at the tail
waits on its stream's `Change` (actors/wakeups.py): one event per commit for the actor, however
many follow. The commit that wakes it usually hands over the data it added, so the followers
at the old tail need not ask the actor again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import attrs

from actors import messages as m
from streams.protocol.errors import ProtocolError, not_found
from streams.protocol.offsets import Sentinel

Read = Callable[[int | Sentinel], Awaitable[m.ReadResult]]


@attrs.frozen
class Batch:
    """The committed bytes [start, end) of a followed stream, in their stored form (JSON
    streams store `message,` items). `data` holds all of them when `complete`; a follow asked
    for pieces holds only the first piece, and the rest is fetched by position
    (`Streams.read(..., internal=True)`, as `streams.pieces.ReadBody` does)."""

    start: int
    end: int  # the next offset
    data: bytes
    snapshot: m.Snapshot  # the followed stream's metadata when this batch was read

    @property
    def complete(self) -> bool:
        return self.start + len(self.data) == self.end

    @property
    def up_to_date(self) -> bool:
        """It reaches the stream's tail as of this batch (or a follow from past it)."""
        return self.end >= self.snapshot.tail

    @property
    def closed(self) -> bool:
        """The stream is closed and this batch reaches its tail: the last batch."""
        return self.snapshot.closed and self.up_to_date


class Follower:
    """`async for batch in streams.follow(name, start)`: the batches of `name` from `start`.

    The first batch is what is committed from `start` now, from the start of the record
    holding it (empty at or past the tail: it still says where the follow stands); each later
    one holds data (from past the tail: from the first record that ends after `start`, whole),
    except a last empty one that says the stream was closed. Reads stitch forks as
    `Streams.read` does. Iteration ends after a `closed` batch, or when the stream is deleted
    (`gone` then says how: 404, or 410 for a soft delete; a stream deleted and created again is
    404 too). Errors of the first read (404, 410 compacted) are raised; so are failures other
    than deletion.

    Cancelling a wait (a timeout around `__anext__`) loses nothing: the next call goes on
    from the same position. It keeps no batch's data.
    """

    def __init__(self, read: Read, start: int | Sentinel, limit: int) -> None:
        self._read = read  # a read of at most `limit` bytes returned, from a position
        self._start = start
        self._limit = limit
        self._snapshot: m.Snapshot | None = None  # as of the last batch
        self._end = 0
        self._done = False
        self.gone: ProtocolError | None = None

    def __aiter__(self) -> Follower:
        return self

    async def __anext__(self) -> Batch:
        if self._done:
            raise StopAsyncIteration
        if self._snapshot is None:
            result = await self._read(self._start)
        else:
            try:
                result = await self._next(self._end, self._snapshot)
            except ProtocolError as error:
                if error.status not in (404, 410):
                    raise
                self.gone, self._done = error, True
                raise StopAsyncIteration from None
        self._snapshot, self._end = result.snapshot, result.end
        batch = Batch(result.start, result.end, result.data, result.snapshot)
        self._done = batch.closed
        return batch

    @property
    def position(self) -> int | Sentinel:
        """Where the next batch starts."""
        return self._start if self._snapshot is None else self._end

    async def _next(self, end: int, snapshot: m.Snapshot) -> m.ReadResult:
        """The next read with data, or the stream's end once it is closed."""
        incarnation = snapshot.incarnation
        while True:
            changed = snapshot.changed
            if end >= snapshot.tail:  # past it: until a record ends after `end`
                await changed.wait()
            added = changed.added
            if added is not None and added.start == end and len(added.data) <= self._limit:
                result = added  # what the commit added is exactly what comes next
            else:
                result = await self._read(end)
            if result.snapshot.incarnation != incarnation:
                raise not_found("the stream was deleted and created again")
            if result.data or (result.snapshot.closed and result.end >= result.snapshot.tail):
                return result
            end, snapshot = result.end, result.snapshot
