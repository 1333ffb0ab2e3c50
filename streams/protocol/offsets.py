"""Offsets: fixed-width, lexicographically sortable tokens over a stream's byte position.

A token is `<segment>_<position>`, both 16 decimal digits. The segment is always 0 today
(headroom for compaction); the position counts stored payload bytes from the stream start.
Equal width makes string order equal numeric order, and `-1`/`now` can never be minted.
"""

from __future__ import annotations

import enum
import re

from streams.protocol.errors import bad_request

_WIDTH = 16
MAX = 10**_WIDTH - 1
_TOKEN = re.compile(r"([0-9]{16})_([0-9]{16})")


class Sentinel(enum.Enum):
    START = "-1"
    NOW = "now"


def encode(position: int) -> str:
    if not 0 <= position <= MAX:
        raise ValueError(f"position out of range: {position}")
    return f"{0:0{_WIDTH}d}_{position:0{_WIDTH}d}"


def decode(token: str) -> int:
    """The position of a token this server minted; 400 for anything else."""
    match = _TOKEN.fullmatch(token)
    if match is None or match.group(1) != "0" * _WIDTH:
        raise bad_request(f"malformed offset: {token[:64]!r}", code="INVALID_OFFSET")
    return int(match.group(2))


def parse(token: str) -> int | Sentinel:
    """A read offset: a position, or one of the sentinels `-1` and `now`."""
    if token == Sentinel.START.value:
        return Sentinel.START
    if token == Sentinel.NOW.value:
        return Sentinel.NOW
    return decode(token)
