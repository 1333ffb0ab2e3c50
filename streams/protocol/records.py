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


Record = CreateRecord | AppendRecord | SoftDeleteRecord


def encode(record: Record) -> tuple[bytes, bytes]:
    """(metadata, data): metadata is a small CBOR map, data the raw stored bytes."""
    meta: dict[str, Any]
    match record:
        case CreateRecord():
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
    return cbor2.dumps(meta), record.data if not isinstance(record, SoftDeleteRecord) else b""


def decode(meta_bytes: bytes, data: bytes = b"") -> Record:
    """A record from its metadata; recovery leaves `data` out (it stays in the log).

    Older logs hold one size per JSON message under "sz"; it is ignored (a
    stream's message boundaries are its data's own commas)."""
    meta = cbor2.loads(meta_bytes)
    kind = meta["k"]
    if kind == "create":
        config = StreamConfig(
            meta["ct"], meta["ttl"], meta["exp"], meta["src"], meta["fo"], meta.get("fd", 0)
        )
        return CreateRecord(meta["name"], config, meta["id"], meta["t"], meta["closed"], data)
    if kind == "append":
        p = meta.get("p")
        return AppendRecord(
            meta["t"],
            data,
            Producer(p[0], p[1], p[2]) if p else None,
            meta.get("s"),
            meta.get("close", False),
        )
    if kind == "softdel":
        return SoftDeleteRecord(meta["t"])
    raise ValueError(f"unknown record kind {kind!r}")
