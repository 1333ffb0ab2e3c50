"""Reads of a stream's own data as its actor serves them: from the tail cache when it holds
the range, else from the log (in the storage's worker thread)."""

from __future__ import annotations

from actors import messages as m
from actors.storage import Log
from actors.tail_cache import TailCache
from streams.protocol import jsonmode
from streams.protocol.headers import is_json
from streams.protocol.machine import StreamState

ADVANCE_CHUNK = 1 << 20


async def read(
    state: StreamState, snapshot: m.Snapshot, cache: TailCache, log: Log | None, message: m.Read
) -> m.ReadResult:
    """Whole records from the start up to `max_bytes` (`end` is always a record boundary),
    of which only the first `fetch` bytes come back when given (a piece); a start in the
    inherited range of a fork names the source to read instead. A start inside a record
    starts at that record unless `exact`; one past the tail reads nothing (`end` is that
    start)."""
    start = state.read_start(message.start, message.exact)
    if start < state.config.fork_offset:
        return m.ReadResult(snapshot, start, start, b"", state.config.fork_source)
    bound = state.tail if message.bound is None else message.bound
    end = state.read_end(start, bound, message.max_bytes)
    stop = end if message.fetch is None else min(end, start + message.fetch)
    data = cache.get(start, stop)
    if data is None:
        slices, stop = state.slices(start, stop, message.max_bytes)  # cut inside a record
        assert log is not None
        data = await log.read(slices) if slices else b""
    ends = tuple(state.record_ends(start, start + len(data))) if message.ends else ()
    return m.ReadResult(snapshot, start, end, data, ends=ends)


async def advance(state: StreamState, log: Log | None, message: m.Advance) -> tuple[int, int]:
    """Fork creation: move a sub-offset through own data. JSON streams count messages,
    found in the data itself, whole records a chunk at a time."""
    if not is_json(state.config.content_type):
        return state.advance(message.position, message.count, message.bound)
    position, count = message.position, message.count
    limit = min(message.bound, state.tail)
    start = state.record_start(position)
    while count and start < limit:
        slices, end = state.slices(start, state.tail, ADVANCE_CHUNK)
        assert log is not None
        data = await log.read(slices)
        position, count = jsonmode.advance(data, start, position, count, limit)
        start = end
    return position, count
