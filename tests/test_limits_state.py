"""Bounded state per client: deleted streams leave no expiry entries behind, and fork chains
are limited in depth (and read without recursion)."""

from __future__ import annotations

import cbor2
import pytest
import trio
import trio.testing

from actors.registry import Registry
from actors.service import Fork, Streams
from actors.storage.memory import MemoryStorage
from streams.config import Settings
from streams.http import StreamsHTTP
from streams.protocol import records
from streams.protocol.errors import ProtocolError
from streams.protocol.machine import AppendRequest, CreateRequest
from streams.protocol.offsets import Sentinel
from streams.protocol.records import StreamConfig
from tests.asgi import request
from tests.stored import stored_data

TEXT = "text/plain"


class FakeTime:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


async def test_create_delete_cycles_with_a_ttl_leave_no_expiry_entries(
    autojump_clock: trio.testing.MockClock,
) -> None:
    now = FakeTime()
    async with trio.open_nursery() as nursery:
        registry = Registry(MemoryStorage(), clock=now)
        await nursery.start(registry.run)
        streams = Streams(registry)
        await streams.create("kept", CreateRequest(StreamConfig(TEXT, ttl=100)))
        for i in range(2000):
            name = f"cycle/{i % 7}" if i % 2 else f"cycle/{i}-" + "n" * 1000
            await streams.create(name, CreateRequest(StreamConfig(TEXT, ttl=3600)))
            assert (await streams.delete(name)).status == 204
            assert registry.scheduled_expiries <= 2 * 1 + 16  # the old heap: one per cycle
        now.now += 101  # the surviving stream still expires on time
        await trio.sleep(1)
        with pytest.raises(ProtocolError) as error:
            await streams.head("kept")
        assert error.value.status == 404
        assert registry.scheduled_expiries <= 16
        nursery.cancel_scope.cancel()


async def test_a_stream_whose_actor_stopped_still_expires(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Reopening the log to expire it is no access (it used to slide the TTL, forever)."""
    now = FakeTime()
    storage = MemoryStorage()
    async with trio.open_nursery() as nursery:
        registry = Registry(storage, idle_timeout=1, clock=now)
        await nursery.start(registry.run)
        await Streams(registry).create("s", CreateRequest(StreamConfig(TEXT, ttl=10)))
        await trio.sleep(2)
        assert registry.active == 0
        now.now += 11
        await trio.sleep(1)
        assert await stored_data(storage, "s") is None
        assert registry.scheduled_expiries == 0
        nursery.cancel_scope.cancel()


async def test_sliding_ttls_keep_one_entry_per_stream(
    autojump_clock: trio.testing.MockClock,
) -> None:
    now = FakeTime()
    async with trio.open_nursery() as nursery:
        registry = Registry(MemoryStorage(), clock=now)
        await nursery.start(registry.run)
        streams = Streams(registry)
        for i in range(50):
            await streams.create(f"s{i}", CreateRequest(StreamConfig(TEXT, ttl=3600)))
        for _ in range(20):  # every access slides each deadline later: no new entry
            now.now += 1
            for i in range(50):
                await streams.append(f"s{i}", AppendRequest(TEXT, b"x"))
        assert registry.scheduled_expiries <= 2 * 50 + 16
        nursery.cancel_scope.cancel()


# ---- fork depth -------------------------------------------------------------------------------


async def chain(streams: Streams, depth: int) -> list[str]:
    """A root and `depth` forks, each fork of the one before; every stream appends its index."""
    names = ["f0"]
    await streams.create("f0", CreateRequest(StreamConfig(TEXT), body=b"0,"))
    for level in range(1, depth + 1):
        name = f"f{level}"
        await streams.create(name, CreateRequest(StreamConfig("")), Fork(names[-1]))
        await streams.append(name, AppendRequest(TEXT, b"%d," % level))
        names.append(name)
    return names


def expected(depth: int) -> bytes:
    return b"".join(b"%d," % level for level in range(depth + 1))


async def test_forks_up_to_the_maximum_depth_and_no_deeper() -> None:
    storage = MemoryStorage()
    async with trio.open_nursery() as nursery:
        registry = Registry(storage)
        await nursery.start(registry.run)
        streams = Streams(registry, max_fork_depth=Settings().max_fork_depth)
        depth = Settings().max_fork_depth
        names = await chain(streams, depth)
        deepest = names[-1]
        assert (await streams.read(deepest, Sentinel.START, 1 << 20)).data == expected(depth)
        with pytest.raises(ProtocolError) as error:
            await streams.create("over", CreateRequest(StreamConfig("")), Fork(deepest))
        assert error.value.status == 400
        assert error.value.code == "FORK_DEPTH_EXCEEDED"
        assert await stored_data(storage, "over") is None  # nothing stored: no log, no link
        assert await storage.links(deepest) == {}
        # A fork of a shallower stream is still fine.
        await streams.create("beside", CreateRequest(StreamConfig("")), Fork(names[-2]))
        nursery.cancel_scope.cancel()


async def test_the_depth_limit_answers_400_problem_json() -> None:
    async with trio.open_nursery() as nursery:
        registry = Registry(MemoryStorage())
        await nursery.start(registry.run)
        app = StreamsHTTP(
            Streams(registry, max_fork_depth=1), Settings(storage_mode="memory", max_fork_depth=1)
        )
        assert (await request(app, "PUT", "a", headers={"Content-Type": TEXT})).status == 201
        fork = {"Stream-Forked-From": "/v1/stream/a"}
        assert (await request(app, "PUT", "b", headers=fork)).status == 201
        refused = await request(app, "PUT", "c", headers={"Stream-Forked-From": "b"})
        assert refused.status == 400
        assert refused.problem()["code"] == "FORK_DEPTH_EXCEEDED"
        assert (await request(app, "HEAD", "c")).status == 404
        nursery.cancel_scope.cancel()


async def test_deep_chains_read_without_recursion() -> None:
    """Past Python's recursion limit (the old reads failed with RecursionError here)."""
    depth = 1100
    async with trio.open_nursery() as nursery:
        registry = Registry(MemoryStorage())
        await nursery.start(registry.run)
        streams = Streams(registry, max_fork_depth=depth + 1)
        names = await chain(streams, depth)
        result = await streams.read(names[-1], Sentinel.START, 1 << 20)
        assert result.data == expected(depth)
        # Sub-offsets resolve through the whole chain as well.
        sub = Fork(names[-1], 0, 3)
        await streams.create("sub", CreateRequest(StreamConfig("")), sub)
        assert (await streams.read("sub", Sentinel.START, 1 << 20)).data == b"0,1"
        nursery.cancel_scope.cancel()


def test_the_fork_depth_is_kept_in_the_create_record() -> None:
    config = StreamConfig(TEXT, fork_source="a", fork_offset=3, fork_depth=7)
    meta, data = records.encode(records.CreateRecord("b", config, "id", 1.0))
    assert cbor2.loads(meta)["fd"] == 7
    decoded = records.decode(meta, data)
    assert isinstance(decoded, records.CreateRecord) and decoded.config.fork_depth == 7
    # Logs written before the field existed read as depth 0.
    old = cbor2.loads(meta)
    del old["fd"]
    decoded = records.decode(cbor2.dumps(old), data)
    assert isinstance(decoded, records.CreateRecord) and decoded.config.fork_depth == 0
    plain, _ = records.encode(records.CreateRecord("p", StreamConfig(TEXT), "id", 1.0))
    assert "fd" not in cbor2.loads(plain)
