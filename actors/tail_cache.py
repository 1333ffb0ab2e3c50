"""The newest bytes of a stream, kept contiguous in memory so live and catch-up reads near
the tail are one slice instead of a walk over records and a disk read."""

from __future__ import annotations


class TailCache:
    def __init__(self, start: int, limit: int) -> None:
        self.start = start  # stream position of data[0]
        self.limit = limit
        self._data = bytearray()

    @property
    def end(self) -> int:
        return self.start + len(self._data)

    @classmethod
    def of(cls, tail: int, newest_first: list[bytes], limit: int) -> TailCache:
        """A cache ending at `tail`, from record data given newest first."""
        chunks, size = [], 0
        for data in newest_first:
            if size >= limit:
                break
            chunks.append(data)
            size += len(data)
        cache = cls(tail - size, limit)
        cache._data = bytearray(b"".join(reversed(chunks)))
        return cache

    def extend(self, data: bytes) -> None:
        self._data += data
        if len(self._data) > 2 * self.limit:  # trim in bulk: amortized O(1) per byte
            cut = len(self._data) - self.limit
            del self._data[:cut]
            self.start += cut

    def get(self, start: int, end: int) -> bytes | None:
        """The bytes [start, end), or None when they are not all cached."""
        if start < self.start or end > self.end:
            return None
        return bytes(memoryview(self._data)[start - self.start : end - self.start])
