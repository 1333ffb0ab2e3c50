"""State Protocol views as stream actors keep them (docs/state.md): built on first use, kept
current by commits, checkpointed, bounded; validation; compaction and what survives it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio

from actors import messages as m
from actors import views as views_module
from actors.registry import Registry
from actors.service import Fork, Streams
from actors.storage import Storage
from actors.storage.file_log import VIEW_SUFFIX
from actors.storage.files import FileStorage
from actors.storage.memory import MemoryStorage
from actors.view_budget import ViewLimits
from state.view import View
from streams.protocol import offsets
from streams.protocol.errors import ProtocolError
from streams.protocol.headers import Producer
from streams.protocol.machine import AppendRequest, CreateRequest
from streams.protocol.offsets import Sentinel
from streams.protocol.records import StreamConfig
from tests.on_disk import started

JSON = "application/json"


def change(key: str, value: Any, operation: str = "upsert", kind: str = "todo") -> dict[str, Any]:
    return {"type": kind, "key": key, "value": value, "headers": {"operation": operation}}


async def create(streams: Streams, name: str, **config: Any) -> None:
    await streams.create(name, CreateRequest(StreamConfig(JSON, **config)))


async def append(streams: Streams, name: str, *messages: Any, **options: Any) -> str:
    reply = await streams.append(
        name, AppendRequest(JSON, json.dumps(list(messages)).encode(), **options)
    )
    return reply.headers["Stream-Next-Offset"]


async def rows(streams: Streams, name: str) -> dict[tuple[str, str], Any]:
    read = await streams.state_snapshot(name)
    return {
        (json.loads(e.message)["type"], json.loads(e.message)["key"]): e.value()
        for e in read.entities
    }


async def test_a_view_is_the_fold_of_the_stream_and_follows_every_commit() -> None:
    async with trio.open_nursery() as nursery:
        streams = Streams(await started(MemoryStorage(), nursery))
        await create(streams, "s")
        await append(streams, "s", change("a", 1), change("b", 2), {"not": "state"}, 42)
        assert await rows(streams, "s") == {("todo", "a"): 1, ("todo", "b"): 2}
        tail = await append(streams, "s", change("a", None, "update"), change("b", 0, "delete"))
        read = await streams.state_snapshot("s")
        assert read.offset == offsets.decode(tail)
        assert [e.value() for e in read.entities] == [None]  # null is a value
        await append(streams, "s", {"headers": {"control": "reset"}}, change("c", 3, "insert"))
        assert await rows(streams, "s") == {("todo", "c"): 3}
        nursery.cancel_scope.cancel()


async def test_a_snapshot_is_one_offset_whatever_commits_after_it() -> None:
    async with trio.open_nursery() as nursery:
        streams = Streams(await started(MemoryStorage(), nursery))
        await create(streams, "s")
        await append(streams, "s", *(change(f"k{i}", i) for i in range(100)))
        pinned = await streams.state_snapshot("s")
        await append(
            streams,
            "s",
            *(change(f"k{i}", -i) for i in range(100)),
            {"headers": {"control": "reset"}},
        )
        assert [e.value() for e in pinned.entities] == list(range(100))
        assert await rows(streams, "s") == {}
        nursery.cancel_scope.cancel()


async def test_entities_are_ordered_by_their_last_write_and_filtered_by_type() -> None:
    async with trio.open_nursery() as nursery:
        streams = Streams(await started(MemoryStorage(), nursery))
        await create(streams, "s")
        await append(streams, "s", change("a", 1), change("b", 1, kind="user"), change("c", 1))
        await append(streams, "s", change("a", 2))
        read = await streams.state_snapshot("s")
        assert [json.loads(e.message)["key"] for e in read.entities] == ["b", "c", "a"]
        todos = await streams.state_snapshot("s", frozenset({"todo"}))
        assert [json.loads(e.message)["key"] for e in todos.entities] == ["c", "a"]
        one = await streams.state_entity("s", "user", "b")
        assert [e.value() for e in one.entities] == [1]
        assert (await streams.state_entity("s", "user", "a")).entities == []
        nursery.cancel_scope.cancel()


async def test_a_binary_stream_has_no_view() -> None:
    async with trio.open_nursery() as nursery:
        streams = Streams(await started(MemoryStorage(), nursery))
        await streams.create("b", CreateRequest(StreamConfig("application/octet-stream")))
        with pytest.raises(ProtocolError) as raised:
            await streams.state_snapshot("b")
        assert raised.value.code == "STATE_NOT_JSON"
        nursery.cancel_scope.cancel()


async def test_a_fork_s_view_holds_its_inherited_state(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(views_module, "FOLD_CHUNK", 64)  # several chunks, cut at the fork
    async with trio.open_nursery() as nursery:
        streams = Streams(await started(MemoryStorage(), nursery))
        await create(streams, "src")
        ends = [
            offsets.decode(await append(streams, "src", change(f"k{i % 3}", i))) for i in range(9)
        ]
        await streams.create("f", CreateRequest(StreamConfig("")), Fork("src", ends[5]))
        own = offsets.decode(await append(streams, "f", change("k0", "own")))
        assert await rows(streams, "f") == {
            ("todo", "k0"): "own",
            ("todo", "k1"): 4,
            ("todo", "k2"): 5,
        }
        read = await streams.state_snapshot("f")
        assert [e.offset for e in read.entities] == [ends[4], ends[5], own]
        nursery.cancel_scope.cancel()


async def _retire(registry: Registry, name: str) -> None:
    actor = registry._actors[name]
    while not actor.retire():
        await trio.sleep(0)
    await registry.all_stopped()


async def test_a_retired_actor_s_view_comes_back_from_its_checkpoint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(views_module, "SAVE_BYTES", 1)
    folded: list[int] = []
    apply_records = View.apply_records

    def counting(view: View, data: bytes, ends: Any, start: int) -> None:
        folded.append(start)
        apply_records(view, data, ends, start)

    monkeypatch.setattr(View, "apply_records", counting)
    async with trio.open_nursery() as nursery:
        registry = await started(MemoryStorage(), nursery)
        streams = Streams(registry)
        await create(streams, "s")
        await append(streams, "s", change("a", 1))
        before = await rows(streams, "s")
        assert folded == [0]
        saved = offsets.decode(await append(streams, "s", change("b", 2)))
        await _retire(registry, "s")  # checkpoints the view as it stops
        await append(streams, "s", change("c", 3))  # folded after the checkpoint, not before
        folded.clear()
        assert await rows(streams, "s") == before | {("todo", "b"): 2, ("todo", "c"): 3}
        assert folded == [saved]
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("damage", ["garbage", "truncated", "other-stream"])
async def test_a_damaged_or_foreign_view_checkpoint_is_rebuilt_from_the_log(
    tmp_path: Path, damage: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(views_module, "SAVE_BYTES", 1)
    async with trio.open_nursery() as nursery:
        registry = await started(FileStorage(tmp_path, durable=True), nursery)
        streams = Streams(registry)
        for name in ("s", "other"):
            await create(streams, name)
            await append(streams, name, change("a", name), change("b", 2))
            await rows(streams, name)
            await _retire(registry, name)
        expected = await rows(streams, "s")
        await _retire(registry, "s")
        [path] = [p for p in tmp_path.rglob(f"*{VIEW_SUFFIX}") if p.read_bytes().find(b"other") < 0]
        [foreign] = [p for p in tmp_path.rglob(f"*{VIEW_SUFFIX}") if p != path]
        if damage == "garbage":
            path.write_bytes(b"\x00" * 40)
        elif damage == "truncated":
            path.write_bytes(path.read_bytes()[:-7])
        else:
            path.write_bytes(foreign.read_bytes())
        assert await rows(streams, "s") == expected
        nursery.cancel_scope.cancel()


async def test_views_beyond_their_bounds_are_refused_not_truncated() -> None:
    async with trio.open_nursery() as nursery:
        limits = ViewLimits(max_entities=3)
        streams = Streams(await started(MemoryStorage(), nursery, view_limits=limits))
        await create(streams, "s")
        await append(streams, "s", *(change(f"k{i}", i) for i in range(4)))
        with pytest.raises(ProtocolError) as raised:
            await streams.state_snapshot("s")
        assert (raised.value.status, raised.value.code) == (507, "STATE_TOO_LARGE")
        await append(streams, "s", change("k5", 5))  # plain appends and reads go on
        nursery.cancel_scope.cancel()


async def test_resident_views_beyond_the_budget_drop_the_least_recently_used() -> None:
    async with trio.open_nursery() as nursery:
        registry = await started(MemoryStorage(), nursery)
        streams = Streams(registry)
        for name in ("a", "b", "c"):
            await create(streams, name)
            await append(streams, name, *(change(f"k{i}", "x" * 100) for i in range(5)))
            await rows(streams, name)
            if name == "a":  # room for two views of this size, not three
                registry.views.max_bytes = registry.views.total * 5 // 2
        await streams.head("a")  # the actors handled their drop messages
        resident = {name for name in "abc" if registry._actors[name].views.view is not None}
        assert resident == {"b", "c"}
        assert registry.views.total <= registry.views.max_bytes
        assert await rows(streams, "a")  # built again when asked
        nursery.cancel_scope.cancel()


# ---- validation ----------------------------------------------------------------------------


async def test_a_refused_append_appends_nothing_and_advances_no_producer() -> None:
    async with trio.open_nursery() as nursery:
        streams = Streams(await started(MemoryStorage(), nursery))
        await create(streams, "s", state_validation="semantic")
        producer = Producer("p", 0, 0)
        tail = await append(streams, "s", change("a", 1, "insert"), producer=producer)
        with pytest.raises(ProtocolError) as raised:
            await append(
                streams,
                "s",
                change("b", 1, "insert"),
                change("a", 2, "insert"),
                producer=Producer("p", 0, 1),
            )
        assert (raised.value.status, raised.value.fields) == (
            409,
            {"index": 1, "reason": 'insert of existing key ("todo", "a")'},
        )
        assert (await streams.head("s")).headers["Stream-Next-Offset"] == tail
        await append(streams, "s", change("b", 1, "insert"), producer=Producer("p", 0, 1))
        duplicate = await streams.append(
            "s", AppendRequest(JSON, b"[1]", producer=Producer("p", 0, 1))
        )
        assert duplicate.status == 204  # a retry is deduplicated before it is validated
        nursery.cancel_scope.cancel()


async def test_validation_sees_earlier_appends_of_the_same_commit() -> None:
    async with trio.open_nursery() as nursery:
        streams = Streams(await started(MemoryStorage(), nursery))
        await create(streams, "s", state_validation="semantic")
        outcomes: list[str] = []

        async def insert(value: int) -> None:
            try:
                await append(streams, "s", change("a", value, "insert"))
                outcomes.append("ok")
            except ProtocolError as error:
                outcomes.append(error.code)

        async with trio.open_nursery() as writers:
            for value in range(5):
                writers.start_soon(insert, value)
        assert sorted(outcomes) == ["STATE_CONFLICT"] * 4 + ["ok"]
        nursery.cancel_scope.cancel()


# ---- compaction -----------------------------------------------------------------------------


async def _compacted(streams: Streams) -> tuple[str, dict[tuple[str, str], Any]]:
    await create(streams, "c", state_compaction=1000)
    tail = ""
    for r in range(20):
        tail = await append(
            streams,
            "c",
            *(change(f"k{i}", [r, i]) for i in range(4)),
            producer=Producer("p", 0, r),
            stream_seq=f"{r:03}",
        )
    return tail, await rows(streams, "c")


@pytest.mark.parametrize("kind", ["files", "memory"])
async def test_a_compacted_stream_keeps_its_state_offsets_and_producers(
    tmp_path: Path, kind: str
) -> None:
    storage: Storage = FileStorage(tmp_path, durable=True) if kind == "files" else MemoryStorage()
    async with trio.open_nursery() as nursery:
        registry = await started(storage, nursery)
        streams = Streams(registry)
        tail, expected = await _compacted(streams)
        described: m.Snapshot = await registry.call("c", m.Describe())
        assert 0 < described.base <= offsets.decode(tail)
        await _retire(registry, "c")  # reopened from the compacted log
        assert await rows(streams, "c") == expected
        assert (await streams.head("c")).headers["Stream-Next-Offset"] == tail
        with pytest.raises(ProtocolError) as raised:
            await streams.read("c", described.base - 1, 100)
        assert (raised.value.status, raised.value.code) == (410, "STREAM_COMPACTED")
        with pytest.raises(ProtocolError) as raised:
            await streams.read("c", Sentinel.START, 100)
        assert raised.value.code == "STREAM_COMPACTED"  # the HTTP layer answers a snapshot
        retry = await streams.append(
            "c", AppendRequest(JSON, b"[1]", producer=Producer("p", 0, 19))
        )
        assert retry.status == 204
        with pytest.raises(ProtocolError) as raised:
            await append(streams, "c", change("x", 1), stream_seq="005")
        assert raised.value.code == "SEQUENCE_REGRESSION"
        nursery.cancel_scope.cancel()
    if kind == "files":  # the base, and at most twice the asked size of records after it
        assert sum(p.stat().st_size for p in tmp_path.rglob("*.log")) < 4000


async def test_forks_hold_off_compaction_and_none_starts_below_it() -> None:
    async with trio.open_nursery() as nursery:
        registry = await started(MemoryStorage(), nursery)
        streams = Streams(registry)
        await create(streams, "c", state_compaction=1000)
        await streams.create("f", CreateRequest(StreamConfig("")), Fork("c", 0))
        for r in range(10):
            await append(streams, "c", *(change(f"k{i}", r) for i in range(4)))
        assert (await registry.call("c", m.Describe())).base == 0
        await streams.delete("f")
        for r in range(8):  # prepared, then the asked size later the log switches
            await append(streams, "c", *(change(f"k{i}", r) for i in range(4)))
        base = (await registry.call("c", m.Describe())).base
        assert base > 0
        with pytest.raises(ProtocolError) as raised:
            await streams.create("g", CreateRequest(StreamConfig("")), Fork("c", base - 1))
        assert (raised.value.status, raised.value.code) == (410, "STREAM_COMPACTED")
        await streams.create("g", CreateRequest(StreamConfig("")), Fork("c", base))
        nursery.cancel_scope.cancel()


async def test_an_import_s_appends_leave_compaction_to_a_later_append() -> None:
    """`streams import` forks a stream after all of its records are in: compacting meanwhile
    would take the history the forks start in."""
    async with trio.open_nursery() as nursery:
        registry = await started(MemoryStorage(), nursery)
        streams = Streams(registry)
        await create(streams, "c", state_compaction=1000)
        for r in range(20):
            await append(streams, "c", *(change(f"k{i}", r) for i in range(4)), restore=True)
        assert (await registry.call("c", m.Describe())).base == 0
        await streams.create("f", CreateRequest(StreamConfig("")), Fork("c", 0))
        await streams.delete("f")
        for r in range(8):  # prepared, then the asked size later the log switches
            await append(streams, "c", *(change(f"k{i}", r) for i in range(4)))
        assert (await registry.call("c", m.Describe())).base > 0
        nursery.cancel_scope.cancel()


async def test_a_reader_less_than_the_asked_size_behind_is_never_compacted_away() -> None:
    async with trio.open_nursery() as nursery:
        registry = await started(MemoryStorage(), nursery)
        streams = Streams(registry)
        await create(streams, "c", state_compaction=1000)
        ends = [0]
        for r in range(60):
            ends.append(offsets.decode(await append(streams, "c", change(f"k{r % 3}", r))))
            for end in ends:
                if end > ends[-1] - 1000:  # within the asked size of the tail
                    await streams.read("c", end, 100)
        assert (await registry.call("c", m.Describe())).base > 0
        nursery.cancel_scope.cancel()


async def test_a_fork_of_a_compacted_stream_folds_from_its_source_s_base() -> None:
    async with trio.open_nursery() as nursery:
        registry = await started(MemoryStorage(), nursery)
        streams = Streams(registry)
        await create(streams, "c", state_compaction=500)
        for r in range(30):
            await append(streams, "c", *(change(f"k{i}", [r, i]) for i in range(3)))
        base = (await registry.call("c", m.Describe())).base
        assert base > 0
        at_fork = await rows(streams, "c")
        await streams.create("f", CreateRequest(StreamConfig("")), Fork("c"))
        await streams.create("g", CreateRequest(StreamConfig("")), Fork("f"))  # down a chain
        await append(streams, "c", change("k0", "source only"))
        await append(streams, "g", change("k1", "own"))
        assert await rows(streams, "f") == at_fork
        assert await rows(streams, "g") == at_fork | {("todo", "k1"): "own"}
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("mode", "body", "status"),
    [
        ("structural", [{"type": "todo"}], 400),
        ("semantic", [change("a", 1, "insert"), change("a", 2, "insert")], 409),
        ("semantic", [change("a", 1, "update")], 409),
    ],
)
async def test_a_create_s_body_is_validated_as_an_append_is(
    mode: str, body: list[Any], status: int
) -> None:
    async with trio.open_nursery() as nursery:
        streams = Streams(await started(MemoryStorage(), nursery))
        config = StreamConfig(JSON, state_validation=mode)
        with pytest.raises(ProtocolError) as raised:
            await streams.create("s", CreateRequest(config, body=json.dumps(body).encode()))
        assert raised.value.status == status
        with pytest.raises(ProtocolError) as raised:
            await streams.head("s")
        assert raised.value.status == 404  # nothing was created
        valid = json.dumps([change("a", 1, "insert")]).encode()
        await streams.create("s", CreateRequest(config, body=valid))
        assert await rows(streams, "s") == {("todo", "a"): 1}
        nursery.cancel_scope.cancel()


async def test_a_prepared_compaction_goes_with_its_actor(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        registry = await started(FileStorage(tmp_path, durable=True), nursery)
        streams = Streams(registry)
        await create(streams, "c", state_compaction=1000)
        for _ in range(100):
            await append(streams, "c", *(change(f"k{i}", "x" * 20) for i in range(4)))
            if registry._actors["c"].compactor.prepared:
                break
        assert list(tmp_path.rglob("*.compact"))
        await _retire(registry, "c")
        assert not list(tmp_path.rglob("*.compact"))
        nursery.cancel_scope.cancel()
