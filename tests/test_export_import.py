"""`streams export` then `streams import` into an empty data directory gives back every
stream as it was: metadata, every byte at every record offset, producers' dedupe, Stream-Seq,
closure, forks (and forks of forks, one at a JSON sub-offset), soft deletion, State Protocol
views and validation. The file then exports again byte for byte."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from actors import messages as m
from actors.service import Fork, Streams
from actors.storage.files import FileStorage
from streams.__main__ import main
from streams.cli import export as export_module
from streams.protocol.errors import ProtocolError
from streams.protocol.headers import Producer
from streams.protocol.machine import AppendRequest, CreateRequest
from streams.protocol.offsets import Sentinel
from streams.protocol.records import StreamConfig
from tests.on_disk import served

OCTET = "application/octet-stream"
JSON = "application/json"
TEXT = "text/plain"
FAR = 4_000_000_000.0  # an Expires-At in 2096


def change(key: str, value: Any, operation: str = "insert") -> dict[str, Any]:
    return {"type": "todo", "key": key, "value": value, "headers": {"operation": operation}}


async def create(streams: Streams, name: str, config: StreamConfig, **options: Any) -> None:
    fork = options.pop("fork", None)
    reply = await streams.create(name, CreateRequest(config, **options), fork)
    assert reply.status == 201, reply


async def append(streams: Streams, name: str, body: bytes | list[Any], **options: Any) -> int:
    if isinstance(body, list):
        request = AppendRequest(JSON, json.dumps(body).encode(), **options)
    else:
        request = AppendRequest(options.pop("content_type", OCTET), body, **options)
    return (await streams.append(name, request)).status


async def build(streams: Streams) -> None:
    """Binary and JSON streams, producers (one that changed epoch), Stream-Seq, closed ones
    (by a producer, and at creation), TTL and Expires-At, a large record, forks of forks, a
    fork at a JSON sub-offset, a soft-deleted source, a State Protocol stream."""
    await create(streams, "bin", StreamConfig(OCTET, ttl=3600))
    for seq in range(4):
        await append(streams, "bin", bytes([seq]) * (seq + 1) * 37, producer=Producer("p", 1, seq))
    await append(streams, "bin", b"\x00\xff" * 700_000, stream_seq="005")  # a large record
    await append(streams, "bin", b"new epoch", producer=Producer("p", 2, 0), stream_seq="006")
    await append(streams, "bin", b"other", producer=Producer("q", 0, 0))

    first = [{"n": i, "s": "ünï\u2028"} for i in range(3)]
    await create(streams, "json", StreamConfig(JSON), body=json.dumps(first).encode())
    for seq in range(3):
        await append(streams, "json", [seq, {"f": 1.5e-7}, [seq]], producer=Producer("w", 0, seq))
    await append(streams, "json", [{"big": "x" * 5000}])

    await create(streams, "closed", StreamConfig(TEXT, expires_at=FAR))
    await append(streams, "closed", b"one", content_type=TEXT, producer=Producer("d", 0, 0))
    await append(
        streams, "closed", b"two", content_type=TEXT, producer=Producer("c", 5, 0), close=True
    )
    await create(streams, "born closed", StreamConfig(TEXT), closed=True, body=b"only")

    await create(streams, "fork", StreamConfig(""), fork=Fork("bin", 37 + 74))
    await append(streams, "fork", b"fork's own", producer=Producer("p", 0, 0))
    await create(streams, "fork/deep", StreamConfig(""), fork=Fork("fork", 37))  # inherited range
    await append(streams, "fork/deep", b"deeper")
    await create(streams, "fork/tail", StreamConfig(""), fork=Fork("fork"))
    await create(streams, "json-sub", StreamConfig(""), fork=Fork("json", 0, 4))  # mid-record
    await append(streams, "json-sub", ["after the sub-offset"])

    await create(streams, "doomed", StreamConfig(TEXT))
    await append(streams, "doomed", b"kept for its fork", content_type=TEXT)
    await create(streams, "orphan", StreamConfig(""), fork=Fork("doomed"))
    await append(streams, "orphan", b"!", content_type=TEXT)
    assert (await streams.delete("doomed")).status == 204  # soft: its fork reads it

    state = StreamConfig(JSON, state_validation="semantic", state_compaction=1 << 20)
    await create(streams, "state", state)
    await append(streams, "state", [change("a", 1), change("b", 2)])
    await append(streams, "state", [change("a", 3, "update"), change("b", None, "delete")])
    await create(streams, "state/fork", StreamConfig(""), fork=Fork("state"))
    await append(streams, "state/fork", [change("c", 4)])


NAMES = [
    "bin", "json", "closed", "born closed", "fork", "fork/deep", "fork/tail", "json-sub",
    "doomed", "orphan", "state", "state/fork",
]  # fmt: skip


async def picture(streams: Streams) -> dict[str, Any]:
    """Everything a client can observe of every stream, without changing any."""
    seen: dict[str, Any] = {}
    for name in NAMES:
        exported: m.Exported = await streams.registry.call(name, m.Export())
        snapshot = exported.snapshot
        deleted = snapshot.soft_deleted
        head: Any = "gone" if deleted else (await streams.head(name)).headers
        whole = await streams.read(name, Sentinel.START, 1 << 30, internal=deleted, ends=True)
        assert whole.end == snapshot.tail and whole.complete
        reads = {}
        for offset in [0, *whole.ends]:  # from every record boundary, across fork levels
            read = await streams.read(name, offset, 1 << 30, internal=deleted)
            reads[offset] = (read.data, read.end)
        state = None
        if snapshot.config.content_type == JSON and not deleted:  # any JSON stream has a view
            state = [e.message for e in (await streams.state_snapshot(name)).entities]
        entry = export_module.entry(name, exported)
        seen[name] = (head, entry, whole.ends, reads, state)
    return seen


def test_a_round_trip_gives_every_stream_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(export_module, "READ_BYTES", 100)  # records cross every read
    source, target, backup = tmp_path / "source", tmp_path / "target", tmp_path / "backup"
    served(FileStorage(source, durable=False), build)
    before = served(FileStorage(source, durable=False), picture)

    assert main(["export", "--data-dir", str(source), "-o", str(backup)]) == 0
    assert "exported 12 stream(s)" in capsys.readouterr().err
    assert main(["import", "--data-dir", str(target), str(backup)]) == 0
    assert "imported 12 stream(s)" in capsys.readouterr().err

    after = served(FileStorage(target, durable=False), picture)
    for name in NAMES:
        assert after[name] == before[name], name
    assert after["doomed"][0] == "gone"
    assert len(after["state/fork"][4]) == 2  # a, c: its source's view and its own
    assert after["json-sub"][1].fork_offset not in after["json"][2]  # inside a record

    again = tmp_path / "again"
    assert main(["export", "--data-dir", str(target), "-o", str(again)]) == 0
    assert again.read_bytes().split(b"\n")[1:] == backup.read_bytes().split(b"\n")[1:]

    served(FileStorage(target, durable=False), behaves_as_before)


async def behaves_as_before(streams: Streams) -> None:
    """Producers dedupe and fence, Stream-Seq must still increase, closure holds, and
    semantic validation checks against the imported view."""
    assert await append(streams, "bin", b"retry", producer=Producer("p", 2, 0)) == 204
    assert await append(streams, "bin", b"retry", producer=Producer("q", 0, 0)) == 204
    with pytest.raises(ProtocolError) as raised:
        await append(streams, "bin", b"x", producer=Producer("p", 1, 4))
    assert raised.value.code == "STALE_EPOCH"
    with pytest.raises(ProtocolError) as raised:
        await append(streams, "bin", b"x", stream_seq="006")
    assert raised.value.code == "SEQUENCE_REGRESSION"
    assert await append(streams, "bin", b"next", producer=Producer("p", 2, 1)) == 200
    assert await append(streams, "json", ["retry"], producer=Producer("w", 0, 2)) == 204
    assert await append(streams, "fork", b"retry", producer=Producer("p", 0, 0)) == 204
    closer = Producer("c", 5, 0)
    assert await append(streams, "closed", b"two", content_type=TEXT, producer=closer) == 204
    with pytest.raises(ProtocolError) as raised:
        await append(streams, "closed", b"x", content_type=TEXT, producer=Producer("d", 0, 1))
    assert raised.value.code == "STREAM_CLOSED"
    with pytest.raises(ProtocolError) as raised:
        await append(streams, "state", [change("a", 9)])
    assert raised.value.status == 409  # insert of an existing key
    with pytest.raises(ProtocolError) as raised:
        await streams.head("doomed")
    assert raised.value.status == 410
