"""Storage behind a small interface: one append-only log per stream, plus fork links.

`MemoryStorage` keeps logs in byte arrays, `FileStorage` in files under a data directory.
Both use the same frames, so an actor recovers the same way from either. Only actors call
these; blocking file I/O runs in worker threads so one slow disk never stalls the loop.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

import attrs
import cbor2
import trio

from actors import framing
from streams import records
from streams.machine import Slice

# The two system calls a commit makes, and the one that opens files, as seams for
# fault-injection tests (a read-only data directory cannot be made by chmod for root).
pwrite = os.pwrite
fdatasync = os.fdatasync
open_file = os.open

# What opening for writing answers in a read-only data directory (mount, mode, attribute).
WRITE_REFUSED = (errno.EROFS, errno.EACCES, errno.EPERM)

log = logging.getLogger(__name__)


class CorruptLog(RuntimeError):
    """A log damaged before its last record: recovery will not drop acknowledged data."""


class DataDirLocked(RuntimeError):
    """Another process owns the data directory."""


class Log(Protocol):
    end: int

    def stage(self, meta: bytes, data: bytes) -> int:
        """Buffer one frame; returns where its data will sit."""

    async def commit(self) -> None:
        """Write everything staged, durable to the storage mode's promise."""

    async def read(self, slices: Iterable[Slice]) -> bytes: ...

    def close(self) -> None: ...


Recovered = list[tuple[records.Record, int]]


class Storage(Protocol):
    async def open(self, name: str) -> tuple[Log, Recovered] | None: ...

    async def create(self, name: str) -> Log: ...

    async def remove(self, name: str) -> None: ...

    async def add_link(self, source: str, fork: str, incarnation: str) -> None: ...

    async def remove_link(self, source: str, fork: str) -> None: ...

    async def links(self, source: str) -> dict[str, str]:
        """Forks recorded against `source`: fork name to the fork's incarnation."""

    async def incarnation(self, name: str) -> str | None:
        """The incarnation of the stream stored under `name`, if any."""

    async def expiring(self) -> list[tuple[str, int | None, float | None]]:
        """(name, TTL, Expires-At) of every stored stream that can expire."""

    async def fork_sources(self) -> list[str]:
        """Streams that have, or had, forks recorded against them."""

    def close(self) -> None: ...


def _recover(buffer: bytes | bytearray, repair: bool = False) -> tuple[Recovered, int]:
    """The records of a log and where its valid prefix ends; a torn tail is left out.
    Damage further back raises `CorruptLog`, unless `repair` accepts the loss."""
    recovered: Recovered = []
    end = 0
    for item in framing.scan(buffer):
        if isinstance(item, int):
            end = item
            if not repair and not framing.torn(buffer, end):
                raise CorruptLog(f"damaged record at byte {end} of {len(buffer)}")
            break
        data = bytes(buffer[item.data_locator : item.data_locator + item.data_length])
        recovered.append((records.decode(item.meta, data), item.data_locator))
    if recovered and not isinstance(recovered[0][0], records.Create):
        raise ValueError("log does not start with a create record")
    return recovered, end


@attrs.define
class Staged:
    """Frames waiting for a log's next commit."""

    frames: list[bytes] = attrs.field(factory=list)
    size: int = 0

    def add(self, end: int, meta: bytes, data: bytes) -> int:
        """Stage one frame after `end` (the committed end); returns where its data will sit."""
        frame = framing.frame(meta, data)
        locator = end + self.size + framing.data_offset(meta)
        self.frames.append(frame)
        self.size += len(frame)
        return locator

    def take(self) -> bytes:
        payload = b"".join(self.frames)
        self.frames.clear()
        self.size = 0
        return payload


# ---- memory ------------------------------------------------------------------------------


@attrs.define
class MemoryLog:
    buffer: bytearray
    _on_close: Callable[[bytearray], None]  # the storage keeps the closed log
    end: int = 0
    _staged: Staged = attrs.field(factory=Staged)

    def stage(self, meta: bytes, data: bytes) -> int:
        return self._staged.add(self.end, meta, data)

    async def commit(self) -> None:
        self.buffer += self._staged.take()
        self.end = len(self.buffer)

    async def read(self, slices: Iterable[Slice]) -> bytes:
        view = memoryview(self.buffer)
        return b"".join(view[s.locator + s.skip : s.locator + s.skip + s.length] for s in slices)

    def close(self) -> None:
        self._staged.take()
        self._on_close(self.buffer)


@attrs.define
class MemoryStorage:
    """A running actor appends to its log's bytearray; when it stops, the log is kept as a
    compact `bytes` copy (100k streams created then idle: RSS 163 -> 155 MiB)."""

    _logs: dict[str, bytes | bytearray] = attrs.field(factory=dict)
    _links: dict[str, dict[str, str]] = attrs.field(factory=dict)

    async def open(self, name: str) -> tuple[Log, Recovered] | None:
        stored = self._logs.get(name)
        if not stored:
            return None
        recovered, end = _recover(stored)
        return self._live(name, bytearray(memoryview(stored)[:end])), recovered

    async def create(self, name: str) -> Log:
        return self._live(name, bytearray())

    def _live(self, name: str, buffer: bytearray) -> MemoryLog:
        self._logs[name] = buffer

        def keep(closed: bytearray) -> None:
            if self._logs.get(name) is closed:  # not removed or recreated meanwhile
                self._logs[name] = bytes(closed)

        return MemoryLog(buffer, keep, len(buffer))

    async def remove(self, name: str) -> None:
        self._logs.pop(name, None)
        self._links.pop(name, None)

    async def add_link(self, source: str, fork: str, incarnation: str) -> None:
        self._links.setdefault(source, {})[fork] = incarnation

    async def remove_link(self, source: str, fork: str) -> None:
        self._links.get(source, {}).pop(fork, None)

    async def links(self, source: str) -> dict[str, str]:
        return dict(self._links.get(source, {}))

    async def expiring(self) -> list[tuple[str, int | None, float | None]]:
        return []  # nothing outlives the process, and live actors report their own

    async def fork_sources(self) -> list[str]:
        return []

    async def incarnation(self, name: str) -> str | None:
        opened = await self.open(name)
        if opened is None:
            return None
        create = opened[1][0][0]
        assert isinstance(create, records.Create)
        return create.incarnation

    def close(self) -> None:
        pass


# ---- files -------------------------------------------------------------------------------


def _digest(name: str) -> str:
    """Names map to fixed-length hex file names: nothing in a name can reach the path."""
    return hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()


def _open_writable(path: str | Path, create: int = 0) -> tuple[int, int]:
    """A descriptor open for reading and writing or, where writing is refused, for reading
    only; with the errno of the refusal (0 if none)."""
    try:
        return open_file(path, os.O_RDWR | create, 0o644), 0
    except OSError as error:
        if error.errno not in WRITE_REFUSED:
            raise
        return open_file(path, os.O_RDONLY), error.errno


def _fsync_dir(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_file(path: Path, data: bytes, durable: bool) -> None:
    """A small file written whole, through the same seams as a log commit."""
    fd = open_file(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        written = 0
        while written < len(data):
            written += pwrite(fd, data[written:], written)
        if durable:
            fdatasync(fd)
    finally:
        os.close(fd)


@attrs.define
class FileLog:
    fd: int
    end: int
    durable: bool
    unsynced_directory: str | None = None  # a new file's directory, synced on first commit
    refused: int = 0  # why the log is open read-only (an errno), 0 if it is writable
    _staged: Staged = attrs.field(factory=Staged)

    def stage(self, meta: bytes, data: bytes) -> int:
        return self._staged.add(self.end, meta, data)

    async def commit(self) -> None:
        payload = self._staged.take()
        if self.refused:
            reason = os.strerror(self.refused)
            raise OSError(self.refused, f"{reason}: the log was opened read-only")
        await trio.to_thread.run_sync(self._write, payload)
        self.end += len(payload)

    def _write(self, payload: bytes) -> None:
        view = memoryview(payload)
        try:
            written = 0
            while written < len(view):
                written += pwrite(self.fd, view[written:], self.end + written)
            if self.durable:
                fdatasync(self.fd)
            if self.unsynced_directory is not None:
                _fsync_dir(self.unsynced_directory)
                self.unsynced_directory = None
        except OSError:
            # Leave no partial frame behind; the actor fails stop and recovers from disk.
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, self.end)
            raise

    async def read(self, slices: Iterable[Slice]) -> bytes:
        wanted = list(slices)
        return await trio.to_thread.run_sync(self._read, wanted)

    def _read(self, slices: list[Slice]) -> bytes:
        """One pread over the span (slices are in file order, apart only by frame headers),
        then the data parts cut out of it."""
        first = slices[0].locator + slices[0].skip
        last = slices[-1].locator + slices[-1].skip + slices[-1].length
        data = os.pread(self.fd, last - first, first)
        if len(slices) == 1:
            return data
        span = memoryview(data)
        return b"".join(
            span[s.locator + s.skip - first : s.locator + s.skip - first + s.length] for s in slices
        )

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


@attrs.define
class FileStorage:
    root: Path
    durable: bool
    _lock_fd: int = -1
    refused: int = attrs.field(default=0, init=False)  # why it is read-only: an errno, or 0

    def __attrs_post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "streams").mkdir(exist_ok=True)
        (self.root / "forks").mkdir(exist_ok=True)
        fd, self.refused = _open_writable(self.root / "LOCK", os.O_CREAT)  # flock needs no write
        if self.refused:
            log.warning(
                "data directory %s is read-only (%s): serving reads, refusing writes",
                self.root,
                os.strerror(self.refused),
            )
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            os.close(fd)
            if error.errno in (errno.EAGAIN, errno.EACCES):
                raise DataDirLocked(
                    f"data directory {self.root} is in use by another process; "
                    "one process owns a data directory (run a single worker)"
                ) from error
            raise
        self._lock_fd = fd

    def close(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def _file(self, name: str) -> str:
        """A plain string: pathlib interns path parts, which would grow with every stream."""
        digest = _digest(name)
        return os.path.join(self.root, "streams", digest[:2], f"{digest}.log")

    def _path(self, name: str) -> Path:
        return Path(self._file(name))

    def _links_dir(self, source: str) -> Path:
        return self.root / "forks" / _digest(source)

    async def open(self, name: str) -> tuple[Log, Recovered] | None:
        return await trio.to_thread.run_sync(self._open, name)

    def _open(self, name: str) -> tuple[Log, Recovered] | None:
        path = self._file(name)
        try:
            fd, refused = _open_writable(path)
        except FileNotFoundError:
            return None
        try:
            size = os.fstat(fd).st_size
            buffer = os.pread(fd, size, 0) if size else b""
            recovered, end = _recover(buffer)
            if end < size and not refused:  # read-only: serve the valid prefix, change nothing
                os.ftruncate(fd, end)
                os.fsync(fd)
            if not recovered:
                os.close(fd)
                if not refused:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(path)
                return None
        except BaseException:
            os.close(fd)
            raise
        return FileLog(fd, end, self.durable, refused=refused), recovered

    async def create(self, name: str) -> Log:
        return await trio.to_thread.run_sync(self._create, name)

    def _create(self, name: str) -> Log:
        path = self._file(name)
        directory = os.path.dirname(path)
        with contextlib.suppress(FileExistsError):
            os.mkdir(directory)
        fd = open_file(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        # The first commit syncs the directory entry too, in the same worker-thread call.
        return FileLog(fd, 0, self.durable, directory if self.durable else None)

    async def remove(self, name: str) -> None:
        await trio.to_thread.run_sync(self._remove, name)

    def _remove(self, name: str) -> None:
        path = self._file(name)
        try:
            os.unlink(path)
        except FileNotFoundError:
            return  # a create that failed before its file existed; links need the file
        links = self._links_dir(name)
        if links.exists():
            for link in links.iterdir():
                link.unlink(missing_ok=True)
            links.rmdir()
        if self.durable:
            _fsync_dir(os.path.dirname(path))

    async def add_link(self, source: str, fork: str, incarnation: str) -> None:
        await trio.to_thread.run_sync(self._add_link, source, fork, incarnation)

    def _add_link(self, source: str, fork: str, incarnation: str) -> None:
        directory = self._links_dir(source)
        directory.mkdir(exist_ok=True)
        path = directory / _digest(fork)
        temporary = path.with_suffix(".tmp")
        try:
            _write_file(temporary, cbor2.dumps({"fork": fork, "id": incarnation}), self.durable)
            temporary.replace(path)
        except BaseException:
            temporary.unlink(missing_ok=True)  # a full disk left it behind, 0 bytes or torn
            raise
        if self.durable:
            _fsync_dir(directory)

    async def remove_link(self, source: str, fork: str) -> None:
        path = self._links_dir(source) / _digest(fork)
        await trio.to_thread.run_sync(lambda: path.unlink(missing_ok=True))

    async def links(self, source: str) -> dict[str, str]:
        return await trio.to_thread.run_sync(self._read_links, source)

    def _read_links(self, source: str) -> dict[str, str]:
        directory = self._links_dir(source)
        if not directory.exists():
            return {}
        found = {}
        for path in directory.iterdir():
            if path.suffix == ".tmp":
                continue
            doc = cbor2.loads(path.read_bytes())
            found[doc["fork"]] = doc["id"]
        return found

    async def incarnation(self, name: str) -> str | None:
        meta = await trio.to_thread.run_sync(self._create_meta, self._file(name))
        return meta.get("id") if meta else None

    async def expiring(self) -> list[tuple[str, int | None, float | None]]:
        return await trio.to_thread.run_sync(self._expiring)

    async def fork_sources(self) -> list[str]:
        return await trio.to_thread.run_sync(self._fork_sources)

    def _fork_sources(self) -> list[str]:
        names = []
        for directory in (self.root / "forks").iterdir():
            digest = directory.name
            meta = self._create_meta(self.root / "streams" / digest[:2] / f"{digest}.log")
            if meta is None:  # the source is gone; only a crash mid-delete leaves this
                with contextlib.suppress(OSError):  # a read-only directory keeps it
                    for link in directory.iterdir():
                        link.unlink(missing_ok=True)
                    directory.rmdir()
            else:
                names.append(meta["name"])
        return names

    def _expiring(self) -> list[tuple[str, int | None, float | None]]:
        found = []
        for path in (self.root / "streams").glob("*/*.log"):
            meta = self._create_meta(path)
            if meta and (meta.get("ttl") is not None or meta.get("exp") is not None):
                found.append((meta["name"], meta.get("ttl"), meta.get("exp")))
        return found

    @staticmethod
    def _create_meta(path: str | Path) -> dict[str, Any] | None:
        """The metadata of a log's first (create) record, without reading the log."""
        try:
            with open(path, "rb") as file:
                header = file.read(framing.HEADER.size)
                if len(header) < framing.HEADER.size:
                    return None
                _, meta_length, _, _ = framing.HEADER.unpack(header)
                meta = cbor2.loads(file.read(min(meta_length, framing.MAX_META)))
        except (FileNotFoundError, ValueError, cbor2.CBORDecodeError):
            return None
        if (
            isinstance(meta, dict)
            and meta.get("k") == "create"
            and isinstance(meta.get("name"), str)
        ):
            return meta
        return None  # not a create record, or damaged: recovery will say which
