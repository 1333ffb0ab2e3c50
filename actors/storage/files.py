"""Logs in files under a data directory: one file per stream (file_log.FileLog), fork
links, and the listings recovery and the sweeper read."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import cbor2
import trio

from actors.storage import DataDirLocked, Fold, Log, Restore, file_io, framing, replay
from actors.storage.file_log import (
    CHECKPOINT_SUFFIX,
    COMPACT_SUFFIX,
    VIEW_SUFFIX,
    FileLog,
    read_checkpoint,
)

logger = logging.getLogger(__name__)


def _link_sources(directory: Path) -> Iterator[str]:
    for path in directory.iterdir():
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError, cbor2.CBORDecodeError):
            if path.suffix != ".tmp":
                yield cbor2.loads(path.read_bytes())["source"]


def _digest(name: str) -> str:
    """Names map to fixed-length hex file names: nothing in a name can reach the path."""
    return hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()


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
        # flock needs no write access: a read-only directory is locked too
        fd, self.refused = file_io.open_writable(self.root / "LOCK", os.O_CREAT)
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
            fd, refused = file_io.open_writable(path)
        except FileNotFoundError:
            return None
        try:
            size = os.fstat(fd).st_size

            def read(at: int, length: int) -> bytes:
                return file_io.pread(fd, length, at)

            start, last = 0, None
            checkpoint = read_checkpoint(path, read, size) if restore is not None else None
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
        fd = file_io.open_file(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
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
            file_io.fsync_dir(os.path.dirname(path))

    async def add_link(self, source: str, fork: str, incarnation: str) -> None:
        await trio.to_thread.run_sync(self._add_link, source, fork, incarnation)

    def _add_link(self, source: str, fork: str, incarnation: str) -> None:
        directory = self._links_dir(source)
        directory.mkdir(exist_ok=True)
        path = directory / _digest(fork)
        temporary = path.with_suffix(".tmp")
        try:
            link = {"fork": fork, "id": incarnation, "source": source}
            file_io.write_file(temporary, cbor2.dumps(link), self.durable)
            temporary.replace(path)
        except BaseException:
            temporary.unlink(missing_ok=True)  # a full disk left it behind, 0 bytes or torn
            raise
        if self.durable:
            file_io.fsync_dir(directory)

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
