"""The export format, version 2: JSON lines (UTF-8), specified in docs/operations.md ("CLI").

    {"format": "durable-streams-export", "version": 2, "exported_at": "<RFC 3339>"}
    {"stream": {<Entry>}}              per stream, sources before their forks
    {"base": {"offset": H, ...}}       a compacted stream's: right after its stream line,
    {"entity": {<type, key, value>}}   then its view as of H, one line per entity
    {"data": "<base64>"}               per record of a binary stream, in order, or
    {"json": [<message>, ...]}         per record of a JSON stream: its messages
    {"end": {"streams": <count>}}      last: a file without it was cut short

A record line is the body of the append that recreates that record, so record boundaries,
and with them every offset, come back as they were. Only a stream's own records are written:
a fork's start in its source is its entry's `fork`, and its inherited data is its source's;
a compacted stream's records start at its base, whose view stands for the history before it.
Version 1 is version 2 without base lines; both are read. Reading checks everything (types,
counts, order, the end line) before anything is imported.
"""

from __future__ import annotations

import base64
import binascii
import json
import sys
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

import attrs

from state.view import Entity, View, insert_message
from streams.protocol import jsonmode, names
from streams.protocol.errors import ProtocolError
from streams.protocol.headers import (
    STATE_VALIDATION_MODES,
    Producer,
    is_json,
    valid_content_type,
)

FORMAT = "durable-streams-export"
VERSION = 2
READS = (1, 2)


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
    base: int = 0  # compacted: where its log starts (its base line says; 0: not compacted)

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


def base_lines(view: View) -> Iterator[bytes]:
    """A compacted stream's base: its offset, then each entity of the view as of it, in
    the view's order (of last write), as JSON: what a snapshot shows of it, and its offset."""
    base = {"offset": view.offset, "skipped": view.skipped, "entities": len(view)}
    yield _dumps({"base": base}) + b"\n"
    for (type_, key), entity in view.entities.items():
        doc = {
            "type": type_,
            "key": key,
            "value": entity.value(),
            "offset": entity.offset,
            "txid": entity.txid,
            "timestamp": entity.timestamp,
        }
        yield _dumps({"entity": doc}) + b"\n"


def trailer(streams: int) -> bytes:
    return _dumps({"end": {"streams": streams}}) + b"\n"


# ---- reading ---------------------------------------------------------------------------


def read(lines: Iterable[bytes]) -> Iterator[Entry | View | bytes]:
    """Each stream's entry, then a compacted stream's base view, then the append body of
    each of its records, checked against the format as they come; raises `FormatError`
    naming the line."""
    number = version = 0
    entry: Entry | None = None
    held: Entry | None = None  # yielded once the next line says whether a base follows
    base: View | None = None  # while its entity lines come
    seen: set[str] = set()
    count = left = entities = 0
    ended = False
    for number, line in enumerate(lines, 1):  # the last number names the end
        try:
            doc = json.loads(line)
        except (UnicodeError, ValueError) as error:
            raise FormatError(f"line {number}: not JSON ({error})") from None
        try:
            if number == 1:
                version = _check_header(doc)
                continue
            if ended:
                raise ValueError("nothing may follow the end line")
            if not isinstance(doc, dict) or len(doc) != 1:
                raise ValueError("expected one of stream, base, entity, data, json, end")
            ((kind, value),) = doc.items()
            if kind == "base":
                if held is None:
                    raise ValueError("a base line comes right after its stream's line")
                if version < 2:
                    raise ValueError("a base line in a version 1 file")
                base, entities = _base(value, held)
                yield attrs.evolve(held, base=base.offset)
                held = None
            elif held is not None:
                yield held
                held = None
            if kind == "entity":
                if base is None or not entities:
                    raise ValueError("an entity beyond its base's count")
                _entity(value, base)
                entities -= 1
            if base is not None and not entities:
                yield base
                base = None
            if kind in ("base", "entity"):
                continue
            if base is not None:
                assert entry is not None  # a base follows its stream line
                raise ValueError(f"the base of {entry.name!r} ends {entities} entit(ies) short")
            if kind in ("data", "json"):
                if entry is None or not left:
                    raise ValueError("a record beyond its stream's count")
                left -= 1
                yield _body(kind, value, entry)
                continue
            if entry is not None and left:
                raise ValueError(f"stream {entry.name!r} ends {left} record(s) short")
            if kind == "stream":
                entry = held = _entry(value, seen)
                seen.add(entry.name)
                count += 1
                left = entry.records
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


def _check_header(doc: Any) -> int:
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ValueError(f"not a {FORMAT} file")
    version = doc.get("version")
    if version not in READS or isinstance(version, bool):
        raise ValueError(f"format version {version!r}; this version reads 1 and 2")
    return int(version)


def _base(doc: Any, entry: Entry) -> tuple[View, int]:
    """An empty view at the base's offset, and how many entity lines fill it."""
    offset, skipped, entities = (_count(doc, key) for key in ("offset", "skipped", "entities"))
    name = entry.name
    if not entry.json or entry.state_compaction is None:
        raise ValueError(f"a base for stream {name!r}, which is not a compacting JSON stream")
    if not 0 < offset <= entry.tail or offset < entry.fork_offset:
        raise ValueError(
            f"the base offset {offset} of stream {name!r} is not within its own range "
            f"({max(1, entry.fork_offset)} to its tail {entry.tail})"
        )
    view = View(sys.maxsize, sys.maxsize, offset, skipped)  # the server's bounds: at import
    return view, entities


def _entity(doc: Any, view: View) -> None:
    type_, key = _get(doc, "type", str), _get(doc, "key", str)
    if not (type_ and key):
        raise ValueError("an entity's type and key are not empty")
    if (type_, key) in view.entities:
        raise ValueError(f"entity {type_!r}/{key!r} is given twice"[:200])
    offset = _count(doc, "offset")
    if not 0 < offset <= view.offset:
        raise ValueError(f"entity offset {offset} is not within its base (1 to {view.offset})")
    txid, timestamp = _get(doc, "txid", str, none=True), _get(doc, "timestamp", str, none=True)
    if "value" not in doc:
        raise ValueError("value is missing")
    try:
        message = insert_message(type_, key, doc["value"], txid, timestamp)
    except (ValueError, TypeError, RecursionError) as error:
        raise ValueError(f"an entity's value is not JSON: {error}") from None
    view.put(type_, key, Entity(message, offset, txid, timestamp))


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
