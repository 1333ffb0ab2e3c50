"""The read rules of a stream's state: where a read starts, which parts of the log it takes.

Pure (no I/O): `machine.StreamState` holds them as a base class, so a read is planned from
the same fields the state machine folds, and the actor reads the slices it names."""

from __future__ import annotations

from streams.protocol import jsonmode, offsets
from streams.protocol.errors import ProtocolError
from streams.protocol.extents import Extents, Slice
from streams.protocol.headers import is_json
from streams.protocol.offsets import Sentinel
from streams.protocol.records import StreamConfig


def compacted(base: int) -> ProtocolError:
    """A read below the last compaction: that history is gone, its state is not."""
    return ProtocolError(
        410,
        "Gone",
        f"history before offset {offsets.encode(base)} was compacted; read from offset=-1 "
        "(or with state=snapshot) for the state as of now, then continue from its "
        "Stream-Next-Offset",
        {"Stream-State-Base": offsets.encode(base)},
        code="STREAM_COMPACTED",
    )


class StreamReads:
    """The reads of a `StreamState`, over the fields it declares here (no slots of its own:
    a state stays as small as its fields)."""

    __slots__ = ()

    config: StreamConfig
    tail: int
    base: int
    extents: Extents

    def read_start(self, start: int | Sentinel, exact: bool = False) -> int:
        """Where a read from `start` begins: `-1` is the start, `now` the tail. Reads are
        record-granular, as the reference server's: a position inside a record starts at that
        record (every record that ends after it is read), and a position past the tail reads
        nothing yet (200, empty, that position as the next offset; a live read waits for the
        first record that ends after it). `exact` starts exactly there instead (a later piece
        of a read). A position in a fork's inherited range is left for the source to place."""
        match start:
            case Sentinel.START:
                position = 0
            case Sentinel.NOW:
                position = self.tail
            case int():
                position = start
        if position < self.base:
            raise compacted(self.base)
        if exact or position < self.config.fork_offset:
            return position
        return self.record_start(position)

    def slices(self, start: int, bound: int, max_bytes: int) -> tuple[list[Slice], int]:
        """Slices of own data from `start`, whole records up to `max_bytes` (at least one),
        never past `bound`; and the position the slices end at."""
        return self.extents.slices(start, min(self.tail, bound), self.tail, max_bytes)

    def record_start(self, position: int) -> int:
        """The start of the record holding `position` (or `position` itself, outside records)."""
        return self.extents.record_start(position, self.tail)

    def record_ends(self, start: int, stop: int) -> list[int]:
        """Where the records holding [start, stop) end, the last cut at `stop`."""
        return self.extents.record_ends(start, stop, self.tail)

    def holds_boundary(self, position: int) -> bool:
        """Whether `position` is a record boundary the log holds (its start, or its tail)."""
        if not self.base <= position <= self.tail:
            return False
        if position in (self.base, self.tail):
            return True
        return position >= self.config.fork_offset and self.extents.starts_at(position)

    def read_end(self, start: int, bound: int, max_bytes: int) -> int:
        """Where `slices(start, bound, max_bytes)` ends, in O(log records): at the first record
        end at least `max_bytes` past `start` (one record at least), never past `bound`."""
        return self.extents.read_end(start, min(self.tail, bound), self.tail, max_bytes)

    def advance(self, position: int, count: int, bound: int) -> tuple[int, int]:
        """Move `count` bytes forward from `position` through own data, stopping at `bound`;
        returns the new position and what is left. (JSON streams count messages instead:
        `jsonmode.advance` over the records' data.)"""
        step = min(count, min(bound, self.tail) - position)
        return position + step, count - step

    def json_body(self, stored: bytes) -> bytes:
        return jsonmode.as_array(stored) if is_json(self.config.content_type) else stored
