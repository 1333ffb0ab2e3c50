"""Checkpoints: a stopped actor's state comes back without replaying the log it covers, and
a checkpoint that no longer matches its log is never trusted."""

from __future__ import annotations

import sys
from pathlib import Path

import attrs
import cbor2
import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from actors import actor
from actors.registry import Registry
from actors.service import Streams
from actors.storage import Fold, Log, Restore, Storage, file_io, file_log
from actors.storage.file_log import CHECKPOINT_SUFFIX
from actors.storage.files import FileStorage
from actors.storage.memory import MemoryStorage
from streams.protocol import checkpoint
from streams.protocol.errors import ProtocolError
from streams.protocol.headers import Producer
from streams.protocol.machine import AppendRequest, CreateRequest, StreamState
from streams.protocol.offsets import Sentinel
from streams.protocol.records import AppendRecord, CreateRecord, SoftDeleteRecord, StreamConfig

OCTET = "application/octet-stream"
RECORDS = 12  # with CHECKPOINT lowered to 10 below


# ---- the pure encoding ------------------------------------------------------------------

appends = st.builds(
    AppendRecord,
    at=st.floats(0, 1e10),
    data=st.binary(max_size=5),
    producer=st.none()
    | st.builds(Producer, st.sampled_from("pq"), st.integers(0, 9), st.integers(0, 99)),
    stream_seq=st.none() | st.text(max_size=3),
    close=st.booleans(),
)


@given(st.lists(appends, max_size=20), st.booleans(), st.integers(0, 99))
def test_a_state_round_trips(records: list[AppendRecord], soft: bool, fork_offset: int) -> None:
    config = StreamConfig(OCTET, 60, None, "src" if fork_offset else None, fork_offset)
    state = StreamState.created(CreateRecord("s", config, "i" * 32, 5.0), 20)
    for at, record in enumerate(records):
        state.apply(record, 100 * (at + 1))
    if soft:
        state.apply(SoftDeleteRecord(9.0), 1)
    assert checkpoint.decode(checkpoint.encode(state)) == state


@pytest.mark.parametrize(
    "blob",
    [
        b"",
        b"\xff",
        cbor2.dumps({"v": checkpoint.VERSION + 1}),
        cbor2.dumps({"v": checkpoint.VERSION, "order": sys.byteorder}),
        cbor2.dumps([1, 2]),
    ],
)
def test_what_this_version_cannot_use_is_no_state(blob: bytes) -> None:
    assert checkpoint.decode(blob) is None


# ---- storage and actors -----------------------------------------------------------------


@attrs.define
class Counting:
    """Counts the records replayed and the checkpoints restored on each open."""

    inner: Storage
    folded: int = 0
    restored: int = 0

    async def open(self, name: str, fold: Fold, restore: Restore | None = None) -> Log | None:
        def counted_fold(*args: object) -> None:
            self.folded += 1
            fold(*args)  # type: ignore[arg-type]

        def counted_restore(blob: bytes) -> bool:
            assert restore is not None
            taken = restore(blob)
            self.restored += taken
            return taken

        return await self.inner.open(name, counted_fold, counted_restore)

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


@pytest.fixture(autouse=True)
def small_checkpoints(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(actor, "CHECKPOINT", 10)


@pytest.fixture(params=["memory", "file"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    return MemoryStorage() if request.param == "memory" else FileStorage(tmp_path, durable=True)


async def session(storage: Counting, work: object) -> None:
    async with trio.open_nursery() as nursery:
        registry = Registry(storage, idle_timeout=5)  # type: ignore[arg-type]
        await nursery.start(registry.run)
        await work(Streams(registry))  # type: ignore[operator]
        await registry.all_stopped()  # idle: the actor checkpoints as it stops
        nursery.cancel_scope.cancel()


async def fill(streams: Streams) -> None:
    await streams.create("s", CreateRequest(StreamConfig(OCTET)))
    for seq in range(RECORDS):
        await streams.append(
            "s", AppendRequest(OCTET, b"%d;" % seq, producer=Producer("p", 0, seq))
        )


async def test_a_stopped_actor_comes_back_from_its_checkpoint(
    storage: Storage, autojump_clock: trio.testing.MockClock
) -> None:
    counting = Counting(storage)
    await session(counting, fill)
    assert (counting.folded, counting.restored) == (0, 0)

    async def check(streams: Streams) -> None:
        result = await streams.read("s", Sentinel.START, 1 << 20)
        assert result.data == b"".join(b"%d;" % seq for seq in range(RECORDS))
        # the producer's state came back too: a retry is a duplicate, the next seq is new
        retry = AppendRequest(OCTET, b"again", producer=Producer("p", 0, RECORDS - 1))
        assert (await streams.append("s", retry)).status == 204
        await streams.append("s", AppendRequest(OCTET, b"end", close=True))

    await session(counting, check)
    assert (counting.folded, counting.restored) == (0, 1)

    async def closed(streams: Streams) -> None:
        with pytest.raises(ProtocolError) as error:
            await streams.append("s", AppendRequest(OCTET, b"more"))
        assert error.value.status == 409

    await session(counting, closed)
    assert (counting.folded, counting.restored) == (1, 2)  # the close after the checkpoint
    storage.close()


async def test_a_checkpoint_that_no_longer_matches_its_log_is_ignored(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    counting = Counting(FileStorage(tmp_path, durable=True))
    await session(counting, fill)
    log_path = next((tmp_path / "streams").glob("*/*.log"))
    checkpoint_path = Path(str(log_path) + CHECKPOINT_SUFFIX)
    assert checkpoint_path.exists()
    good = checkpoint_path.read_bytes()

    async def expect_all(streams: Streams) -> None:
        result = await streams.read("s", Sentinel.START, 1 << 20)
        assert result.data == b"".join(b"%d;" % seq for seq in range(RECORDS))

    damaged = bytearray(good)
    damaged[-1] ^= 1
    # the log cut back before the checkpoint's end (as fsck --repair may), then regrown
    original = log_path.read_bytes()
    for name, log_bytes, checkpoint_bytes in [
        ("damaged checkpoint", original, bytes(damaged)),
        ("log shorter than covered", original[:-1], good),
    ]:
        log_path.write_bytes(log_bytes)
        checkpoint_path.write_bytes(checkpoint_bytes)
        folded = counting.folded
        if name == "log shorter than covered":

            async def torn_tail(streams: Streams) -> None:
                result = await streams.read("s", Sentinel.START, 1 << 20)
                assert result.data == b"".join(b"%d;" % seq for seq in range(RECORDS - 1))

            await session(counting, torn_tail)
        else:
            await session(counting, expect_all)
        assert counting.folded > folded, name
        checkpoint_path.unlink(missing_ok=True)
    counting.inner.close()


async def test_a_recreated_stream_never_sees_the_old_checkpoint(
    storage: Storage, autojump_clock: trio.testing.MockClock
) -> None:
    counting = Counting(storage)
    await session(counting, fill)

    async def recreate(streams: Streams) -> None:
        await streams.delete("s")
        await streams.create("s", CreateRequest(StreamConfig(OCTET), body=b"new"))

    await session(counting, recreate)
    restored = counting.restored

    async def check(streams: Streams) -> None:
        assert (await streams.read("s", Sentinel.START, 1 << 20)).data == b"new"

    await session(counting, check)
    assert counting.restored == restored
    storage.close()


async def test_a_log_replayed_in_full_gets_a_checkpoint_when_its_actor_stops(
    storage: Storage, autojump_clock: trio.testing.MockClock
) -> None:
    counting = Counting(storage)
    async with trio.open_nursery() as nursery:  # a process that stops before its actors idle
        registry = Registry(counting)  # type: ignore[arg-type]
        await nursery.start(registry.run)
        await fill(Streams(registry))
        nursery.cancel_scope.cancel()

    async def head(streams: Streams) -> None:
        await streams.head("s")

    await session(counting, head)
    assert (counting.folded, counting.restored) == (RECORDS + 1, 0)  # replayed in full
    await session(counting, head)
    assert (counting.folded, counting.restored) == (RECORDS + 1, 1)  # then from its checkpoint
    storage.close()


async def test_in_file_fast_mode_a_checkpoint_covers_only_synced_data(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Commits are not synced in file-fast mode: the log is synced before its checkpoint
    is written, or a power loss could leave a checkpoint over bytes that never hit the disk."""
    events: list[str] = []
    real_sync, real_write = file_io.fdatasync, file_log._write_checkpoint

    def sync(fd: int) -> None:
        events.append("sync")
        real_sync(fd)

    def write(path: str, binding: bytes, state: bytes) -> None:
        events.append("checkpoint")
        real_write(path, binding, state)

    monkeypatch.setattr(file_io, "fdatasync", sync)
    monkeypatch.setattr(file_log, "_write_checkpoint", write)
    storage = FileStorage(tmp_path, durable=False)
    await session(Counting(storage), fill)
    assert events == ["sync", "checkpoint"]
    storage.close()
