"""The Yjs protocol's rules (upstream's YJS-PROTOCOL.md 1.0, docs/yjs.md): pure, no I/O.

A document `<service>/docs/<doc path>` under the Yjs base path is a handful of ordinary
streams under one reserved name prefix (`__ds/yjs/<service>/docs/<doc path>/`), which
`/v1/stream/` refuses, so only the Yjs routes reach them:

    .updates             its updates, lib0-framed, stored as clients sent them
    .index               a State Protocol stream (JSON): the current snapshot, the snapshot
                         streams that may exist, the named awareness streams
    .snapshots/<key>     one compacted snapshot: a single Yjs update
    .awareness/<name>    an awareness stream (a TTL: ephemeral)

Every segment of a document path is checked here, and none may start with a dot, so no
document's streams can collide with another's.
"""

from __future__ import annotations

import json
from urllib.parse import quote, urlencode

import attrs

from streams.protocol import offsets
from streams.protocol.errors import ProtocolError
from streams.protocol.names import RESERVED

PREFIX = f"{RESERVED}/yjs/"
SNAPSHOT = "snapshot"  # the discovery sentinel
SUFFIX = "_snapshot"
DISCOVERY_CACHE = "private, max-age=5"  # the spec's Cache-Control for the 307
MAX_SEGMENT_BYTES = 255
# lib0 reads lengths as JavaScript numbers: integers past 2**53 cannot be told apart.
MAX_VAR_UINT = 2**53 - 1

# The index's State Protocol entity types.
CURRENT = "current"  # key "snapshot": the snapshot discovery redirects to
STORED = "snapshot"  # key: a snapshot stream that may exist (removed once it is gone)
AWARENESS = "awareness"  # key: a named awareness stream created by PUT


def error(status: int, code: str, message: str) -> ProtocolError:
    """An error the Yjs routes answer as the spec's JSON (`{"error": {code, message}}`)."""
    return ProtocolError(status, code, message, code=code)


def invalid(message: str) -> ProtocolError:
    return error(400, "INVALID_REQUEST", message)


def error_body(code: str, message: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": message}}).encode()


# Codes of the ordinary stream errors, as the Yjs spec names them (section 10).
_CODES = {401: "UNAUTHORIZED", 403: "FORBIDDEN", 410: "OFFSET_EXPIRED", 429: "RATE_LIMITED"}


def yjs_code(failure: ProtocolError, missing: str) -> str:
    """The spec's code for an error of the streams underneath; `missing` is what a 404
    means here (DOCUMENT_NOT_FOUND, STREAM_NOT_FOUND, SNAPSHOT_NOT_FOUND)."""
    if failure.code in ("INVALID_REQUEST", "DOCUMENT_NOT_FOUND", "SNAPSHOT_NOT_FOUND"):
        return failure.code
    if failure.status == 404:
        return missing
    if failure.status == 400:
        return "INVALID_REQUEST"
    if failure.status >= 500:
        return failure.code or "INTERNAL_ERROR"
    return _CODES.get(failure.status, failure.code or "INVALID_REQUEST")


@attrs.frozen
class Document:
    """A document's address: its service and its path (which may hold slashes)."""

    service: str
    path: str

    @property
    def name(self) -> str:
        """What grants are checked against: the URL path after the base."""
        return f"{self.service}/docs/{self.path}"

    @property
    def base(self) -> str:
        return f"{PREFIX}{self.name}/"

    @property
    def updates(self) -> str:
        return self.base + ".updates"

    @property
    def index(self) -> str:
        return self.base + ".index"

    def snapshot(self, key: str) -> str:
        return f"{self.base}.snapshots/{key}"

    def awareness(self, name: str) -> str:
        return f"{self.base}.awareness/{name}"


def _segment_ok(segment: str) -> bool:
    return (
        bool(segment)
        and not segment.startswith(".")
        and "\x00" not in segment
        and len(segment.encode()) <= MAX_SEGMENT_BYTES
    )


def document(rest: bytes, max_name_bytes: int) -> Document:
    """The document a decoded path after the base names (`<service>/docs/<doc path>`);
    400 for a path with empty, `.`-leading (`.`, `..`) or over-long segments, or not UTF-8."""
    try:
        text = rest.decode("utf-8")
    except UnicodeDecodeError:
        raise invalid("document paths must be valid UTF-8") from None
    service, docs, path = text.partition("/docs/")
    if not docs or not path:
        raise invalid("expected <service>/docs/<document path>")
    segments = [service, *path.split("/")]
    if not all(_segment_ok(segment) for segment in segments):
        raise invalid("invalid document path: empty, '.' or '..' segments are not allowed")
    if len(rest) > max_name_bytes:
        raise invalid(f"document paths are at most {max_name_bytes} bytes")
    return Document(service, path)


def awareness_name(value: str) -> str:
    """An awareness stream's name (`?awareness=`): one non-empty segment, not `.`-leading."""
    if not _segment_ok(value) or "/" in value:
        raise invalid("awareness names are one path segment, not empty, not starting with '.'")
    return value


# ---- offsets ---------------------------------------------------------------------------------


def snapshot_key(covers: int) -> str:
    """The `<offset>_snapshot` token of a snapshot that holds every update before `covers`.

    Its offset names the last byte the snapshot covers, as upstream's does, so the offset
    clients continue from (`Stream-Next-Offset`, exactly `covers`) is the key's plus one:
    upstream's suite checks that relation.
    """
    if covers <= 0:
        raise ValueError("a snapshot covers at least one byte")
    return offsets.encode(covers - 1) + SUFFIX


def is_snapshot_key(token: str) -> bool:
    return token.endswith(SUFFIX)


def snapshot_covers(token: str) -> int | None:
    """Where the snapshot a `<offset>_snapshot` token names ends; None if no snapshot can
    have that name (the spec answers an invalid one as not found)."""
    try:
        position = offsets.decode(token.removesuffix(SUFFIX))
    except ProtocolError:
        return None
    return position + 1 if position < offsets.MAX else None


def redirect(path: str, query: list[tuple[str, str]], offset: str) -> str:
    """The 307's Location: the same path and query, with `offset` replaced."""
    kept = [(k, v) for k, v in query if k != "offset"] + [("offset", offset)]
    return f"{quote(path, safe='/%')}?{urlencode(kept, safe='-_')}"


# ---- lib0 framing ----------------------------------------------------------------------------


def write_var_uint(value: int) -> bytes:
    """lib0's `writeVarUint`: 7 bits a byte, low bits first, the high bit says more follow."""
    if value < 0:
        raise ValueError("negative")
    out = bytearray()
    while value > 0x7F:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    out.append(value)
    return bytes(out)


def frame(update: bytes) -> bytes:
    """lib0's `writeVarUint8Array`: the length, then the bytes."""
    return write_var_uint(len(update)) + update


def _read_var_uint(data: bytes, position: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if position >= len(data):
            raise invalid("malformed lib0 framing: a length runs past the end of the body")
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if value > MAX_VAR_UINT:
            raise invalid("malformed lib0 framing: a length is out of range")
        if byte < 0x80:
            return value, position


def unframe(data: bytes) -> list[bytes]:
    """The updates of a lib0-framed body (`readVarUint8Array` until the end); 400 unless
    the frames cover the body exactly."""
    updates: list[bytes] = []
    position = 0
    while position < len(data):
        length, position = _read_var_uint(data, position)
        end = position + length
        if end > len(data):
            raise invalid("malformed lib0 framing: an update runs past the end of the body")
        updates.append(data[position:end])
        position = end
    return updates


def check_framing(data: bytes) -> None:
    """A write's body: one or more lib0-framed updates, nothing else."""
    if not data:
        raise invalid("an update is required")
    unframe(data)


# ---- the index ---------------------------------------------------------------------------------


@attrs.frozen
class Pointer:
    """The current snapshot: its key and the offset of the updates after it."""

    key: str
    covers: int


def _change(type: str, key: str, value: object, operation: str = "upsert") -> dict[str, object]:
    message: dict[str, object] = {"type": type, "key": key, "headers": {"operation": operation}}
    if operation != "delete":
        message["value"] = value
    return message


def index_append(*changes: dict[str, object]) -> bytes:
    """One append of State Protocol change messages (a JSON array: committed at once)."""
    return json.dumps(list(changes), separators=(",", ":")).encode()


def stored(key: str) -> dict[str, object]:
    """Written before a snapshot stream is created: it may exist from then on."""
    return _change(STORED, key, {"key": key})


def unstored(key: str) -> dict[str, object]:
    """Written once a snapshot stream is gone."""
    return _change(STORED, key, None, "delete")


def current(pointer: Pointer) -> dict[str, object]:
    """Moves discovery to `pointer` (written once its snapshot stream is durable)."""
    return _change(CURRENT, SNAPSHOT, {"key": pointer.key, "covers": pointer.covers})


def awareness_entry(name: str) -> dict[str, object]:
    return _change(AWARENESS, name, {"name": name})


def pointer(value: object) -> Pointer | None:
    """The current snapshot from its index entity's value; None if it is not one."""
    if not isinstance(value, dict):
        return None
    key, covers = value.get("key"), value.get("covers")
    if not isinstance(key, str) or not isinstance(covers, int) or covers <= 0:
        return None
    return Pointer(key, covers)


# ---- compaction --------------------------------------------------------------------------------


def should_compact(tail: int, covers: int, failed_at: int, threshold: int) -> bool:
    """Whether the updates since the snapshot (`covers`), or since a compaction that failed
    at `failed_at` (retried only once as many bytes came again), reach `threshold`."""
    return tail - max(covers, failed_at) >= threshold
