"""Logs in files under a data directory: one file per stream, fork links, checkpoints."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import attrs
import cbor2
import trio

from actors.storage import (
    DataDirLocked,
    Fold,
    Log,
    OwnedLog,
    Restore,
    Staged,
    frames,
    framing,
    replay,
)
from streams.protocol.extents import Slice

# The system calls a commit makes, the one that opens files, and recovery's reads, as seams
# for fault-injection tests (a read-only data directory cannot be made by chmod for root).
pwrite = os.pwrite
fdatasync = os.fdatasync
open_file = os.open
pread = os.pread

# What opening for writing answers in a read-only data directory (mount, mode, attribute).
WRITE_REFUSED = (errno.EROFS, errno.EACCES, errno.EPERM)

logger = logging.getLogger(__name__)


CHECKPOINT_SUFFIX = ".ckpt"
VIEW_SUFFIX = ".view"  # a State Protocol view (state.checkpoint), checked when loaded
COMPACT_SUFFIX = ".compact"  # the next log of a compaction, until it replaces the log
COPY_CHUNK = 1 << 20  # a compaction copies the frames it keeps this much at a time


def _write_checkpoint(path: str, binding: bytes, state: bytes) -> None:
    """Beside the log, replaced whole. Not synced: a lost or damaged checkpoint only means
    a full replay."""
    temporary = path + CHECKPOINT_SUFFIX + ".tmp"
    with open(temporary, "wb") as file:
        file.write(framing.frame(binding, state))
    os.replace(temporary, path + CHECKPOINT_SUFFIX)


def _read_checkpoint(path: str, read: framing.Read, size: int) -> tuple[int, int, bytes] | None:
    """(end, last frame, state) of the log's checkpoint if the log still holds, at the
    position the checkpoint names, the very frame the checkpoint was taken after."""
    try:
        with open(path + CHECKPOINT_SUFFIX, "rb") as file:
            raw = file.read()
        first = next(framing.scan(raw))
        if not isinstance(first, framing.Scanned):
            return None
        binding = cbor2.loads(first.meta)
        end, at, header = binding["end"], binding["at"], binding["header"]
        framed = framing.HEADER.unpack(header)
    except (OSError, ValueError, KeyError, TypeError, struct.error, cbor2.CBORDecodeError):
        return None
    if at + framing.HEADER.size + framed[0] != end or end > size or read(at, len(header)) != header:
        return None
    return end, at, raw[first.data_locator : first.data_locator + first.data_length]


def _link_sources(directory: Path) -> Iterator[str]:
    for path in directory.iterdir():
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError, cbor2.CBORDecodeError):
            if path.suffix != ".tmp":
                yield cbor2.loads(path.read_bytes())["source"]


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


def _write_all(fd: int, data: bytes, at: int) -> int:
    """All of `data` at `at` (a write may take part of it); returns its length."""
    view = memoryview(data)
    written = 0
    while written < len(view):
        written += pwrite(fd, view[written:], at + written)
    return written


def _write_file(path: Path, data: bytes, durable: bool) -> None:
    """A small file written whole, through the same seams as a log commit."""
    fd = open_file(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        _write_all(fd, data, 0)
        if durable:
            fdatasync(fd)
    finally:
        os.close(fd)


@attrs.define
class FileLog(OwnedLog):
    fd: int
    path: str
    end: int
    last_frame: int | None  # where the last record's frame starts: checkpoints name it
    durable: bool
    unsynced_directory: str | None = None  # a new file's directory, synced on first commit
    refused: int = 0  # why the log is open read-only (an errno), 0 if it is writable
    _staged: Staged = attrs.field(factory=Staged)
    _next: tuple[int, int] | None = None  # a compaction's prepared log: descriptor, size

    def stage(self, meta: bytes, data: bytes) -> int:
        return self._staged.add(self.end, meta, data)

    async def commit(self) -> None:
        staged = self._staged.take()
        if self.refused:
            reason = os.strerror(self.refused)
            raise OSError(self.refused, f"{reason}: the log was opened read-only")
        if staged:
            last = self.end + sum(framing.frame_size(m, len(d)) for m, d in staged[:-1])
            self.end += await trio.to_thread.run_sync(self._write, staged)
            self.last_frame = last

    async def checkpoint(self, state: bytes) -> None:
        if self.last_frame is not None and not self.refused:
            header = os.pread(self.fd, framing.HEADER.size, self.last_frame)
            binding = cbor2.dumps({"end": self.end, "at": self.last_frame, "header": header})
            await trio.to_thread.run_sync(self._checkpoint, binding, state)

    def _checkpoint(self, binding: bytes, state: bytes) -> None:
        """A checkpoint covers only synced data: in file-fast mode, where commits are not
        synced, a power loss could otherwise leave a checkpoint over log bytes that never
        reached the disk (recovery trusts a checkpoint's range instead of checking it)."""
        if not self.durable:
            fdatasync(self.fd)
        _write_checkpoint(self.path, binding, state)

    async def save_view(self, view: bytes) -> None:
        if not self.refused:
            await trio.to_thread.run_sync(self._save_view, view)

    def _save_view(self, view: bytes) -> None:
        """Replaced whole; over synced log data only (as `_checkpoint`), so a view never
        reflects an offset that a power loss can take back and later appends fill again."""
        if not self.durable:
            fdatasync(self.fd)
        temporary = self.path + VIEW_SUFFIX + ".tmp"
        with open(temporary, "wb") as file:
            file.write(view)
        os.replace(temporary, self.path + VIEW_SUFFIX)

    async def load_view(self) -> bytes | None:
        def load() -> bytes | None:
            try:
                with open(self.path + VIEW_SUFFIX, "rb") as file:
                    return file.read()
            except FileNotFoundError:
                return None

        return await trio.to_thread.run_sync(load)

    async def prepare_restart(self, meta: bytes, data: bytes) -> int:
        if self.refused:
            raise OSError(self.refused, f"{os.strerror(self.refused)}: the log is read-only")
        await trio.to_thread.run_sync(self._prepare, framing.frame(meta, data))
        return framing.data_offset(meta)

    def _prepare(self, frame: bytes) -> None:
        self._discard_prepared()
        fd = open_file(self.path + COMPACT_SUFFIX, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            _write_all(fd, frame, 0)
            fdatasync(fd)
        except BaseException:
            os.close(fd)
            raise
        self._next = (fd, len(frame))

    def _discard_prepared(self) -> None:
        if self._next is not None:
            os.close(self._next[0])
            self._next = None

    async def restart(self, keep_from: int) -> int:
        return await trio.to_thread.run_sync(self._restart, keep_from)

    def _restart(self, keep_from: int) -> int:
        """The kept frames are copied after the prepared record and synced, then the new
        log is renamed over the old one: a crash before the rename leaves the old log whole,
        after it the new one."""
        assert self._next is not None, "restart without prepare_restart"
        fd, size = self._next
        position = keep_from
        while position < self.end:
            chunk = pread(self.fd, min(COPY_CHUNK, self.end - position), position)
            _write_all(fd, chunk, size + position - keep_from)
            position += len(chunk)
        fdatasync(fd)
        for suffix in (CHECKPOINT_SUFFIX, VIEW_SUFFIX):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path + suffix)
        os.replace(self.path + COMPACT_SUFFIX, self.path)
        self._next = None
        shift = size - keep_from
        kept = self.last_frame is not None and self.last_frame >= keep_from
        old, self.fd, self.end = self.fd, fd, self.end + shift
        self.last_frame = self.last_frame + shift if kept and self.last_frame is not None else 0
        os.close(old)
        _fsync_dir(os.path.dirname(self.path))
        return shift

    def _write(self, staged: list[tuple[bytes, bytes]]) -> int:
        try:
            written = _write_all(self.fd, frames(staged), self.end)
            if self.durable:
                fdatasync(self.fd)
            if self.unsynced_directory is not None:
                _fsync_dir(self.unsynced_directory)
                self.unsynced_directory = None
            return written
        except OSError:
            # Leave no partial frame behind; the actor fails stop and recovers from disk.
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, self.end)
            raise

    async def read(self, slices: Iterable[Slice]) -> bytes:
        wanted = list(slices)
        if not wanted:  # an empty range: nothing to read, as from memory
            return b""
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
        if self._next is not None:  # a compaction's first step, never taken further
            self._discard_prepared()
            with contextlib.suppress(OSError):
                os.unlink(self.path + COMPACT_SUFFIX)
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
            logger.warning(
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

    async def open(self, name: str, fold: Fold, restore: Restore | None = None) -> Log | None:
        return await trio.to_thread.run_sync(self._open, name, fold, restore)

    def _open(self, name: str, fold: Fold, restore: Restore | None) -> Log | None:
        path = self._file(name)
        try:
            fd, refused = _open_writable(path)
        except FileNotFoundError:
            return None
        try:
            size = os.fstat(fd).st_size

            def read(at: int, length: int) -> bytes:
                return pread(fd, length, at)

            start, last = 0, None
            checkpoint = _read_checkpoint(path, read, size) if restore is not None else None
            if checkpoint is not None and restore is not None and restore(checkpoint[2]):
                start, last = checkpoint[0], checkpoint[1]
            count, end, replayed_last = replay(read, size, fold, start)
            if end < size and not refused:  # read-only: serve the valid prefix, change nothing
                os.ftruncate(fd, end)
                os.fsync(fd)
            if not count and not start:
                os.close(fd)
                if not refused:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(path)
                return None
        except BaseException:
            os.close(fd)
            raise
        last = replayed_last if replayed_last is not None else last
        return FileLog(fd, path, end, last, self.durable, refused=refused)

    async def create(self, name: str) -> Log:
        return await trio.to_thread.run_sync(self._create, name)

    def _create(self, name: str) -> Log:
        path = self._file(name)
        directory = os.path.dirname(path)
        with contextlib.suppress(FileExistsError):
            os.mkdir(directory)
        for suffix in (CHECKPOINT_SUFFIX, VIEW_SUFFIX):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path + suffix)
        fd = open_file(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        # The first commit syncs the directory entry too, in the same worker-thread call.
        return FileLog(fd, path, 0, None, self.durable, directory if self.durable else None)

    async def remove(self, name: str, expired_at: float | None = None) -> bool:
        await trio.to_thread.run_sync(self._remove, name)
        return True  # one process: its actor decided the expiry

    def _remove(self, name: str) -> None:
        path = self._file(name)
        for suffix in (CHECKPOINT_SUFFIX, VIEW_SUFFIX, COMPACT_SUFFIX):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path + suffix)
        try:
            os.unlink(path)
        except FileNotFoundError:
            path = ""  # a create that failed before its file existed, or a source long gone
        links = self._links_dir(name)
        if links.exists():
            for link in links.iterdir():
                link.unlink(missing_ok=True)
            links.rmdir()
        if path and self.durable:
            _fsync_dir(os.path.dirname(path))

    async def add_link(self, source: str, fork: str, incarnation: str) -> None:
        await trio.to_thread.run_sync(self._add_link, source, fork, incarnation)

    def _add_link(self, source: str, fork: str, incarnation: str) -> None:
        directory = self._links_dir(source)
        directory.mkdir(exist_ok=True)
        path = directory / _digest(fork)
        temporary = path.with_suffix(".tmp")
        try:
            link = {"fork": fork, "id": incarnation, "source": source}
            _write_file(temporary, cbor2.dumps(link), self.durable)
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

    async def expiring(self) -> list[tuple[str, int | None, float | None]]:
        return await trio.to_thread.run_sync(self._expiring)

    async def due(self, before: float) -> list[tuple[str, float]]:
        return []  # one process (the data directory's lock): it knows every deadline

    async def fork_sources(self) -> list[str]:
        return await trio.to_thread.run_sync(self._fork_sources)

    def _fork_sources(self) -> list[str]:
        """The sources named by link folders; each one's actor checks and cleans its own."""
        names = []
        for directory in (self.root / "forks").iterdir():
            name = next(_link_sources(directory), None)
            if name is None:  # links written before they named their source
                digest = directory.name
                meta = self._create_meta(self.root / "streams" / digest[:2] / f"{digest}.log")
                name = meta["name"] if meta else None
            if name is not None:
                names.append(name)
        return names

    def count_logs(self) -> int:
        """The logs stored (soft-deleted fork sources too), by listing the directories:
        blocking, for a worker thread (/metrics)."""
        count = 0
        with os.scandir(self.root / "streams") as shards:
            for shard in shards:
                with contextlib.suppress(OSError), os.scandir(shard.path) as files:
                    count += sum(entry.name.endswith(".log") for entry in files)
        return count

    async def names(self) -> list[str]:
        return await trio.to_thread.run_sync(self._names)

    def _names(self) -> list[str]:
        """Each log's name from its first frame, as `_expiring` reads it; a log whose first
        frame is torn or damaged is left out (`streams fsck` reports it)."""
        metas = (self._create_meta(path) for path in (self.root / "streams").glob("*/*.log"))
        return [meta["name"] for meta in metas if meta is not None]

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
                raw = framing.first_meta(lambda at, length: os.pread(file.fileno(), length, at))
                meta = cbor2.loads(raw) if raw is not None else None
        except (FileNotFoundError, ValueError, cbor2.CBORDecodeError):
            return None
        if (
            isinstance(meta, dict)
            and meta.get("k") in ("create", "base")
            and isinstance(meta.get("name"), str)
        ):
            return meta
        return None  # not a create record, or damaged: recovery will say which
