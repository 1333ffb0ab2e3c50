"""The registry's supervision: idle stops, live readers, failure isolation, expiry, batching."""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest
import trio
import trio.testing

from actors import messages as m
from actors.service import Fork, Streams
from actors.storage import Fold, Log, Restore
from actors.storage.files import FileStorage
from actors.storage.memory import MemoryStorage
from streams.protocol.errors import ProtocolError
from streams.protocol.machine import AppendRequest, CreateRequest
from streams.protocol.offsets import Sentinel
from streams.protocol.records import StreamConfig
from tests.on_disk import started
from tests.stored import stored_data

TEXT = "text/plain"


class FakeTime:
    """Wall-clock time for TTLs, moved by hand."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


async def create(streams: Streams, name: str, **config: object) -> None:
    await streams.create(name, CreateRequest(StreamConfig(TEXT, **config)))  # type: ignore[arg-type]


async def append(streams: Streams, name: str, data: bytes) -> None:
    await streams.append(name, AppendRequest(TEXT, data))


async def test_idle_actor_stops_and_comes_back_from_storage(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        registry = await started(MemoryStorage(), nursery, idle_timeout=5)
        streams = Streams(registry)
        await create(streams, "s")
        await append(streams, "s", b"hello")
        assert registry.active == 1
        await trio.sleep(6)
        assert registry.active == 0
        result = await streams.read("s", Sentinel.START, 1024)
        assert result.data == b"hello"
        assert registry.active == 1
        nursery.cancel_scope.cancel()


async def test_memory_logs_outlive_their_actor_but_not_their_stream(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        registry = await started(MemoryStorage(), nursery, idle_timeout=5)
        streams = Streams(registry)
        for name in ("kept", "deleted"):
            await create(streams, name)
            await append(streams, name, b"one")
        await trio.sleep(6)  # both actors stop: their logs are compacted
        await append(streams, "kept", b"two")
        assert (await streams.delete("deleted")).status == 204
        await trio.sleep(6)  # the stopping actor of "deleted" must not bring its log back
        assert registry.active == 0
        assert (await streams.read("kept", Sentinel.START, 1024)).data == b"onetwo"
        with pytest.raises(ProtocolError) as error:
            await streams.read("deleted", Sentinel.START, 1024)
        assert error.value.status == 404
        nursery.cancel_scope.cancel()


async def test_actor_with_a_live_reader_stays(autojump_clock: trio.testing.MockClock) -> None:
    async with trio.open_nursery() as nursery:
        registry = await started(MemoryStorage(), nursery, idle_timeout=5)
        streams = Streams(registry)
        await create(streams, "s")
        first = await streams.read("s", Sentinel.NOW, 1024)
        woke = trio.Event()

        async def reader() -> None:
            await first.snapshot.changed.wait()
            woke.set()

        nursery.start_soon(reader)
        await trio.sleep(60)
        assert registry.active == 1 and not woke.is_set()
        await append(streams, "s", b"x")
        await woke.wait()
        nursery.cancel_scope.cancel()


async def test_beyond_max_resident_the_least_recently_used_idle_actors_stop() -> None:
    async with trio.open_nursery() as nursery:
        registry = await started(MemoryStorage(), nursery, max_resident=2)
        streams = Streams(registry)
        await create(streams, "read")
        first = await streams.read("read", Sentinel.NOW, 1024)
        nursery.start_soon(first.snapshot.changed.wait)  # a live reader: never retired
        for name in ("idle1", "idle2", "used"):
            await create(streams, name)
        await append(streams, "used", b"x")
        await trio.testing.wait_all_tasks_blocked()
        registry.retire_least_used()
        await trio.testing.wait_all_tasks_blocked()
        assert list(registry._actors) == ["read", "used"]
        assert (await streams.read("idle1", Sentinel.START, 1024)).data == b""
        nursery.cancel_scope.cancel()


async def test_a_request_sent_as_an_idle_actor_stops_is_served() -> None:
    async with trio.open_nursery() as nursery:
        registry = await started(MemoryStorage(), nursery)
        streams = Streams(registry)
        await create(streams, "s")
        await trio.testing.wait_all_tasks_blocked()
        assert registry._actors["s"].retire()
        # No checkpoint since: the request is queued before the retiring actor runs again.
        assert (await streams.head("s")).status == 200
        nursery.cancel_scope.cancel()


async def test_absent_streams_keep_no_actor() -> None:
    async with trio.open_nursery() as nursery:
        registry = await started(MemoryStorage(), nursery)
        with pytest.raises(ProtocolError) as error:
            await Streams(registry).head("missing")
        assert error.value.status == 404
        await trio.testing.wait_all_tasks_blocked()
        assert registry.active == 0
        nursery.cancel_scope.cancel()


@attrs.define
class FlakyStorage:
    """Memory storage whose commits fail for one stream while `broken` is set."""

    inner: MemoryStorage = attrs.field(factory=MemoryStorage)
    broken: set[str] = attrs.field(factory=set)
    commits: int = 0

    async def open(self, name: str, fold: Fold, restore: Restore | None = None) -> Log | None:
        opened = await self.inner.open(name, fold, restore)
        return None if opened is None else self._wrap(name, opened)

    async def create(self, name: str) -> Log:
        return self._wrap(name, await self.inner.create(name))

    def _wrap(self, name: str, log: Log) -> Log:
        return FlakyLog(log, name, self)  # type: ignore[return-value]

    def __getattr__(self, attribute: str) -> object:
        return getattr(self.inner, attribute)


@attrs.define
class FlakyLog:
    inner: Log
    name: str
    storage: FlakyStorage

    @property
    def end(self) -> int:
        return self.inner.end

    def stage(self, meta: bytes, data: bytes) -> int:
        return self.inner.stage(meta, data)

    async def commit(self) -> None:
        self.storage.commits += 1
        if self.name in self.storage.broken:
            self.inner.close()  # drop what was staged, as a failed write would
            raise OSError("injected")
        await self.inner.commit()

    async def read(self, slices: list) -> bytes:  # type: ignore[type-arg]
        return await self.inner.read(slices)

    async def hold(self, fold: Fold) -> bool:
        return await self.inner.hold(fold)

    async def release(self) -> None:
        await self.inner.release()

    async def refresh(self, fold: Fold) -> bool:
        return await self.inner.refresh(fold)

    @property
    def accessed(self) -> float | None:
        return self.inner.accessed

    async def touched(self, at: float) -> None:
        await self.inner.touched(at)

    def close(self) -> None:
        self.inner.close()


async def test_a_failing_actor_answers_500_and_restarts_from_storage() -> None:
    storage = FlakyStorage()
    async with trio.open_nursery() as nursery:
        registry = await started(storage, nursery)  # type: ignore[arg-type]
        streams = Streams(registry)
        await create(streams, "bad")
        await create(streams, "good")
        await append(streams, "bad", b"kept ")
        storage.broken.add("bad")
        with pytest.raises(ProtocolError) as error:
            await append(streams, "bad", b"lost ")
        assert error.value.status == 500
        await append(streams, "good", b"fine")  # other streams carry on
        storage.broken.clear()
        await append(streams, "bad", b"again")
        assert (await streams.read("bad", Sentinel.START, 1024)).data == b"kept again"
        assert (await streams.read("good", Sentinel.START, 1024)).data == b"fine"
        nursery.cancel_scope.cancel()


async def test_concurrent_appends_share_commits() -> None:
    storage = FlakyStorage()
    async with trio.open_nursery() as nursery:
        registry = await started(storage, nursery)  # type: ignore[arg-type]
        streams = Streams(registry)
        await create(streams, "s")
        storage.commits = 0
        async with trio.open_nursery() as writers:
            for i in range(50):
                writers.start_soon(append, streams, "s", b"%02d" % i)
        assert storage.commits < 50
        data = (await streams.read("s", Sentinel.START, 1 << 20)).data
        assert sorted(data[i : i + 2] for i in range(0, 100, 2)) == [b"%02d" % i for i in range(50)]
        nursery.cancel_scope.cancel()


async def test_an_import_s_records_are_committed_at_once_in_order() -> None:
    """`Streams.restore`: one commit for the batch, a reply per record, the first refusal
    raised (the records before it are in)."""
    storage = FlakyStorage()
    async with trio.open_nursery() as nursery:
        registry = await started(storage, nursery)  # type: ignore[arg-type]
        streams = Streams(registry)
        await create(streams, "s")
        storage.commits = 0
        records = [AppendRequest(TEXT, b"%02d" % i, restore=True) for i in range(50)]
        replies = await streams.restore("s", records)
        assert storage.commits == 1
        assert [r.headers["Stream-Next-Offset"][-3:] for r in replies] == [
            f"{2 * i + 2:03}" for i in range(50)
        ]
        data = (await streams.read("s", Sentinel.START, 1 << 20)).data
        assert data == b"".join(b"%02d" % i for i in range(50))
        refused = [AppendRequest(TEXT, b"ok", restore=True), AppendRequest("x/y", b"no")]
        with pytest.raises(ProtocolError) as raised:
            await streams.restore("s", refused)
        assert raised.value.code == "CONTENT_TYPE"
        assert (await streams.head("s")).headers["Stream-Next-Offset"][-3:] == "102"
        nursery.cancel_scope.cancel()


async def test_expired_streams_go_without_being_touched(
    autojump_clock: trio.testing.MockClock,
) -> None:
    now = FakeTime()
    storage = MemoryStorage()
    async with trio.open_nursery() as nursery:
        registry = await started(storage, nursery, clock=now, idle_timeout=1)
        await create(Streams(registry), "s", ttl=10)
        now.now += 11
        await trio.sleep(2)
        assert await stored_data(storage, "s") is None
        nursery.cancel_scope.cancel()


async def test_expiry_survives_a_restart(tmp_path: Path) -> None:
    now = FakeTime()
    storage = FileStorage(tmp_path, durable=True)
    async with trio.open_nursery() as nursery:
        registry = await started(storage, nursery, clock=now, sweep_interval=3600)
        await create(Streams(registry), "s", expires_at=now.now + 5)
        await create(Streams(registry), "forever")
        nursery.cancel_scope.cancel()
    storage.close()
    storage = FileStorage(tmp_path, durable=True)
    now.now += 10
    async with trio.open_nursery() as nursery:
        registry = await started(storage, nursery, clock=now, sweep_interval=3600)
        await registry.deadlines_loaded.wait()
        await registry.expire_due()
        assert await stored_data(storage, "s") is None
        assert await stored_data(storage, "forever") is not None
        nursery.cancel_scope.cancel()
    storage.close()


async def test_soft_deleted_source_goes_with_its_last_fork() -> None:
    storage = MemoryStorage()
    async with trio.open_nursery() as nursery:
        registry = await started(storage, nursery)
        streams = Streams(registry)
        await create(streams, "src")
        await append(streams, "src", b"abc")
        await streams.create("fork", CreateRequest(StreamConfig("")), Fork("src"))
        await streams.delete("src")
        with pytest.raises(ProtocolError) as error:
            await streams.head("src")
        assert error.value.status == 410
        assert (await streams.read("fork", Sentinel.START, 1024)).data == b"abc"
        await streams.delete("fork")
        assert await stored_data(storage, "src") is None
        with pytest.raises(ProtocolError) as error:
            await registry.call("src", m.Head())
        assert error.value.status == 404
        nursery.cancel_scope.cancel()


async def test_a_delete_interrupted_by_a_crash_is_finished_on_start(tmp_path: Path) -> None:
    storage = FileStorage(tmp_path, durable=True)
    async with trio.open_nursery() as nursery:
        registry = await started(storage, nursery)
        streams = Streams(registry)
        await create(streams, "src")
        await streams.create("fork", CreateRequest(StreamConfig("")), Fork("src"))
        await streams.delete("src")  # soft: the fork still reads it
        nursery.cancel_scope.cancel()
    storage._path("fork").unlink()  # the crash: fork removed, its source never told
    storage.close()

    storage = FileStorage(tmp_path, durable=True)
    async with trio.open_nursery() as nursery:
        registry = await started(storage, nursery)
        await registry.collected.wait()
        assert await stored_data(storage, "src") is None
        assert not any((tmp_path / "forks").iterdir())
        nursery.cancel_scope.cancel()
    storage.close()


async def test_a_commit_hands_its_data_to_waiting_readers() -> None:
    """Only when someone waits: a commit nobody watches builds nothing extra."""
    async with trio.open_nursery() as nursery:
        registry = await started(MemoryStorage(), nursery)
        streams = Streams(registry)
        await create(streams, "s")
        await append(streams, "s", b"old")
        at_tail = await streams.read("s", Sentinel.NOW, 1024)
        nursery.start_soon(at_tail.snapshot.changed.wait)  # a live reader, parked
        await trio.testing.wait_all_tasks_blocked()
        await append(streams, "s", b"new")
        added = at_tail.snapshot.changed.added
        assert added is not None
        assert (added.start, added.end, added.data) == (3, 6, b"new")
        assert added.snapshot.tail == 6 and not added.snapshot.changed.is_set()
        nursery.cancel_scope.cancel()


class StuckLinks(MemoryStorage):
    """A source whose link write never finishes (a hung disk)."""

    async def add_link(self, source: str, fork: str, incarnation: str) -> None:
        await trio.sleep_forever()


async def test_an_actor_waits_for_its_source_only_so_long(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        registry = await started(StuckLinks(), nursery, peer_timeout=30)
        streams = Streams(registry)
        await create(streams, "src")
        with pytest.raises(ProtocolError) as error:
            await streams.create("fork", CreateRequest(StreamConfig("")), Fork("src"))
        assert (error.value.status, error.value.code) == (503, "SOURCE_TIMEOUT")
        with pytest.raises(ProtocolError) as missing:
            await streams.head("fork")  # nothing was stored
        assert missing.value.status == 404
        nursery.cancel_scope.cancel()
