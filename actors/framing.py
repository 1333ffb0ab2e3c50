"""Log frames: `<body length, metadata length, CRC-32>` then metadata, then data.

A frame is valid only if it is whole and its checksum matches; `scan` stops at the first
frame that is not, which is where recovery truncates a torn tail.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator

import attrs

HEADER = struct.Struct("<III")
MAX_META = 1 << 20


def frame(meta: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(data, zlib.crc32(meta))
    return HEADER.pack(len(meta) + len(data), len(meta), crc) + meta + data


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
        body_length, meta_length, crc = HEADER.unpack_from(view, position)
        body_start = position + HEADER.size
        body_end = body_start + body_length
        if meta_length > min(body_length, MAX_META) or body_end > len(view):
            break
        meta = view[body_start : body_start + meta_length]
        data = view[body_start + meta_length : body_end]
        if zlib.crc32(data, zlib.crc32(meta)) != crc:
            break
        yield Scanned(bytes(meta), body_start + meta_length, body_length - meta_length)
        position = body_end
    yield position
