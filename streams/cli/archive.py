"""The export format, version 1: JSON lines (UTF-8), specified in docs/operations.md ("CLI").

    {"format": "durable-streams-export", "version": 1, "exported_at": "<RFC 3339>"}
    {"stream": {<Entry>}}              per stream, sources before their forks
    {"data": "<base64>"}               per record of a binary stream, in order, or
    {"json": [<message>, ...]}         per record of a JSON stream: its messages
    {"end": {"streams": <count>}}      last: a file without it was cut short

A record line is the body of the append that recreates that record, so record boundaries,
and with them every offset, come back as they were. Only a stream's own records are written:
a fork's start in its source is its entry's `fork`, and its inherited data is its source's.
Reading checks everything (types, counts, order, the end line) before anything is imported.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

import attrs

from streams.protocol import jsonmode, names
from streams.protocol.errors import ProtocolError
from streams.protocol.headers import (
    STATE_VALIDATION_MODES,
    Producer,
    is_json,
    valid_content_type,
)

FORMAT = "durable-streams-export"
VERSION = 1


class FormatError(ValueError):
    """The file is not a complete export this version can read; nothing was imported."""


@attrs.frozen
class Entry:
    """One stream: what its creation takes, what its state holds besides the data (closure,
    Stream-Seq, producers, soft deletion), and what the import checks it against."""

    name: str
    content_type: str
    ttl: int | None = None
    expires_at: float | None = None  # Unix seconds
    fork_source: str | None = None
    fork_offset: int = 0  # a byte position: where the fork's own data starts
    state_validation: str | None = None
    state_compaction: int | None = None
    closed: bool = False
    closed_by: Producer | None = None
    stream_seq: str | None = None
    producers: dict[str, tuple[int, int]] = attrs.field(factory=dict)  # id -> (epoch, seq)
    deleted: bool = False  # soft-deleted: gone for clients, read by its forks
    tail: int = 0  # the next offset, as a byte position
    records: int = 0  # the record lines that follow

    @property
    def json(self) -> bool:
        return is_json(self.content_type)


def _dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def header(now: float) -> bytes:
    moment = datetime.fromtimestamp(now, tz=UTC).isoformat(timespec="seconds")
    exported_at = moment.replace("+00:00", "Z")
    return _dumps({"format": FORMAT, "version": VERSION, "exported_at": exported_at}) + b"\n"


def stream_line(entry: Entry) -> bytes:
    fork = None
    if entry.fork_source is not None:
        fork = {"source": entry.fork_source, "offset": entry.fork_offset}
    by = entry.closed_by
    doc = {
        "name": entry.name,
        "content_type": entry.content_type,
        "ttl": entry.ttl,
        "expires_at": entry.expires_at,
        "fork": fork,
        "state_validation": entry.state_validation,
        "state_compaction": entry.state_compaction,
        "closed": entry.closed,
        "closed_by": None if by is None else {"id": by.id, "epoch": by.epoch, "seq": by.seq},
        "stream_seq": entry.stream_seq,
        "producers": {p: {"epoch": e, "seq": s} for p, (e, s) in entry.producers.items()},
        "deleted": entry.deleted,
        "tail": entry.tail,
        "records": entry.records,
    }
    return _dumps({"stream": doc}) + b"\n"


def record_line(stored: bytes, json_stream: bool) -> bytes:
    """A record as stored: a JSON stream's `message,` items become the array of its
    messages (their bytes as stored), any other stream's data base64."""
    if json_stream:
        return b'{"json":' + jsonmode.as_array(stored) + b"}\n"
    return b'{"data":"' + base64.b64encode(stored) + b'"}\n'


def trailer(streams: int) -> bytes:
    return _dumps({"end": {"streams": streams}}) + b"\n"


# ---- reading ---------------------------------------------------------------------------


def read(lines: Iterable[bytes]) -> Iterator[Entry | bytes]:
    """Each stream's entry, then the append body of each of its records, checked against
    the format as they come; raises `FormatError` naming the line."""
    number = 0
    entry: Entry | None = None
    seen: set[str] = set()
    count = left = 0
    ended = False
    for number, line in enumerate(lines, 1):  # the last number names the end
        try:
            doc = json.loads(line)
        except (UnicodeError, ValueError) as error:
            raise FormatError(f"line {number}: not JSON ({error})") from None
        try:
            if number == 1:
                _check_header(doc)
                continue
            if ended:
                raise ValueError("nothing may follow the end line")
            if not isinstance(doc, dict) or len(doc) != 1:
                raise ValueError("expected one of stream, data, json, end")
            ((kind, value),) = doc.items()
            if kind in ("data", "json"):
                if entry is None or not left:
                    raise ValueError("a record beyond its stream's count")
                left -= 1
                yield _body(kind, value, entry)
                continue
            if entry is not None and left:
                raise ValueError(f"stream {entry.name!r} ends {left} record(s) short")
            if kind == "stream":
                entry = _entry(value, seen)
                seen.add(entry.name)
                count += 1
                left = entry.records
                yield entry
            elif kind == "end":
                if value != {"streams": count}:
                    raise ValueError(f"the end line should say {{'streams': {count}}}")
                ended = True
            else:
                raise ValueError(f"unknown line kind {kind!r}")
        except (ValueError, TypeError, KeyError) as error:
            raise FormatError(f"line {number}: {error}") from None
    if number == 0:
        raise FormatError("the file is empty")
    if not ended:
        raise FormatError(f"line {number}: no end line after it: the file was cut short")


def _check_header(doc: Any) -> None:
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ValueError(f"not a {FORMAT} file")
    version = doc.get("version")
    if version != VERSION:
        raise ValueError(f"format version {version!r}; this version reads {VERSION}")


def _body(kind: str, value: Any, entry: Entry) -> bytes:
    if kind == "json":
        if not entry.json:
            raise ValueError(f"a json record in {entry.content_type!r} stream {entry.name!r}")
        if not isinstance(value, list) or not value:
            raise ValueError("a json record is a non-empty array of messages")
        return _dumps(value)
    if entry.json:
        raise ValueError(f"a data record in JSON stream {entry.name!r}")
    if not isinstance(value, str):
        raise ValueError("a data record is a base64 string")
    try:
        data = base64.b64decode(value, validate=True)
    except binascii.Error as error:
        raise ValueError(f"a data record is not base64: {error}") from None
    if not data:
        raise ValueError("a data record is not empty")
    return data


def _entry(doc: Any, seen: set[str]) -> Entry:
    if not isinstance(doc, dict):
        raise ValueError("a stream is an object")
    name = _get(doc, "name", str)
    try:  # the rules of a request path's name (no length limit: that is a server setting)
        names.from_path(names.PREFIX.encode() + name.encode(), max_bytes=len(name) * 4)
    except (UnicodeError, ProtocolError) as error:
        raise ValueError(f"stream name {name!r}: {getattr(error, 'detail', error)}") from None
    if name in seen:
        raise ValueError(f"stream {name!r} is given twice")
    content_type = _get(doc, "content_type", str)
    if not valid_content_type(content_type):
        raise ValueError(f"invalid content type {content_type!r}")
    fork = _get(doc, "fork", dict, none=True)
    source, offset = None, 0
    if fork is not None:
        source, offset = _get(fork, "source", str), _count(fork, "offset")
        if source not in seen:
            raise ValueError(f"fork source {source!r} is not among the streams before it")
    validation = _get(doc, "state_validation", str, none=True)
    if validation is not None and validation not in STATE_VALIDATION_MODES:
        raise ValueError(f"unknown state_validation {validation!r}")
    compaction = _count(doc, "state_compaction", none=True)
    by = _get(doc, "closed_by", dict, none=True)
    producers = {
        key: (_count(value, "epoch"), _count(value, "seq"))
        for key, value in _get(doc, "producers", dict).items()
    }
    expires_at = _get(doc, "expires_at", (int, float), none=True)
    closed = _get(doc, "closed", bool)
    if by is not None and not closed:
        raise ValueError("closed_by names the closer of a closed stream")
    return Entry(
        name,
        content_type,
        _count(doc, "ttl", none=True),
        None if expires_at is None else float(expires_at),
        source,
        offset,
        validation,
        compaction,
        closed,
        None
        if by is None
        else Producer(_get(by, "id", str), _count(by, "epoch"), _count(by, "seq")),
        _get(doc, "stream_seq", str, none=True),
        producers,
        _get(doc, "deleted", bool),
        _count(doc, "tail"),
        _count(doc, "records"),
    )


def _producer(doc: Any) -> Producer:
    return Producer(_get(doc, "id", str), _count(doc, "epoch"), _count(doc, "seq"))


def _get(doc: Any, key: str, kind: type | tuple[type, ...], *, none: bool = False) -> Any:
    if not isinstance(doc, dict) or key not in doc:
        raise ValueError(f"{key} is missing")
    value = doc[key]
    if value is None and none:
        return None
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise ValueError(f"{key} has the wrong type: {value!r}"[:200])
    return value


def _count(doc: Any, key: str, *, none: bool = False) -> Any:
    value = _get(doc, key, int, none=none)
    if value is not None and value < 0:
        raise ValueError(f"{key} is negative")
    return value
