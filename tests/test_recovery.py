"""Recovery from torn and corrupted logs: exactly the records before the damage survive."""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from actors.registry import Registry
from actors.service import Streams
from actors.storage import CorruptLog, files
from actors.storage import replay as storage_replay
from actors.storage.files import FileStorage
from streams.protocol.errors import ProtocolError
from streams.protocol.machine import AppendRequest, CreateRequest
from streams.protocol.offsets import Sentinel
from streams.protocol.records import StreamConfig
from tests.on_disk import on_disk
from tests.stored import stored_data

TEXT = "text/plain"
RECORDS = [b"first", b"second record", b"x" * 300, b"last one"]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir holding one stream: a create record plus three appends."""
    root = tmp_path_factory.mktemp("pristine")

    async def write(streams: Streams) -> None:
        await streams.create("s", CreateRequest(StreamConfig(TEXT), body=RECORDS[0]))
        for data in RECORDS[1:]:
            await streams.append("s", AppendRequest(TEXT, data))

    on_disk(root, write)
    return root


def recovered_data(root: Path) -> list[bytes]:
    async def read() -> list[bytes]:
        storage = FileStorage(root, durable=True)
        try:
            return await stored_data(storage, "s") or []
        finally:
            storage.close()

    return trio.run(read)


def frame_starts(root: Path) -> list[int]:
    """Where each record's frame starts, from the recovered locators."""
    from actors.storage import framing

    data = log_path(root).read_bytes()
    return [
        s.data_locator - framing.HEADER.size - len(s.meta)
        for s in framing.scan(data)
        if not isinstance(s, int)
    ]


def log_path(root: Path) -> Path:
    return next((root / "streams").glob("*/*.log"))


def damaged_copy(pristine: Path, tmp_path: Path, damage: str, position: int) -> Path:
    root = tmp_path / f"{damage}-{position}"
    shutil.copytree(pristine, root)
    path = log_path(root)
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        del data[position:]
    else:
        data[position] ^= 0xFF
    path.write_bytes(bytes(data))
    return root


def test_truncation_at_every_byte_of_the_last_record(pristine: Path, tmp_path: Path) -> None:
    starts = frame_starts(pristine)
    size = log_path(pristine).stat().st_size
    assert recovered_data(pristine) == RECORDS
    for position in range(starts[-1], size):
        root = damaged_copy(pristine, tmp_path, "truncate", position)
        assert recovered_data(root) == RECORDS[:-1], position
        assert log_path(root).stat().st_size == starts[-1]  # the torn tail is cut off
        shutil.rmtree(root)


def test_corruption_at_every_byte_of_the_last_record(pristine: Path, tmp_path: Path) -> None:
    """A bad body in the last frame is an interrupted write and is cut off; a bad header
    cannot come from an interrupted write, so it is refused as corruption."""
    from actors.storage.framing import HEADER

    starts = frame_starts(pristine)
    size = log_path(pristine).stat().st_size
    for position in range(starts[-1], size):
        root = damaged_copy(pristine, tmp_path, "corrupt", position)
        if position < starts[-1] + HEADER.size:
            with pytest.raises(CorruptLog):
                recovered_data(root)
        else:
            assert recovered_data(root) == RECORDS[:-1], position
        shutil.rmtree(root)


def test_truncation_anywhere_keeps_the_records_before_it(pristine: Path, tmp_path: Path) -> None:
    starts = frame_starts(pristine)
    size = log_path(pristine).stat().st_size
    for position in random.Random(7).sample(range(starts[1], size), 40):
        root = damaged_copy(pristine, tmp_path, "truncate", position)
        intact = sum(1 for start in starts[1:] if start <= position)
        assert recovered_data(root) == RECORDS[:intact], position
        shutil.rmtree(root)


def test_corruption_before_the_last_record_is_refused_not_cut(
    pristine: Path, tmp_path: Path
) -> None:
    """Cutting there would drop acknowledged records: the stream fails until repaired."""
    starts = frame_starts(pristine)
    for position in random.Random(8).sample(range(starts[0], starts[-1]), 40):
        root = damaged_copy(pristine, tmp_path, "corrupt", position)
        size = log_path(root).stat().st_size
        with pytest.raises(CorruptLog):
            recovered_data(root)
        assert log_path(root).stat().st_size == size  # nothing was changed
        shutil.rmtree(root)


def test_a_recovered_stream_takes_new_appends(pristine: Path, tmp_path: Path) -> None:
    root = damaged_copy(pristine, tmp_path, "truncate", log_path(pristine).stat().st_size - 3)

    async def append_and_read(streams: Streams) -> bytes:
        await streams.append("s", AppendRequest(TEXT, b"+new"))
        return (await streams.read("s", Sentinel.START, 1 << 20)).data

    assert on_disk(root, append_and_read) == b"".join(RECORDS[:-1]) + b"+new"


async def test_a_damaged_log_is_refused_without_reopening_until_its_back_off_passes(
    pristine: Path,
    tmp_path: Path,
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Restart intensity: a damaged log is opened (and logged) once per back-off, not per
    request; each request gets a problem+json naming the repair."""
    starts = frame_starts(pristine)
    root = damaged_copy(pristine, tmp_path, "corrupt", starts[1] + 20)
    storage = FileStorage(root, durable=True)
    opens = 0
    real_replay = storage_replay

    def counted_replay(*args: Any) -> Any:
        nonlocal opens
        opens += 1
        return real_replay(*args)

    monkeypatch.setattr(files, "replay", counted_replay)
    try:
        async with trio.open_nursery() as nursery:
            registry = Registry(storage, refusal_backoff=30)
            await nursery.start(registry.run)
            streams = Streams(registry)
            for _ in range(50):
                with pytest.raises(ProtocolError) as refused:
                    await streams.head("s")
                assert refused.value.code == "LOG_DAMAGED"
                assert "fsck" in refused.value.detail
            assert opens == 1
            assert sum("is refused" in r.getMessage() for r in caplog.records) == 1
            await trio.sleep(31)
            with pytest.raises(ProtocolError):
                await streams.head("s")
            assert opens == 2
            nursery.cancel_scope.cancel()
    finally:
        storage.close()
