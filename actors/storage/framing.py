"""Log frames: `<body length, metadata length, body CRC-32, header CRC-32>`, metadata, data.

A frame is valid only if it is whole, has metadata, and its checksum matches; `scan` stops
at the first frame that is not. Damage confined to the last frame is a torn write, which
recovery cuts off; damage with bytes after it is corruption, which must not be cut off
silently (that would drop acknowledged records).

Size limits are the writer's: `frame` refuses what the format cannot hold, and the reader
accepts every frame the writer can make (no bound that only recovery enforces).

Scanning reads through a window, so a log of any size is checked in bounded memory with one
read per window, not per frame; large frames' data is checksummed piece by piece.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable, Iterator

import attrs

HEADER = struct.Struct("<IIII")
_FIELDS = struct.Struct("<III")
MAX_META = 1 << 20  # records' metadata is small: names, content type, producer stamp
MAX_BODY = (1 << 32) - 1  # metadata + data must fit the header's u32 length
WINDOW = 1 << 20

# (position, length) -> at most `length` bytes from `position` (fewer only at the end)
Read = Callable[[int, int], bytes | memoryview]


class FrameTooLarge(ValueError):
    """A record the format cannot hold; nothing was written."""


def check_size(meta_length: int, data_length: int) -> None:
    if meta_length > MAX_META:
        raise FrameTooLarge(f"record metadata of {meta_length} bytes exceeds {MAX_META}")
    if meta_length + data_length > MAX_BODY:
        raise FrameTooLarge(f"record of {meta_length + data_length} bytes exceeds {MAX_BODY}")


def frame(meta: bytes, data: bytes | memoryview) -> bytes:
    check_size(len(meta), len(data))
    fields = _FIELDS.pack(len(meta) + len(data), len(meta), zlib.crc32(data, zlib.crc32(meta)))
    return b"".join((fields, zlib.crc32(fields).to_bytes(4, "little"), meta, data))


def frame_size(meta: bytes, data_length: int) -> int:
    return HEADER.size + len(meta) + data_length


def data_offset(meta: bytes) -> int:
    """Where a frame's data starts, counted from the frame's start."""
    return HEADER.size + len(meta)


def _header(raw: bytes | memoryview) -> tuple[int, int, int] | None:
    """A header's (body length, metadata length, body CRC) if its own checksum holds."""
    if len(raw) < HEADER.size:
        return None
    body_length, meta_length, crc, header_crc = HEADER.unpack_from(raw)
    if zlib.crc32(raw[: _FIELDS.size]) != header_crc:
        return None
    return body_length, meta_length, crc


@attrs.frozen
class Scanned:
    meta: bytes
    data_locator: int
    data_length: int


class _Window:
    """Reads through one buffered window; requests larger than a window go straight through."""

    def __init__(self, read: Read) -> None:
        self._read = read
        self._start = 0
        self._buffer: bytes | memoryview = b""

    def get(self, position: int, length: int) -> bytes | memoryview:
        if length > WINDOW:
            return self._read(position, length)
        offset = position - self._start
        if offset < 0 or offset + length > len(self._buffer):
            self._start, self._buffer, offset = position, self._read(position, WINDOW), 0
        return memoryview(self._buffer)[offset : offset + length]

    def crc(self, crc: int, position: int, length: int) -> int:
        """`crc` continued over [position, position + length), a window at a time."""
        end = position + length
        while position < end:
            piece = self.get(position, min(WINDOW, end - position))
            if not piece:
                break
            crc = zlib.crc32(piece, crc)
            position += len(piece)
        return crc


def scan_source(read: Read, size: int, start: int = 0) -> Iterator[Scanned | int]:
    """Yields each valid frame of a log of `size` bytes, then the end of the valid prefix."""
    window = _Window(read)
    position = start
    while position + HEADER.size <= size:
        header = _header(window.get(position, HEADER.size))
        if header is None:
            break
        body_length, meta_length, crc = header
        body_start = position + HEADER.size
        body_end = body_start + body_length
        if not 0 < meta_length <= body_length or body_end > size:
            break
        meta = bytes(window.get(body_start, meta_length))
        data_length = body_length - meta_length
        if window.crc(zlib.crc32(meta), body_start + meta_length, data_length) != crc:
            break
        yield Scanned(meta, body_start + meta_length, data_length)
        position = body_end
    yield position


def torn_source(read: Read, size: int, end: int) -> bool:
    """Whether the bytes from `end` (where `scan` stopped) can only be an interrupted write:
    an incomplete header, a frame running past the end, or a bad last frame."""
    if size - end < HEADER.size:
        return True
    header = _header(read(end, HEADER.size))
    return header is not None and end + HEADER.size + header[0] >= size


def verdict_source(read: Read, size: int) -> tuple[int, int, str]:
    """(valid frames, end of the valid prefix, "ok" | "torn" | "corrupt") of a whole log."""
    for frames, item in enumerate(scan_source(read, size)):
        if isinstance(item, int):
            if item == size:
                return frames, item, "ok"
            return frames, item, "torn" if torn_source(read, size, item) else "corrupt"
    raise AssertionError("scan always ends with a position")


def first_meta(read: Read) -> bytes | None:
    """The first frame's metadata if its header holds, without reading (or checking) the
    frame's data: what start-up needs of every log."""
    header = _header(read(0, HEADER.size))
    if header is None or not 0 < header[1] <= header[0]:
        return None
    meta = read(HEADER.size, header[1])
    return bytes(meta) if len(meta) == header[1] else None


# ---- the same over a buffer in memory -----------------------------------------------------

Buffer = bytes | bytearray | memoryview


def reader(buffer: Buffer) -> Read:
    view = memoryview(buffer)
    return lambda position, length: view[position : position + length]


def scan(buffer: Buffer, start: int = 0) -> Iterator[Scanned | int]:
    return scan_source(reader(buffer), len(buffer), start)


def torn(buffer: Buffer, end: int) -> bool:
    return torn_source(reader(buffer), len(buffer), end)


def verdict(buffer: Buffer) -> tuple[int, int, str]:
    return verdict_source(reader(buffer), len(buffer))
