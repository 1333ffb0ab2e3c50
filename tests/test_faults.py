"""Disk faults on write and fsync: a clear error, nothing partial visible, service resumes."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from actors.service import Fork, Streams
from actors.storage import file_io
from actors.storage.files import FileStorage
from streams.protocol.errors import ProtocolError
from streams.protocol.machine import AppendRequest, CreateRequest
from streams.protocol.offsets import Sentinel
from streams.protocol.records import StreamConfig
from tests.on_disk import started
from tests.stored import stored_data

TEXT = "text/plain"


def failing(error: int, real: Callable[..., Any], partial: bool = False) -> Callable[..., Any]:
    def call(fd: int, *args: Any) -> Any:
        if partial:  # some bytes reach the file before the error, as with a filling disk
            data, offset = args
            real(fd, bytes(data[: len(data) // 2]), offset)
        raise OSError(error, os.strerror(error))

    return call


@pytest.mark.parametrize(
    ("seam", "error", "status"),
    [
        ("pwrite", errno.ENOSPC, 503),
        ("pwrite", errno.EIO, 500),
        ("fdatasync", errno.ENOSPC, 503),
        ("fdatasync", errno.EIO, 500),
    ],
)
async def test_a_failed_commit_is_reported_invisible_and_recoverable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seam: str, error: int, status: int
) -> None:
    storage = FileStorage(tmp_path, durable=True)
    async with trio.open_nursery() as nursery:
        streams = Streams(await started(storage, nursery))
        await streams.create("s", CreateRequest(StreamConfig(TEXT), body=b"a"))
        log_file = storage._path("s")
        size = log_file.stat().st_size

        real = getattr(file_io, seam)
        monkeypatch.setattr(file_io, seam, failing(error, real, partial=seam == "pwrite"))
        with pytest.raises(ProtocolError) as failure:
            await streams.append("s", AppendRequest(TEXT, b"lost"))
        assert failure.value.status == status
        if status == 503:
            assert failure.value.headers["Retry-After"]
        assert log_file.stat().st_size == size  # no partial frame left behind
        assert (await streams.read("s", Sentinel.START, 1 << 20)).data == b"a"

        monkeypatch.setattr(file_io, seam, real)
        await streams.append("s", AppendRequest(TEXT, b"b"))
        assert (await streams.read("s", Sentinel.START, 1 << 20)).data == b"ab"
        nursery.cancel_scope.cancel()
    storage.close()

    storage = FileStorage(tmp_path, durable=True)
    assert await stored_data(storage, "s") == [b"a", b"b"]
    storage.close()


def failing_from(call_number: int, error: int, real: Callable[..., Any]) -> Callable[..., Any]:
    """The seam `real`, failing from its `call_number`-th call on, partway as a full disk."""
    fail = failing(error, real, partial=real is os.pwrite)
    calls = 0

    def call(fd: int, *args: Any) -> Any:
        nonlocal calls
        calls += 1
        return real(fd, *args) if calls < call_number else fail(fd, *args)

    return call


def files_under(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file())


@pytest.mark.parametrize("seam", ["pwrite", "fdatasync"])
async def test_a_create_failing_on_a_full_disk_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seam: str
) -> None:
    """It left a 0-byte log (the failed frame cut off) under data/streams."""
    storage = FileStorage(tmp_path, durable=True)
    async with trio.open_nursery() as nursery:
        streams = Streams(await started(storage, nursery))
        real = getattr(file_io, seam)
        monkeypatch.setattr(file_io, seam, failing_from(1, errno.ENOSPC, real))
        with pytest.raises(ProtocolError) as failure:
            await streams.create("s", CreateRequest(StreamConfig(TEXT), body=b"a"))
        assert failure.value.status == 503
        assert files_under(tmp_path / "streams") == []

        monkeypatch.setattr(file_io, seam, real)
        assert (await streams.create("s", CreateRequest(StreamConfig(TEXT)))).status == 201
        nursery.cancel_scope.cancel()
    storage.close()


@pytest.mark.parametrize("seam", ["pwrite", "fdatasync"])
@pytest.mark.parametrize("call_number", [1, 2], ids=["link-write", "fork-commit"])
async def test_a_fork_failing_on_a_full_disk_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seam: str, call_number: int
) -> None:
    """A fork writes its link with the source (1st write), then its own create (2nd). Either
    failing left a 0-byte log, or a link `.tmp` under data/forks."""
    storage = FileStorage(tmp_path, durable=True)
    async with trio.open_nursery() as nursery:
        streams = Streams(await started(storage, nursery))
        await streams.create("src", CreateRequest(StreamConfig(TEXT), body=b"a"))
        before = files_under(tmp_path / "streams")
        real = getattr(file_io, seam)
        monkeypatch.setattr(file_io, seam, failing_from(call_number, errno.ENOSPC, real))
        with pytest.raises(ProtocolError) as failure:
            await streams.create("f", CreateRequest(StreamConfig("")), Fork("src"))
        assert failure.value.status == 503
        assert files_under(tmp_path / "streams") == before
        assert files_under(tmp_path / "forks") == []  # neither a link nor a .tmp
        assert await storage.links("src") == {}

        monkeypatch.setattr(file_io, seam, real)
        assert (
            await streams.create("f", CreateRequest(StreamConfig("")), Fork("src"))
        ).status == 201
        assert list(await storage.links("src")) == ["f"]
        assert (await streams.read("f", Sentinel.START, 1 << 20)).data == b"a"
        nursery.cancel_scope.cancel()
    storage.close()
