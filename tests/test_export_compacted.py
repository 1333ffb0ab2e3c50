"""Compacted State Protocol streams through `streams export` and `streams import`: the file
carries each one's base (its offset H and its view as of H) and its records after H, and the
import starts its log with a base record at H, so HEAD, every read at and after H, the 410 of
a read below H, snapshots, entity reads, producers, Stream-Seq, closure and expiry all come
back as they were, for forks of compacted streams and compacted forks too. A base line that
is malformed or does not fit its stream is refused before anything is written."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from actors import messages as m
from actors.registry import Registry
from actors.service import Fork, Streams
from actors.storage.files import FileStorage
from actors.storage.memory import MemoryStorage
from actors.view_budget import ViewLimits
from state.view import Entity, View, insert_message
from streams.__main__ import main
from streams.cli import export as export_module
from streams.config import Settings
from streams.http import StreamsHTTP
from streams.protocol import offsets
from streams.protocol.errors import ProtocolError
from streams.protocol.headers import Producer
from streams.protocol.machine import AppendRequest, CreateRequest
from streams.protocol.records import StreamConfig
from tests.asgi import request
from tests.on_disk import served

JSON = "application/json"
FAR = 4_000_000_000.0  # an Expires-At in 2096
NAMES = ["board", "board/fork", "board/compacting", "closed"]
# Headers that differ between two reads of one stream: the ETag names the stream's
# incarnation (an import renews it, as for any stream), the cursor is the time's.
VARYING = ("etag", "x-request-id", "stream-cursor")


def change(key: str, value: Any, operation: str = "upsert", **headers: str) -> dict[str, Any]:
    return {
        "type": "card",
        "key": key,
        "value": value,
        "headers": {"operation": operation, **headers},
    }


async def append(streams: Streams, name: str, messages: list[Any], **options: Any) -> str:
    reply = await streams.append(
        name, AppendRequest(JSON, json.dumps(messages).encode(), **options)
    )
    assert reply.status in (200, 204), reply
    return reply.headers["Stream-Next-Offset"]


async def base_of(streams: Streams, name: str) -> int:
    return (await streams.registry.call(name, m.Describe())).base


async def until_compacted(streams: Streams, name: str, write: Callable[[int], Any]) -> int:
    """Appends (`write(0)`, `write(1)`, ...) until the stream is compacted, then a few more
    after its base; returns the next number."""
    i = 0
    while not await base_of(streams, name):
        assert i < 300, f"{name} did not compact"
        await write(i)
        i += 1
    for more in range(i, i + 4):
        await write(more)
    return i + 4


async def build(streams: Streams) -> None:
    """A compacted stream (semantic validation, TTL, a producer, Stream-Seq, txids and
    timestamps, deletes) with a fork inside its records after H and a fork that compacted
    itself; a closed compacted stream with producers, its view with skipped messages."""
    config = StreamConfig(JSON, ttl=3600, state_validation="semantic", state_compaction=600)
    assert (await streams.create("board", CreateRequest(config))).status == 201

    async def board(i: int) -> None:
        stamps = {"txid": f"t{i}"} if i % 2 else {"timestamp": f"2025-01-01T00:00:{i % 60:02}Z"}
        messages = [change(f"k{i % 5}", {"rev": i, "s": "ünï\u2028", "f": 1.5e-7}, **stamps)]
        if i % 7 == 6:
            messages.append(change(f"k{(i + 1) % 5}", None, "delete"))
        seq = f"{i:06}"
        await append(streams, "board", messages, producer=Producer("p", 1, i), stream_seq=seq)

    next_board = await until_compacted(streams, "board", board)
    base = await base_of(streams, "board")
    after = await streams.read("board", base, 1 << 30, ends=True)
    fork = Fork("board", after.ends[1])  # a record boundary after H
    assert (await streams.create("board/fork", CreateRequest(StreamConfig("")), fork)).status == 201
    await append(streams, "board/fork", [change("f", 1, "insert")], producer=Producer("p", 0, 0))
    compacting = CreateRequest(StreamConfig("", state_compaction=300))
    assert (await streams.create("board/compacting", compacting, Fork("board"))).status == 201

    async def own(i: int) -> None:
        await append(streams, "board/compacting", [change(f"c{i % 3}", i)])

    await until_compacted(streams, "board/compacting", own)
    assert await base_of(streams, "board/compacting") > after.end  # past its fork offset
    await board(next_board)  # the source goes on after its forks

    closed = StreamConfig(JSON, expires_at=FAR, state_compaction=500)
    assert (await streams.create("closed", CreateRequest(closed))).status == 201

    async def note(i: int) -> None:
        messages = [change(f"n{i % 4}", i), "not a change", {"headers": {"control": "reset"}}][
            : 1 + (i % 3 == 0) + (i == 5)
        ]
        await append(streams, "closed", messages, producer=Producer("q", 0, i))

    await until_compacted(streams, "closed", note)
    await append(streams, "closed", [change("last", 1)], producer=Producer("r", 3, 0), close=True)


async def picture(streams: Streams) -> dict[str, Any]:
    """What the service and HTTP show of every stream, without changing any."""
    app = StreamsHTTP(streams, Settings(storage_mode="memory"))
    seen: dict[str, Any] = {}
    for name in NAMES:
        exported: m.Exported = await streams.registry.call(name, m.Export())
        snapshot = await streams.state_snapshot(name)
        with pytest.raises(ProtocolError) as below:
            await streams.read(name, 0, 1 << 30)
        start = offsets.decode(below.value.headers["Stream-State-Base"])
        whole = await streams.read(name, start, 1 << 30, ends=True)
        assert whole.end == exported.snapshot.tail
        asked = [("HEAD", "")]  # then reads: snapshots, below H, every record boundary after
        for query in ("", "offset=-1", "offset=-1&state=snapshot", "state=snapshot&type=card"):
            asked.append(("GET", query))
        for position in [0, start - 1, start, *whole.ends]:
            asked.append(("GET", f"offset={offsets.encode(position)}"))
        for message in [e.message for e in snapshot.entities] + [b'{"type":"card","key":"x"}']:
            row = json.loads(message)
            asked.append(("GET", f"state=entity&type={row['type']}&key={row['key']}"))
        http = []
        for method, query in asked:
            response = await request(app, method, name, query=query)
            headers = response.headers.items()
            kept = {k: v for k, v in headers if k not in VARYING}
            http.append((method, query, response.status, kept, response.body))
        rows = (snapshot.offset, snapshot.base, snapshot.skipped, snapshot.entities)
        seen[name] = (export_module.entry(name, exported), rows, whole.ends, http)
    return seen


def test_compacted_streams_and_their_forks_round_trip(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, target, backup = tmp_path / "source", tmp_path / "target", tmp_path / "backup"
    served(FileStorage(source, durable=False), build)
    before = served(FileStorage(source, durable=False), picture)
    assert before["board"][0].base and before["closed"][0].base
    assert before["board/compacting"][0].base > before["board/compacting"][0].fork_offset
    assert before["closed"][1][2] > 0  # skipped messages, as of its base and after
    assert before["closed"][0].closed_by == Producer("r", 3, 0)

    assert main(["export", "--data-dir", str(source), "-o", str(backup)]) == 0
    assert "exported 4 stream(s)" in capsys.readouterr().err
    lines = [json.loads(line) for line in backup.read_bytes().splitlines()]
    assert lines[0]["version"] == 2
    bases = [line["base"] for line in lines if "base" in line]
    assert [b["offset"] for b in bases] == [
        before[n][0].base for n in ("board", "closed", "board/compacting")
    ]
    assert main(["import", "--data-dir", str(target), str(backup)]) == 0
    assert "imported 4 stream(s)" in capsys.readouterr().err

    after = served(FileStorage(target, durable=False), picture)
    for name in NAMES:
        assert after[name] == before[name], name

    again = tmp_path / "again"
    assert main(["export", "--data-dir", str(target), "-o", str(again)]) == 0
    assert again.read_bytes().split(b"\n")[1:] == backup.read_bytes().split(b"\n")[1:]
    served(FileStorage(target, durable=False), behaves_as_before)


async def behaves_as_before(streams: Streams) -> None:
    """Producers dedupe, Stream-Seq must increase, closure holds, semantic validation
    checks against the imported base and what followed it, and compaction goes on."""
    exported: m.Exported = await streams.registry.call("board", m.Export())
    epoch, seq = exported.producers["p"]
    retry = AppendRequest(JSON, b"[]", producer=Producer("p", epoch, seq))
    assert (await streams.append("board", retry)).status == 204  # a duplicate
    with pytest.raises(ProtocolError) as raised:
        await append(streams, "board", [change("k0", 0)], stream_seq=exported.stream_seq)
    assert raised.value.code == "SEQUENCE_REGRESSION"
    with pytest.raises(ProtocolError) as raised:
        await append(streams, "board", [change("k1", 0, "insert")])  # k1 exists
    assert raised.value.status == 409
    closer = Producer("r", 3, 0)
    reply = await streams.append("closed", AppendRequest(JSON, b"[1]", producer=closer, close=True))
    assert reply.status == 204
    with pytest.raises(ProtocolError) as raised:
        await append(streams, "closed", [1], producer=Producer("q", 9, 0))
    assert raised.value.code == "STREAM_CLOSED"
    base = await base_of(streams, "board/compacting")
    for i in range(100):
        await append(streams, "board/compacting", [change(f"c{i % 3}", -i)])
        if await base_of(streams, "board/compacting") > base:
            break
    assert await base_of(streams, "board/compacting") > base


async def small(streams: Streams) -> None:
    """A compacted stream with a few entities, and a text stream."""
    config = StreamConfig(JSON, state_compaction=300)
    assert (await streams.create("c", CreateRequest(config))).status == 201

    async def write(i: int) -> None:
        await append(streams, "c", [change(f"k{i % 3}", i, txid=f"t{i}")])

    await until_compacted(streams, "c", write)
    text = CreateRequest(StreamConfig("text/plain"), body=b"t")
    assert (await streams.create("t", text)).status == 201


@pytest.fixture(scope="module")
def exported_lines(tmp_path_factory: pytest.TempPathFactory) -> list[Any]:
    """The export of `small`, each line parsed."""
    root = tmp_path_factory.mktemp("small")
    served(FileStorage(root / "data", durable=False), small)
    assert main(["export", "--data-dir", str(root / "data"), "-o", str(root / "backup")]) == 0
    return [json.loads(line) for line in (root / "backup").read_bytes().splitlines()]


def kind(lines: list[Any], name: str) -> int:
    """The index of the first line of `name`'s kind."""
    return next(i for i, line in enumerate(lines) if name in line)


def edited(line: str, **fields: Any) -> Callable[[list[Any]], list[Any]]:
    """The file with the first `line` line's fields changed."""

    def edit(lines: list[Any]) -> list[Any]:
        i = kind(lines, line)
        return [*lines[:i], {line: {**lines[i][line], **fields}}, *lines[i + 1 :]]

    return edit


def moved_after_a_record(lines: list[Any]) -> list[Any]:
    base, record = kind(lines, "base"), kind(lines, "json")
    return [*lines[:base], *lines[record : record + 1], *lines[base:record], *lines[record + 1 :]]


def twice(lines: list[Any]) -> list[Any]:
    lines = edited("base", entities=lines[kind(lines, "base")]["base"]["entities"] + 1)(lines)
    entity = kind(lines, "entity")
    return [*lines[: entity + 1], *lines[entity:]]


def on_the_text_stream(lines: list[Any]) -> list[Any]:
    text = next(i for i, line in enumerate(lines) if line.get("stream", {}).get("name") == "t")
    base = {"base": {"offset": 1, "skipped": 0, "entities": 0}}
    return [*lines[: text + 1], base, *lines[text + 1 :]]


def without_value(lines: list[Any]) -> list[Any]:
    i = kind(lines, "entity")
    row = {k: v for k, v in lines[i]["entity"].items() if k != "value"}
    return [*lines[:i], {"entity": row}, *lines[i + 1 :]]


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda lines: [{**lines[0], "version": 1}, *lines[1:]],
         "line 3: a base line in a version 1 file"),
        (moved_after_a_record, "a base line comes right after its stream's line"),
        (edited("base", offset=10**9), "the base offset 1000000000 of stream 'c' is not within"),
        (edited("base", offset=0), "the base offset 0 of stream 'c' is not within its own range"),
        (edited("base", offset="1"), "line 3: offset has the wrong type: '1'"),
        (lambda lines: [lines[i] for i in range(len(lines)) if i != kind(lines, "base")],
         "line 3: an entity beyond its base's count"),
        (edited("base", entities=10), "the base of 'c' ends 7 entit(ies) short"),
        (twice, "is given twice"),
        (edited("entity", offset=10**9), "entity offset 1000000000 is not within its base"),
        (edited("entity", key=""), "line 4: an entity's type and key are not empty"),
        (edited("entity", value=math.nan), "line 4: an entity's value is not JSON"),
        (without_value, "line 4: value is missing"),
        (edited("stream", state_compaction=None),
         "a base for stream 'c', which is not a compacting JSON stream"),
        (on_the_text_stream, "a base for stream 't', which is not a compacting JSON stream"),
    ],
)  # fmt: skip
def test_a_bad_base_imports_nothing(
    tmp_path: Path,
    exported_lines: list[Any],
    damage: Callable[[list[Any]], list[Any]],
    message: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    backup, target = tmp_path / "backup", tmp_path / "target"
    lines = damage(exported_lines)
    backup.write_bytes(b"".join(json.dumps(line).encode() + b"\n" for line in lines))
    assert main(["import", "--data-dir", str(target), str(backup)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"streams: {backup}: line ")
    assert message in err
    assert err.endswith("; nothing was imported\n") and err.count("\n") == 1
    assert not target.exists()


def test_a_version_1_file_still_imports(
    tmp_path: Path, exported_lines: list[Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """Version 2 only added base lines: a file without them reads as version 1 too."""
    text = next(
        i for i, line in enumerate(exported_lines) if line.get("stream", {}).get("name") == "t"
    )
    lines = [{**exported_lines[0], "version": 1}, *exported_lines[text:]]
    lines[-1] = {"end": {"streams": 1}}
    backup, target = tmp_path / "backup", tmp_path / "target"
    backup.write_bytes(b"".join(json.dumps(line).encode() + b"\n" for line in lines))
    assert main(["import", "--data-dir", str(target), str(backup)]) == 0
    assert "imported 1 stream(s)" in capsys.readouterr().err

    async def read(streams: Streams) -> bytes:
        return (await streams.read("t", 0, 100)).data

    assert served(FileStorage(target, durable=False), read) == b"t"


def a_view(offset: int, *keys: str) -> View:
    view = View(sys.maxsize, sys.maxsize, offset)
    for key in keys:
        view.put("card", key, Entity(insert_message("card", key, 1, None, None), offset))
    return view


async def test_the_actor_refuses_a_base_it_could_not_have_written() -> None:
    """Past this server's view bounds (507), before the stream's own data or with a body
    (400): refused with nothing written."""
    async with trio.open_nursery() as nursery:
        registry = Registry(MemoryStorage(), view_limits=ViewLimits(max_entities=1))
        await nursery.start(registry.run)
        streams = Streams(registry)
        compacting = StreamConfig(JSON, state_compaction=100)
        await streams.create("source", CreateRequest(compacting, body=b"[1, 2, 3]"))
        refused = [
            ("big", CreateRequest(compacting), None, a_view(10, "a", "b"), 507),
            ("bodied", CreateRequest(compacting, body=b"[1]"), None, a_view(10), 400),
            ("at-0", CreateRequest(compacting), None, a_view(0), 400),
            (
                "fork",
                CreateRequest(StreamConfig("", state_compaction=9)),
                Fork("source"),
                a_view(3),
                400,
            ),
        ]
        for name, create, fork, view, status in refused:
            with pytest.raises(ProtocolError) as raised:
                await streams.create(name, create, fork, view)
            assert raised.value.status == status, name
            assert name not in await registry.storage.names()
        assert (
            await streams.create("ok", CreateRequest(compacting), None, a_view(10, "a"))
        ).status == 201
        assert (await streams.head("ok")).headers["Stream-State-Base"] == offsets.encode(10)
        entities = (await streams.state_snapshot("ok")).entities
        assert [(e.message, e.offset) for e in entities] == [
            (insert_message("card", "a", 1, None, None), 10)
        ]
        nursery.cancel_scope.cancel()
