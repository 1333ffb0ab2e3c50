"""JSON mode: validation, one-level array flattening, and array framing of reads.

A JSON stream stores each message as compact JSON followed by a comma, so any range of whole
messages is a byte range, and a read wraps it as `[` + range without its last comma + `]`.
"""

from __future__ import annotations

import json
from typing import Any

from streams.errors import bad_request

_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_decoder = json.JSONDecoder(parse_constant=_reject_constant)


def messages(body: bytes, *, allow_empty: bool) -> list[bytes]:
    """The stored form of each message in a POST/PUT body; 400 for invalid JSON or `[]`."""
    try:
        value = _decoder.decode(body.decode("utf-8"))
        items = value if isinstance(value, list) else [value]
        # Re-encoding rejects what the decoder lets through: 1e400 (infinite), lone surrogates.
        stored = [_encoder.encode(item).encode() + b"," for item in items]
    except (UnicodeError, ValueError, RecursionError) as error:
        raise bad_request(f"invalid JSON: {error}", code="INVALID_JSON") from error
    if not items and not allow_empty:
        raise bad_request("an empty JSON array appends nothing", code="EMPTY_ARRAY")
    return stored


def as_array(stored: bytes) -> bytes:
    """A read body: stored messages (each ending in a comma) as one JSON array."""
    return b"[" + stored[:-1] + b"]" if stored else b"[]"
