"""Where each record's data lies: where it starts in the stream, and where in the log (its
locator). Reads are cut from these at record boundaries, in O(log records).

Two arrays of 16 bytes a record (1M records: 16 MB; a list of objects was ~150 MB). A record
ends where the next starts, the last one at the stream's tail (given by the caller).
"""

from __future__ import annotations

import bisect
from array import array

import attrs


@attrs.frozen
class Slice:
    locator: int
    skip: int
    length: int


@attrs.define
class Extents:
    starts: array[int] = attrs.field(factory=lambda: array("q"))
    locators: array[int] = attrs.field(factory=lambda: array("q"))

    def __len__(self) -> int:
        return len(self.starts)

    def add(self, start: int, locator: int) -> None:
        self.starts.append(start)
        self.locators.append(locator)

    def _end(self, index: int, tail: int) -> int:
        return self.starts[index + 1] if index + 1 < len(self.starts) else tail

    def slices(self, start: int, end: int, tail: int, max_bytes: int) -> tuple[list[Slice], int]:
        """Slices from `start`, whole records up to `max_bytes` (at least one), never past
        `end`; and the position the slices end at."""
        result: list[Slice] = []
        position, total = start, 0
        index = max(bisect.bisect_right(self.starts, start) - 1, 0)
        while position < end and index < len(self.starts) and (total < max_bytes or not result):
            record_start, record_end = self.starts[index], self._end(index, tail)
            locator = self.locators[index]
            index += 1
            if record_end <= position:
                continue
            stop = min(record_end, end)
            result.append(Slice(locator, position - record_start, stop - position))
            total += stop - position
            position = stop
        return result, position

    def record_start(self, position: int, tail: int) -> int:
        """The start of the record holding `position` (or `position` itself, outside records)."""
        index = bisect.bisect_right(self.starts, position) - 1
        return self.starts[index] if index >= 0 and position < tail else position

    def record_ends(self, start: int, stop: int, tail: int) -> list[int]:
        """Where the records holding [start, stop) end, the last cut at `stop`."""
        ends: list[int] = []
        index = max(bisect.bisect_right(self.starts, start) - 1, 0)
        while index < len(self.starts) and self.starts[index] < stop:
            end = min(self._end(index, tail), stop)
            if end > start:
                ends.append(end)
            index += 1
        return ends

    def starts_at(self, position: int) -> bool:
        index = bisect.bisect_left(self.starts, position)
        return index < len(self.starts) and self.starts[index] == position

    def read_end(self, start: int, end: int, tail: int, max_bytes: int) -> int:
        """Where `slices(start, end, tail, max_bytes)` ends: at the first record end at least
        `max_bytes` past `start` (one record at least), never past `end`."""
        if start >= end:
            return start
        index = bisect.bisect_left(self.starts, start + max(max_bytes, 1))
        record_end = self.starts[index] if index < len(self.starts) else tail
        return min(record_end, end)

    def from_(self, start: int, shift: int) -> Extents:
        """The records from `start` on, their locators moved by `shift` (a compaction)."""
        index = bisect.bisect_left(self.starts, start)
        locators = array("q", (locator + shift for locator in self.locators[index:]))
        return Extents(self.starts[index:], locators)
