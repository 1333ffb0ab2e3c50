"""Disk faults on write and fsync: a clear error, nothing partial visible, service resumes."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from actors import logs
from actors.logs import FileStorage
from actors.registry import Registry
from actors.service import Streams
from streams.errors import ProtocolError
from streams.machine import AppendRequest, CreateRequest
from streams.offsets import Sentinel
from streams.records import StreamConfig
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
        registry = Registry(storage)
        await nursery.start(registry.run)
        streams = Streams(registry)
        await streams.create("s", CreateRequest(StreamConfig(TEXT), body=b"a"))
        log_file = storage._path("s")
        size = log_file.stat().st_size

        real = getattr(logs, seam)
        monkeypatch.setattr(logs, seam, failing(error, real, partial=seam == "pwrite"))
        with pytest.raises(ProtocolError) as failure:
            await streams.append("s", AppendRequest(TEXT, b"lost"))
        assert failure.value.status == status
        if status == 503:
            assert failure.value.headers["Retry-After"]
        assert log_file.stat().st_size == size  # no partial frame left behind
        assert (await streams.read("s", Sentinel.START, 1 << 20)).data == b"a"

        monkeypatch.setattr(logs, seam, real)
        await streams.append("s", AppendRequest(TEXT, b"b"))
        assert (await streams.read("s", Sentinel.START, 1 << 20)).data == b"ab"
        nursery.cancel_scope.cancel()
    storage.close()

    storage = FileStorage(tmp_path, durable=True)
    assert await stored_data(storage, "s") == [b"a", b"b"]
    storage.close()
