"""A read-only data directory: reads are served, writes are refused with a clear 503 and
change nothing.

Root ignores file modes, and tests run as root in CI, so the directory is made read-only
through the `open_file` seam (every open for writing refused, as a read-only mount or mode
would); the same scenario runs with a real `chmod` where the tests do not run as root.
"""

from __future__ import annotations

import errno
import os
import stat
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from actors.service import Fork, Streams
from actors.storage import DataDirLocked, file_io
from actors.storage.files import FileStorage
from streams.protocol.errors import ProtocolError
from streams.protocol.machine import AppendRequest, CreateRequest
from streams.protocol.offsets import Sentinel
from streams.protocol.records import StreamConfig
from tests.on_disk import started
from tests.server import running_server

TEXT = "text/plain"
WRITING = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC


def refusing_writes(error: int) -> Callable[..., int]:
    def open_file(path: Any, flags: int, *args: Any) -> int:
        if flags & WRITING:
            raise OSError(error, os.strerror(error), str(path))
        return os.open(path, flags, *args)

    return open_file


def chmod_tree(root: Path, writable: bool) -> None:
    for path in [root, *root.rglob("*")]:
        mode = path.stat().st_mode
        write = stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH
        path.chmod(mode | stat.S_IWUSR if writable else mode & ~write)


@pytest.fixture(params=["EROFS", "EACCES", "EPERM", "chmod"])
def make_read_only(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[Path], int]]:
    """Makes a data directory read-only; returns the errno its writes will meet."""
    chmodded: list[Path] = []

    def apply(root: Path) -> int:
        if request.param == "chmod":
            chmod_tree(root, writable=False)
            chmodded.append(root)
            return errno.EACCES
        error: int = getattr(errno, request.param)
        monkeypatch.setattr(file_io, "open_file", refusing_writes(error))
        return error

    if request.param == "chmod" and os.geteuid() == 0:
        pytest.skip("root ignores file modes; the open_file seam covers this case as root")
    yield apply
    for root in chmodded:
        chmod_tree(root, writable=True)


def snapshot(root: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


async def write_data(root: Path) -> int:
    """Streams to read back: `s`, its fork `f`, and `t` whose log has a torn tail."""
    storage = FileStorage(root, durable=True)
    async with trio.open_nursery() as nursery:
        streams = Streams(await started(storage, nursery))
        await streams.create("s", CreateRequest(StreamConfig(TEXT), body=b"hello "))
        await streams.create("f", CreateRequest(StreamConfig("")), Fork("s"))
        await streams.append("s", AppendRequest(TEXT, b"world"))
        await streams.create("t", CreateRequest(StreamConfig(TEXT), body=b"whole"))
        nursery.cancel_scope.cancel()
    with open(storage._path("t"), "ab") as torn:
        torn.write(b"\x00\x00\x01")  # an interrupted write: a partial frame header
    storage.close()
    return storage._path("t").stat().st_size


async def test_reads_are_served_and_writes_refused(
    tmp_path: Path, make_read_only: Callable[[Path], int]
) -> None:
    torn_size = await write_data(tmp_path)
    before = snapshot(tmp_path)
    error = make_read_only(tmp_path)

    storage = FileStorage(tmp_path, durable=True)
    assert storage.refused == error
    async with trio.open_nursery() as nursery:
        streams = Streams(await started(storage, nursery))

        async def read(name: str) -> bytes:
            return (await streams.read(name, Sentinel.START, 1 << 20)).data

        assert await read("s") == b"hello world"
        assert await read("f") == b"hello "
        assert await read("t") == b"whole"  # the torn tail is left out, and left in place
        assert (await streams.head("s")).status == 200

        writes = [
            streams.append("s", AppendRequest(TEXT, b"!")),
            streams.append("f", AppendRequest(TEXT, b"!")),
            streams.create("new", CreateRequest(StreamConfig(TEXT), body=b"x")),
            streams.create("g", CreateRequest(StreamConfig("")), Fork("s")),
        ]
        for write in writes:
            with pytest.raises(ProtocolError) as refused:
                await write
            assert refused.value.status == 503
            assert refused.value.code == "STORAGE_READ_ONLY"
            assert os.strerror(error) in refused.value.detail
        assert await read("s") == b"hello world"  # the actor that refused still reads
        nursery.cancel_scope.cancel()
    storage.close()

    assert snapshot(tmp_path) == before
    assert storage._path("t").stat().st_size == torn_size


async def test_a_read_only_directory_still_excludes_a_second_process(
    tmp_path: Path, make_read_only: Callable[[Path], int]
) -> None:
    await write_data(tmp_path)
    make_read_only(tmp_path)
    first = FileStorage(tmp_path, durable=True)
    with pytest.raises(DataDirLocked):
        FileStorage(tmp_path, durable=True)
    first.close()


# ---- the real server on a chmod-ed directory ----------------------------------------------

# As root, the server runs without the capabilities that let root ignore file modes.
WITHOUT_OVERRIDE = [
    "setpriv",
    "--bounding-set=-dac_override,-dac_read_search",
    "--inh-caps=-dac_override,-dac_read_search",
]


def unprivileged_wrapper(probe: Path) -> list[str]:
    """A command prefix under which a chmod-ed directory refuses writes, or skip."""
    if os.geteuid() != 0:
        return []
    probe.mkdir()
    probe.chmod(0o555)
    try:
        made = subprocess.run([*WITHOUT_OVERRIDE, "touch", str(probe / "x")], capture_output=True)
    except FileNotFoundError:
        pytest.skip("running as root and setpriv is not installed: chmod cannot bind root")
    finally:
        probe.chmod(0o755)
    if made.returncode == 0 or b"Permission denied" not in made.stderr:
        pytest.skip(f"setpriv cannot drop CAP_DAC_OVERRIDE here: {made.stderr!r}")
    return WITHOUT_OVERRIDE


def test_the_server_serves_a_chmod_read_only_directory(tmp_path: Path) -> None:
    wrapper = unprivileged_wrapper(tmp_path / "probe")
    data_dir = tmp_path / "data"
    text = {"Content-Type": TEXT}
    with (
        running_server(data_dir) as base_url,
        httpx.Client(base_url=f"{base_url}/v1/stream/", timeout=10) as http,
    ):
        assert http.put("s", content=b"hello ", headers=text).status_code == 201
        assert http.put("f", headers={"Stream-Forked-From": "s"}).status_code == 201
        assert http.put("alone", content=b"a", headers=text).status_code == 201
        assert http.post("s", content=b"world", headers=text).status_code == 204
    before = snapshot(data_dir)
    chmod_tree(data_dir, writable=False)
    try:
        with (
            running_server(data_dir, wrapper=wrapper, ready="/healthz") as base_url,
            httpx.Client(base_url=f"{base_url}/v1/stream/", timeout=10) as http,
        ):
            # Alive and serving reads, but not ready for traffic that writes.
            readiness = http.get(f"{base_url}/readyz")
            assert readiness.status_code == 503
            assert readiness.text == "not ready: storage is read-only: Permission denied\n"
            assert http.get("s", params={"offset": "-1"}).content == b"hello world"
            assert http.get("f", params={"offset": "-1"}).content == b"hello "
            assert http.head("alone").status_code == 200
            refused = [
                http.post("s", content=b"!", headers=text),
                http.put("new", content=b"x", headers=text),
                http.put("g", headers={"Stream-Forked-From": "s"}),
                http.delete("alone"),  # unlink refused
                http.delete("s"),  # has a fork: a soft delete, a write refused
            ]
            for response in refused:
                assert response.status_code == 503
                assert response.headers["content-type"] == "application/problem+json"
                problem = response.json()
                assert problem["code"] == "STORAGE_READ_ONLY"
                assert "Permission denied" in problem["detail"]
            assert http.get("s", params={"offset": "-1"}).content == b"hello world"
            assert http.head("alone").status_code == 200
    finally:
        chmod_tree(data_dir, writable=True)
    assert snapshot(data_dir) == before
    logged = "".join(p.read_text() for p in tmp_path.glob("server-*.log"))
    assert "is read-only (Permission denied): serving reads, refusing writes" in logged


async def test_a_file_system_turning_read_only_under_a_running_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As after `errors=remount-ro`: open logs meet EROFS on write, new opens are refused."""
    storage = FileStorage(tmp_path, durable=True)
    async with trio.open_nursery() as nursery:
        streams = Streams(await started(storage, nursery))
        await streams.create("s", CreateRequest(StreamConfig(TEXT), body=b"kept"))

        def read_only_fs(fd: int, *args: Any) -> int:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))

        monkeypatch.setattr(file_io, "pwrite", read_only_fs)
        monkeypatch.setattr(file_io, "open_file", refusing_writes(errno.EROFS))
        with pytest.raises(ProtocolError) as refused:
            await streams.append("s", AppendRequest(TEXT, b"lost"))
        assert (refused.value.status, refused.value.code) == (503, "STORAGE_READ_ONLY")
        assert "Read-only file system" in refused.value.detail
        assert (await streams.read("s", Sentinel.START, 1 << 20)).data == b"kept"
        nursery.cancel_scope.cancel()
    storage.close()
