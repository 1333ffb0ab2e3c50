"""What one message of a state stream is: a change, a control message, or neither.

Two readings of the same message. `classify` is the lenient one the fold uses: it never
raises, and whatever it cannot read as a change or a control message is skipped and counted
(an unvalidated stream may hold any JSON). `structural_error` is the strict one behind
`Stream-State-Validation: structural`: it names the first thing wrong with a message so an
append can be refused with a reason. It follows the official JSON schema except where the
official TypeScript helpers write more: the `upsert` operation and extra header fields.

Also the JSON codec the package shares: compact encoding, and decoding that rejects `NaN`
and `Infinity` like the stream's JSON mode does.
"""

from __future__ import annotations

import enum
import json
import re
from typing import Any, Final

import attrs

OPERATIONS = ("insert", "update", "upsert", "delete")
CONTROLS = ("snapshot-start", "snapshot-end", "reset")
SETS = ("insert", "update", "upsert")  # the operations that carry a value
CHANGE_FIELDS = frozenset({"type", "key", "value", "old_value", "headers"})


class Absent(enum.Enum):
    """A missing `value`/`old_value`: JSON `null` is a real value, so None cannot say it."""

    ABSENT = "absent"

    def __repr__(self) -> str:
        return "ABSENT"


ABSENT: Final = Absent.ABSENT


@attrs.frozen
class Change:
    type: str
    key: str
    operation: str  # one of OPERATIONS
    value: Any = ABSENT  # parsed JSON, or ABSENT
    old_value: Any = ABSENT
    txid: str | None = None
    timestamp: str | None = None


@attrs.frozen
class Control:
    control: str  # one of CONTROLS
    offset: str | None = None


def classify(message: Any) -> Change | Control | None:
    """The change or control message `message` is, or None for anything else (never raises).
    A message with a usable `operation` is a change even if it also names a `control`, as the
    official TypeScript guards read it."""
    if not isinstance(message, dict):
        return None
    headers = message.get("headers")
    if not isinstance(headers, dict):
        return None
    operation = headers.get("operation")
    if isinstance(operation, str) and operation in OPERATIONS:
        type_, key = message.get("type"), message.get("key")
        if (
            isinstance(type_, str)
            and type_
            and isinstance(key, str)
            and key
            and (operation == "delete" or "value" in message)
        ):
            txid, timestamp = headers.get("txid"), headers.get("timestamp")
            return Change(
                type_,
                key,
                operation,
                message.get("value", ABSENT),
                message.get("old_value", ABSENT),
                txid if isinstance(txid, str) else None,
                timestamp if isinstance(timestamp, str) else None,
            )
    control = headers.get("control")
    if isinstance(control, str) and control in CONTROLS:
        offset = headers.get("offset")
        return Control(control, offset if isinstance(offset, str) else None)
    return None


# RFC 3339 `date-time`: the day is not checked against its month (2024-02-30 passes).
_DATE_TIME = re.compile(
    r"\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])"
    r"[Tt]([01]\d|2[0-3]):[0-5]\d:([0-5]\d|60)(\.\d+)?"
    r"([Zz]|[+-]([01]\d|2[0-3]):[0-5]\d)",
    re.ASCII,
)

_OPERATIONS_TEXT = ", ".join(OPERATIONS)
_CONTROLS_TEXT = ", ".join(CONTROLS)


def structural_error(message: Any) -> str | None:
    """None if `message` is a valid State Protocol message, else a short reason."""
    if not isinstance(message, dict):
        return "a message must be a JSON object"
    headers = message.get("headers")
    if not isinstance(headers, dict):
        return "headers must be an object"
    if ("operation" in headers) == ("control" in headers):
        return "headers must have exactly one of operation and control"
    if "control" in headers:
        return _control_error(message, headers)
    operation = headers["operation"]
    if not (isinstance(operation, str) and operation in OPERATIONS):
        return f"headers.operation must be one of {_OPERATIONS_TEXT}"
    for name in message:
        if name not in CHANGE_FIELDS:
            return f"unknown field {name!r}"
    for name in ("type", "key"):
        text = message.get(name)
        if not (isinstance(text, str) and text):
            return f"{name} must be a non-empty string"
    if operation != "delete" and "value" not in message:
        return f"value is required for {operation}"
    if "txid" in headers and not (isinstance(headers["txid"], str) and headers["txid"]):
        return "headers.txid must be a non-empty string"
    if "timestamp" in headers:
        timestamp = headers["timestamp"]
        if not (isinstance(timestamp, str) and _DATE_TIME.fullmatch(timestamp)):
            return "headers.timestamp must be an RFC 3339 date-time"
    return None


def _control_error(message: dict[Any, Any], headers: dict[Any, Any]) -> str | None:
    control = headers["control"]
    if not (isinstance(control, str) and control in CONTROLS):
        return f"headers.control must be one of {_CONTROLS_TEXT}"
    for name in message:
        if name != "headers":
            return f"unknown field {name!r}"
    if "offset" in headers and not isinstance(headers["offset"], str):
        return "headers.offset must be a string"
    return None


# ---- the JSON codec ----------------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_decoder = json.JSONDecoder(parse_constant=_reject_constant)
_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)
decode_json = _decoder.decode

# JSONEncoder.encode builds its C encoder anew on every call; the fold encodes once per write,
# so it keeps one (CPython's, when there is one: the same output, about 40% faster). Without
# the circular-reference check, which parsed JSON never needs (a cycle is a RecursionError).
_make_encoder: Any = getattr(json.encoder, "c_make_encoder", None)
_quote: Any = getattr(json.encoder, "c_encode_basestring", None)
if _make_encoder is not None and _quote is not None:
    _c_encode = _make_encoder(None, _encoder.default, _quote, None, ":", ",", False, False, False)

    def encode_json(value: Any) -> str:
        """Compact JSON, as stored. Raises ValueError for NaN/inf, TypeError for non-JSON."""
        return "".join(_c_encode(value, 0))

else:  # pragma: no cover - another Python

    def encode_json(value: Any) -> str:
        """Compact JSON, as stored. Raises ValueError for NaN/inf, TypeError for non-JSON."""
        return _encoder.encode(value)


def parse_stored(data: bytes | memoryview) -> list[Any]:
    """The messages in a record's stored data (`message,` items; b"" holds none), in one
    parse. Raises ValueError if `data` is not that (a damaged log, never client input)."""
    if not data:
        return []
    result: list[Any] = _decoder.decode("[" + str(data[:-1], "utf-8") + "]")
    return result
