"""Whatever a write accepts, recovery accepts: acknowledged records of any shape come back
whole after the log is reopened, and what the format cannot hold is refused before anything
is written. Recovery itself runs off the event loop in bounded memory."""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import attrs
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors.registry import Registry
from actors.service import FLATTEN_IN_THREAD_BYTES, Streams
from actors.storage import OFFLOAD_BYTES, Fold, Log, Restore, Storage, file_io, framing
from actors.storage.files import FileStorage
from actors.storage.memory import MemoryStorage
from streams.protocol import jsonmode, offsets, records
from streams.protocol.errors import ProtocolError
from streams.protocol.headers import Producer
from streams.protocol.machine import AppendRequest, CreateRequest
from streams.protocol.records import StreamConfig
from tests.on_disk import served

T = TypeVar("T")
JSON = "application/json"
OCTET = "application/octet-stream"


class Backend:
    """One storage mode whose logs outlive each `session` (a server's lifetime)."""

    def __init__(self, mode: str, root: Path) -> None:
        self.mode, self.root = mode, root
        self.memory = MemoryStorage()

    def storage(self) -> Storage:
        return self.memory if self.mode == "memory" else FileStorage(self.root, durable=True)

    def session(self, operation: Callable[[Streams], Awaitable[T]]) -> T:
        return served(self.storage(), operation)


@pytest.fixture(params=["memory", "file"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    return Backend(request.param, tmp_path / "data")


async def read_all(streams: Streams, name: str) -> bytes:
    data, position = b"", 0
    while True:
        result = await streams.read(name, position, 1 << 20)
        data += result.data
        position = result.end
        if position == result.snapshot.tail:
            return data


def json_read(stored: bytes) -> object:
    return json.loads(b"[" + stored[:-1] + b"]")


def test_a_json_append_of_a_million_messages_survives_reopen(backend: Backend) -> None:
    """The bug: one size per message in the record's metadata passed the reader's 1 MiB
    bound, so the acknowledged append vanished on reopen (and later ones with it)."""
    many = b"[" + b",".join(b"%d" % (i % 10) for i in range(1_100_000)) + b"]"

    async def write(streams: Streams) -> None:
        await streams.create("s", CreateRequest(StreamConfig(JSON), body=b'["first"]'))
        await streams.append("s", AppendRequest(JSON, many))
        await streams.append("s", AppendRequest(JSON, b'"after"'))
        await streams.create("c", CreateRequest(StreamConfig(JSON), body=many))

    backend.session(write)
    expected = ["first", *(i % 10 for i in range(1_100_000)), "after"]
    assert json_read(backend.session(lambda s: read_all(s, "s"))) == expected
    assert json_read(backend.session(lambda s: read_all(s, "c"))) == expected[1:-1]


def meta_of_size(size: int) -> str:
    """A Stream-Seq that makes an append's metadata exactly `size` bytes."""
    seq = "a" * size
    while (
        length := len(records.encode(records.AppendRecord(0.0, b"x", stream_seq=seq))[0])
    ) > size:
        seq = seq[: len(seq) - (length - size)]
    return seq


def test_record_metadata_at_the_limit_is_kept_and_past_it_refused(backend: Backend) -> None:
    at_limit = meta_of_size(framing.MAX_META)
    meta, _ = records.encode(records.AppendRecord(0.0, b"x", stream_seq=at_limit))
    assert len(meta) == framing.MAX_META

    async def write(streams: Streams) -> int:
        await streams.create("s", CreateRequest(StreamConfig(OCTET)))
        await streams.append("s", AppendRequest(OCTET, b"a", stream_seq=at_limit))
        with pytest.raises(ProtocolError) as refused:
            await streams.append("s", AppendRequest(OCTET, b"b", stream_seq=at_limit + "b"))
        await streams.append("s", AppendRequest(OCTET, b"c"))
        return refused.value.status

    assert backend.session(write) == 413
    assert backend.session(lambda s: read_all(s, "s")) == b"ac"


def test_a_create_the_format_cannot_hold_is_refused_and_leaves_nothing(backend: Backend) -> None:
    config = StreamConfig("text/plain; x=" + "y" * framing.MAX_META)

    async def write(streams: Streams) -> None:
        with pytest.raises(ProtocolError) as refused:
            await streams.create("s", CreateRequest(config, body=b"data"))
        assert refused.value.status == 413
        with pytest.raises(ProtocolError) as missing:
            await streams.head("s")
        assert missing.value.status == 404

    backend.session(write)
    if backend.mode == "file":
        assert not list((backend.root / "streams").glob("*/*.log"))


json_messages = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=5,
)
appends = st.one_of(
    st.lists(json_messages, min_size=1, max_size=30).map(lambda v: (JSON, v)),
    st.binary(min_size=1, max_size=3000).map(lambda b: (OCTET, b)),
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batches=st.lists(st.lists(appends, min_size=1, max_size=6), min_size=1, max_size=4))
def test_every_acknowledged_batch_reads_back_after_reopen(
    backend: Backend, batches: list[list[tuple[str, object]]]
) -> None:
    """Random batches of appends, each batch sent concurrently (one group commit), and a
    producer's retries: after reopening, each stream holds exactly what was acknowledged."""
    backend.memory = MemoryStorage()
    shutil.rmtree(backend.root, ignore_errors=True)
    expected: dict[str, list[object]] = {JSON: [], OCTET: []}

    async def write(streams: Streams) -> None:
        for content_type in expected:
            await streams.create(content_type, CreateRequest(StreamConfig(content_type)))
        for batch in batches:
            async with trio.open_nursery() as nursery:
                for content_type, value in batch:
                    body = value if isinstance(value, bytes) else json.dumps(value).encode()
                    request = AppendRequest(content_type, body)
                    nursery.start_soon(streams.append, content_type, request)
                    if isinstance(value, bytes):
                        expected[OCTET].append(value)
                    else:
                        assert isinstance(value, list)
                        expected[JSON].extend(value)
        async with trio.open_nursery() as nursery:  # a producer's retries stay exactly-once
            request = AppendRequest(OCTET, b"p", producer=Producer("p", 0, 0))
            for _ in range(3):
                nursery.start_soon(streams.append, OCTET, request)
        expected[OCTET].append(b"p")

    backend.session(write)
    stored_json = backend.session(lambda s: read_all(s, JSON))
    stored_octets = backend.session(lambda s: read_all(s, OCTET))
    # concurrent appends commit in arrival order: compare what was stored, not its order
    stored_messages = json_read(stored_json) if stored_json else []
    assert isinstance(stored_messages, list)
    assert sorted(map(canonical, stored_messages)) == sorted(map(canonical, expected[JSON]))
    assert sorted(stored_octets) == sorted(b"".join(expected[OCTET]))  # type: ignore[arg-type]


def canonical(value: object) -> str:
    return json.dumps(value, sort_keys=True)


# ---- recovery runs off the event loop, reading a window at a time -----------------------


@attrs.define
class GatedStorage:
    """Replays through a fold that waits for the event loop to run a task: if recovery ran
    on the event loop, that task could never run."""

    inner: Storage
    gate: threading.Event = attrs.field(factory=threading.Event)

    async def open(self, name: str, fold: Fold, restore: Restore | None = None) -> Log | None:
        def gated(record: records.Record, locator: int, length: int) -> None:
            assert self.gate.wait(timeout=30), "the event loop did not run during recovery"
            fold(record, locator, length)

        return await self.inner.open(name, gated, restore)

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


def test_recovery_runs_off_the_event_loop(backend: Backend) -> None:
    body = b"x" * OFFLOAD_BYTES  # memory mode replays smaller logs inline
    backend.session(lambda s: s.create("s", CreateRequest(StreamConfig(OCTET), body=body)))

    async def main() -> None:
        storage = GatedStorage(backend.storage())
        try:
            async with trio.open_nursery() as nursery:
                registry = Registry(storage)  # type: ignore[arg-type]
                await nursery.start(registry.run)
                streams = Streams(registry)

                async def open_the_gate() -> None:
                    await trio.sleep(0)
                    storage.gate.set()

                nursery.start_soon(open_the_gate)
                reply = await streams.head("s")
                assert reply.headers["Stream-Next-Offset"] == offsets.encode(len(body))
                nursery.cancel_scope.cancel()
        finally:
            storage.inner.close()

    trio.run(main)


def test_reopening_reads_the_log_a_window_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = Backend("file", tmp_path / "data")
    chunk, count = b"z" * 100_000, 5 * framing.WINDOW // 100_000

    async def write(streams: Streams) -> None:
        await streams.create("s", CreateRequest(StreamConfig(OCTET)))
        for _ in range(count):
            await streams.append("s", AppendRequest(OCTET, chunk))

    backend.session(write)
    reads: list[int] = []
    real = file_io.pread

    def spy(fd: int, length: int, offset: int) -> bytes:
        reads.append(length)
        return real(fd, length, offset)

    async def reopen() -> int:
        storage = FileStorage(backend.root, durable=True)
        lengths: list[int] = []
        try:
            log = await storage.open("s", lambda record, at, length: lengths.append(length))
            assert log is not None
            log.close()
        finally:
            storage.close()
        return sum(lengths)

    monkeypatch.setattr(file_io, "pread", spy)
    assert trio.run(reopen) == len(chunk) * count
    assert reads and max(reads) <= framing.WINDOW


def test_large_json_bodies_are_flattened_off_the_event_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    threads: list[bool] = []
    real = jsonmode.flatten

    def spy(body: bytes) -> bytes:
        threads.append(threading.current_thread() is threading.main_thread())
        return real(body)

    monkeypatch.setattr(jsonmode, "flatten", spy)
    small = b"[1,2,3]"
    large = b"[" + b",".join([b"12345"] * (FLATTEN_IN_THREAD_BYTES // 6 + 1)) + b"]"
    assert len(large) >= FLATTEN_IN_THREAD_BYTES

    async def write(streams: Streams) -> None:
        await streams.create("s", CreateRequest(StreamConfig(JSON), body=large))
        await streams.append("s", AppendRequest(JSON, large))
        await streams.append("s", AppendRequest(JSON, small))

    served(MemoryStorage(), write)
    assert threads == [False, False, True]  # on the loop only where a thread costs more
