"""The records a stream's log holds, and their CBOR encoding.

Every change to a stream is one record, and a stream's state is a fold over its records
(see `streams.protocol.machine`). Data, producer state, Stream-Seq and closure travel in the same
record, so they are committed together or not at all.
"""

from __future__ import annotations

from typing import Any

import attrs
import cbor2

from streams.protocol.headers import Producer


@attrs.frozen
class StreamConfig:
    """What idempotent creation compares, plus where a fork's own data starts."""

    content_type: str
    ttl: int | None = None
    expires_at: float | None = None
    fork_source: str | None = None
    fork_offset: int = 0
    fork_depth: int = 0  # 0 unless a fork; a fork's is its source's + 1
    # State Protocol extensions (docs/state.md): "structural" or "semantic" checks of every
    # append, and the log size past which the stream is compacted (None: off).
    state_validation: str | None = None
    state_compaction: int | None = None


@attrs.frozen
class CreateRecord:
    name: str
    config: StreamConfig
    incarnation: str
    at: float
    closed: bool = False
    data: bytes = b""


@attrs.frozen
class AppendRecord:
    at: float
    data: bytes = b""
    producer: Producer | None = None
    stream_seq: str | None = None
    close: bool = False


@attrs.frozen
class SoftDeleteRecord:
    at: float


@attrs.frozen
class BaseRecord:
    """The first record of a compacted log (docs/state.md): the stream as of offset `base`,
    everything a reader and a writer need but the data before it. Its own data is not stream
    data: it is the State Protocol view as of `base` (`state.checkpoint`)."""

    create: CreateRecord  # without data
    base: int
    last_access: float
    closed_by: Producer | None = None
    stream_seq: str | None = None
    producers: dict[str, tuple[int, int]] = attrs.field(factory=dict)
    data: bytes = b""


Record = CreateRecord | AppendRecord | SoftDeleteRecord | BaseRecord


def _create_meta(record: CreateRecord) -> dict[str, Any]:
    c = record.config
    meta = {
        "k": "create",
        "name": record.name,
        "ct": c.content_type,
        "ttl": c.ttl,
        "exp": c.expires_at,
        "src": c.fork_source,
        "fo": c.fork_offset,
        "id": record.incarnation,
        "t": record.at,
        "closed": record.closed,
    }
    if c.fork_depth:
        meta["fd"] = c.fork_depth
    if c.state_validation is not None:
        meta["sv"] = c.state_validation
    if c.state_compaction is not None:
        meta["sc"] = c.state_compaction
    return meta


def _create(meta: dict[str, Any], data: bytes = b"") -> CreateRecord:
    config = StreamConfig(
        meta["ct"],
        meta["ttl"],
        meta["exp"],
        meta["src"],
        meta["fo"],
        meta.get("fd", 0),
        meta.get("sv"),
        meta.get("sc"),
    )
    return CreateRecord(meta["name"], config, meta["id"], meta["t"], meta["closed"], data)


def _producer(p: list[Any] | None) -> Producer | None:
    return Producer(p[0], p[1], p[2]) if p else None


def encode(record: Record) -> tuple[bytes, bytes]:
    """(metadata, data): metadata is a small CBOR map, data the raw stored bytes."""
    meta: dict[str, Any]
    match record:
        case CreateRecord():
            meta = _create_meta(record)
        case BaseRecord():
            # The create fields as a create record has them: expiry scans read them alike.
            meta = _create_meta(record.create) | {"k": "base", "h": record.base}
            by = record.closed_by
            meta["last"] = record.last_access
            meta["by"] = None if by is None else [by.id, by.epoch, by.seq]
            meta["s"] = record.stream_seq
            meta["producers"] = {key: list(value) for key, value in record.producers.items()}
        case AppendRecord():
            meta = {"k": "append", "t": record.at}
            if record.producer is not None:
                p = record.producer
                meta["p"] = [p.id, p.epoch, p.seq]
            if record.stream_seq is not None:
                meta["s"] = record.stream_seq
            if record.close:
                meta["close"] = True
        case SoftDeleteRecord():
            meta = {"k": "softdel", "t": record.at}
    return cbor2.dumps(meta), b"" if isinstance(record, SoftDeleteRecord) else record.data


def decode(meta_bytes: bytes, data: bytes = b"") -> Record:
    """A record from its metadata; recovery leaves `data` out (it stays in the log).

    Older logs hold one size per JSON message under "sz"; it is ignored (a
    stream's message boundaries are its data's own commas)."""
    meta = cbor2.loads(meta_bytes)
    kind = meta["k"]
    if kind == "create":
        return _create(meta, data)
    if kind == "base":
        producers = {key: (value[0], value[1]) for key, value in meta["producers"].items()}
        return BaseRecord(
            _create(meta),
            meta["h"],
            meta["last"],
            _producer(meta["by"]),
            meta["s"],
            producers,
            data,
        )
    if kind == "append":
        p = meta.get("p")
        return AppendRecord(
            meta["t"],
            data,
            _producer(p),
            meta.get("s"),
            meta.get("close", False),
        )
    if kind == "softdel":
        return SoftDeleteRecord(meta["t"])
    raise ValueError(f"unknown record kind {kind!r}")
