"""Log frames: `<body length, metadata length, body CRC-32, header CRC-32>`, metadata, data.

A frame is valid only if it is whole, has metadata, and its checksum matches; `scan` stops
at the first frame that is not. Damage confined to the last frame is a torn write, which
recovery cuts off; damage with bytes after it is corruption, which must not be cut off
silently (that would drop acknowledged records).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator

import attrs

HEADER = struct.Struct("<IIII")
_FIELDS = struct.Struct("<III")
MAX_META = 1 << 20


def frame(meta: bytes, data: bytes) -> bytes:
    fields = _FIELDS.pack(len(meta) + len(data), len(meta), zlib.crc32(data, zlib.crc32(meta)))
    return fields + zlib.crc32(fields).to_bytes(4, "little") + meta + data


def _header(view: memoryview, position: int) -> tuple[int, int, int] | None:
    """The header at `position` if its own checksum holds."""
    body_length, meta_length, crc, header_crc = HEADER.unpack_from(view, position)
    if zlib.crc32(view[position : position + _FIELDS.size]) != header_crc:
        return None
    return body_length, meta_length, crc


def data_offset(meta: bytes) -> int:
    """Where a frame's data starts, counted from the frame's start."""
    return HEADER.size + len(meta)


@attrs.frozen
class Scanned:
    meta: bytes
    data_locator: int
    data_length: int


def scan(buffer: bytes | bytearray | memoryview, start: int = 0) -> Iterator[Scanned | int]:
    """Yields each valid frame, then the end of the valid prefix (an int) last."""
    view = memoryview(buffer)
    position = start
    while position + HEADER.size <= len(view):
        header = _header(view, position)
        if header is None:
            break
        body_length, meta_length, crc = header
        body_start = position + HEADER.size
        body_end = body_start + body_length
        if not 0 < meta_length <= min(body_length, MAX_META) or body_end > len(view):
            break
        meta = view[body_start : body_start + meta_length]
        data = view[body_start + meta_length : body_end]
        if zlib.crc32(data, zlib.crc32(meta)) != crc:
            break
        yield Scanned(bytes(meta), body_start + meta_length, body_length - meta_length)
        position = body_end
    yield position


def torn(buffer: bytes | bytearray | memoryview, end: int) -> bool:
    """Whether the bytes from `end` (where `scan` stopped) can only be an interrupted write:
    an incomplete header, a frame running past the end, or a bad last frame."""
    if len(buffer) - end < HEADER.size:
        return True
    header = _header(memoryview(buffer), end)
    return header is not None and end + HEADER.size + header[0] >= len(buffer)


def verdict(buffer: bytes | bytearray | memoryview) -> tuple[int, int, str]:
    """(valid frames, end of the valid prefix, "ok" | "torn" | "corrupt") of a whole log."""
    for frames, item in enumerate(scan(buffer)):
        if isinstance(item, int):
            if item == len(buffer):
                return frames, item, "ok"
            return frames, item, "torn" if torn(buffer, item) else "corrupt"
    raise AssertionError("scan always ends with a position")
