"""Parsing of the protocol's request headers and query parameters: pure, no I/O."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime

import attrs

from streams.protocol.errors import bad_request

MAX_SAFE_INTEGER = 2**53 - 1
# Longer digit strings are over the bound anyway; checking length first keeps int() from
# raising on Python's 4300-digit conversion limit (and from doing quadratic work).
_MAX_DIGITS = len(str(MAX_SAFE_INTEGER))
_DECIMAL = re.compile(r"0|[1-9][0-9]*")
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")
DEFAULT_CONTENT_TYPE = "application/octet-stream"


def is_true(value: str | None) -> bool:
    """`Stream-Closed` counts only when it is exactly `true`, in any case."""
    return value is not None and value.strip().lower() == "true"


def parse_ttl(value: str) -> int:
    if not _DECIMAL.fullmatch(value):
        raise bad_request(f"Stream-TTL must be a non-negative decimal integer, got {value[:64]!r}")
    if len(value) > _MAX_DIGITS or int(value) > MAX_SAFE_INTEGER:
        raise bad_request("Stream-TTL is too large")
    return int(value)


STATE_VALIDATION_MODES = ("structural", "semantic")


def parse_state_validation(value: str) -> str:
    """`Stream-State-Validation` (docs/state.md): how appends to a state stream are checked."""
    mode = value.strip().lower()
    if mode not in STATE_VALIDATION_MODES:
        raise bad_request(
            f"Stream-State-Validation must be structural or semantic, got {value[:64]!r}"
        )
    return mode


def parse_state_compaction(value: str) -> int:
    """`Stream-State-Compaction`: the log size in bytes past which a state stream compacts."""
    if not _DECIMAL.fullmatch(value) or len(value) > _MAX_DIGITS or int(value) < 1:
        raise bad_request(
            f"Stream-State-Compaction must be a positive number of bytes, got {value[:64]!r}"
        )
    return int(value)


def parse_expires_at(value: str) -> float:
    """An RFC 3339 timestamp as Unix seconds."""
    text = value.strip()
    if not _RFC3339.fullmatch(text):
        raise bad_request(f"Stream-Expires-At must be an RFC 3339 timestamp, got {value!r}")
    try:
        moment = datetime.fromisoformat(text.upper().replace("Z", "+00:00"))
        moment.astimezone(UTC)  # must also be a representable instant in UTC
    except (ValueError, OverflowError) as error:
        raise bad_request(f"Stream-Expires-At is not a valid time: {value!r}") from error
    return moment.timestamp()


def format_expires_at(seconds: float) -> str:
    moment = datetime.fromtimestamp(seconds, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def media_type(content_type: str) -> str:
    """The comparable part of a content type: `type/subtype`, lower case."""
    return content_type.split(";", 1)[0].strip().lower()


def is_json(content_type: str) -> bool:
    return media_type(content_type) == "application/json"


def is_text(content_type: str) -> bool:
    """Text and JSON travel as UTF-8 in SSE; everything else is base64."""
    essence = media_type(content_type)
    return essence.startswith("text/") or essence == "application/json"


def valid_content_type(content_type: str) -> bool:
    essence = media_type(content_type)
    kind, slash, sub = essence.partition("/")
    return bool(kind and slash and sub) and " " not in essence


@attrs.frozen
class Producer:
    """The idempotent-producer stamp of one request."""

    id: str
    epoch: int
    seq: int


def _safe_integer(name: str, value: str) -> int:
    digits = value.strip()
    if not _DECIMAL.fullmatch(digits):
        raise bad_request(f"{name} must be a non-negative integer, got {value[:64]!r}")
    if len(digits) > _MAX_DIGITS or int(digits) > MAX_SAFE_INTEGER:
        raise bad_request(f"{name} must be at most 2^53-1")
    return int(digits)


def parse_producer(headers: Mapping[str, str]) -> Producer | None:
    """All three producer headers, or none of them."""
    values = [headers.get(h) for h in ("producer-id", "producer-epoch", "producer-seq")]
    if all(v is None for v in values):
        return None
    producer_id, epoch, seq = values
    if producer_id is None or epoch is None or seq is None:
        raise bad_request("Producer-Id, Producer-Epoch and Producer-Seq go together")
    if not producer_id.strip():
        raise bad_request("Producer-Id must not be empty")
    return Producer(
        producer_id,
        _safe_integer("Producer-Epoch", epoch),
        _safe_integer("Producer-Seq", seq),
    )


def parse_sub_offset(value: str) -> int:
    return _safe_integer("Stream-Fork-Sub-Offset", value)
