"""JSON mode: validation, one-level array flattening, and array framing of reads.

A JSON stream stores each message as compact JSON followed by a comma, so any range of whole
messages is a byte range, and a read wraps it as `[` + range without its last comma + `]`.
Message boundaries are the data's own top-level commas: nothing else records them, so no
per-message metadata grows with the number of messages.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from streams.protocol.errors import bad_request

# Bodies up to this size are parsed in one call; larger ones message by message, so a worker
# thread parsing them lets the event loop take the GIL between messages.
WHOLE_PARSE_BYTES = 256 * 1024

ENCODE_BATCH = 50_000  # messages encoded in one C call (a few ms holding the GIL)
_SPACE = frozenset(" \t\n\r")

_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)
_WHITESPACE = re.compile(r"[ \t\n\r]*")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_decoder = json.JSONDecoder(parse_constant=_reject_constant)


def flatten(body: bytes) -> bytes:
    """The stored form of a POST/PUT body: each message (each item of a top-level array)
    as compact JSON plus a comma; b"" for `[]`. 400 for invalid JSON."""
    try:
        text = body.decode("utf-8")
        if len(body) <= WHOLE_PARSE_BYTES:
            value = _decoder.decode(text)
            return _stored(value if isinstance(value, list) else [value])
        stored = bytearray()
        for batch in _batches(text):
            stored += _stored(batch)
        return bytes(stored)
    except (UnicodeError, ValueError, RecursionError) as error:
        raise bad_request(f"invalid JSON: {error}", code="INVALID_JSON") from error


def _stored(items: list[Any]) -> bytes:
    """Messages as `message,` items. Encoding the list at once is C-fast, and its
    top-level commas are exactly the message boundaries. Re-encoding also rejects what the
    decoder lets through: 1e400 (infinite), lone surrogates."""
    if not items:
        return b""
    return _encoder.encode(items)[1:-1].encode() + b","


def _batches(text: str) -> Iterator[list[Any]]:
    """A body's messages, `ENCODE_BATCH` at a time, parsed one by one (between two, another
    thread can take the GIL): a top-level array's items, or the one value."""
    position = _skip(text, 0)
    if not text.startswith("[", position):
        yield [_decoder.decode(text)]
        return
    position = _skip(text, position + 1)
    if text.startswith("]", position):
        _end(text, position + 1)
        return
    scan = _decoder.scan_once  # type: ignore[attr-defined]  # raw_decode without its wrapper
    batch: list[Any] = []
    append = batch.append
    while True:
        try:
            item, position = scan(text, position)
        except StopIteration as stop:
            raise ValueError(f"expected a value at character {stop.value}") from None
        append(item)
        if len(batch) == ENCODE_BATCH:
            yield batch
            batch.clear()
        separator = text[position : position + 1]
        if separator not in (",", "]"):
            position = _skip(text, position)
            separator = text[position : position + 1]
        if separator == ",":
            position += 1
            if text[position : position + 1] in _SPACE:
                position = _skip(text, position)
        elif separator == "]":
            _end(text, position + 1)
            yield batch
            return
        else:
            raise ValueError(f"expected ',' or ']' at character {position}")


def _skip(text: str, position: int) -> int:
    return _WHITESPACE.match(text, position).end()  # type: ignore[union-attr]


def _end(text: str, position: int) -> None:
    if _skip(text, position) != len(text):
        raise ValueError(f"extra data at character {position}")


def messages(stored: bytes) -> list[Any]:
    """The messages of stored data (`message,` items), parsed one by one: a large record
    parsed in a worker thread then lets the event loop run between two."""
    if not stored:
        return []
    parsed: list[Any] = []
    for batch in _batches("[" + str(stored[:-1], "utf-8") + "]"):
        parsed += batch
    return parsed


def sizes(stored: bytes) -> Iterator[int]:
    """The stored size of each message in `stored` (whole messages, each ending in a comma)."""
    text = stored.decode("utf-8")
    ascii_only = stored.isascii()
    index = 0
    while index < len(text):
        _, end = _decoder.raw_decode(text, index)
        yield (end - index if ascii_only else len(text[index:end].encode())) + 1
        index = end + 1


def advance(stored: bytes, base: int, position: int, count: int, limit: int) -> tuple[int, int]:
    """Move `count` messages forward from `position` through `stored` (whole messages that
    start at stream position `base`), counting only messages that start at or after
    `position` and before `limit`; returns the new position and the count left."""
    cursor = base
    for size in sizes(stored):
        if not count or cursor >= limit:
            break
        if cursor >= position:
            position = cursor + size
            count -= 1
        cursor += size
    return position, count


def as_array(stored: bytes) -> bytes:
    """A read body: stored messages (each ending in a comma) as one JSON array."""
    return b"[" + stored[:-1] + b"]" if stored else b"[]"


def json_piece(stored: bytes, *, first: bool, last: bool) -> bytes:
    """One piece of a JSON read body, `[` + stored messages without the last comma + `]`."""
    if first and last:
        return as_array(stored)
    if last:
        return stored[:-1] + b"]"
    return b"[" + stored if first else stored


def body_length(stored: int, *, json: bool) -> int:
    """The length of a read body over `stored` bytes, known before any of them is fetched."""
    if not json:
        return stored
    return stored + 1 if stored else 2  # `[` + stored - `,` + `]`, or `[]`
