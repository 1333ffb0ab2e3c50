"""One stream's log in a file: commits appended as frames, a checkpoint and a view beside it,
and a compaction's next log prepared, then renamed over it."""

from __future__ import annotations

import contextlib
import os
import struct
from collections.abc import Iterable

import attrs
import cbor2
import trio

from actors.storage import OwnedLog, Staged, file_io, frames, framing
from streams.protocol.extents import Slice

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


def read_checkpoint(path: str, read: framing.Read, size: int) -> tuple[int, int, bytes] | None:
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
            file_io.fdatasync(self.fd)
        _write_checkpoint(self.path, binding, state)

    async def save_view(self, view: bytes) -> None:
        if not self.refused:
            await trio.to_thread.run_sync(self._save_view, view)

    def _save_view(self, view: bytes) -> None:
        """Replaced whole; over synced log data only (as `_checkpoint`), so a view never
        reflects an offset that a power loss can take back and later appends fill again."""
        if not self.durable:
            file_io.fdatasync(self.fd)
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
        flags = os.O_RDWR | os.O_CREAT | os.O_TRUNC
        fd = file_io.open_file(self.path + COMPACT_SUFFIX, flags, 0o644)
        try:
            file_io.write_all(fd, frame, 0)
            file_io.fdatasync(fd)
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
            chunk = file_io.pread(self.fd, min(COPY_CHUNK, self.end - position), position)
            file_io.write_all(fd, chunk, size + position - keep_from)
            position += len(chunk)
        file_io.fdatasync(fd)
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
        file_io.fsync_dir(os.path.dirname(self.path))
        return shift

    def _write(self, staged: list[tuple[bytes, bytes]]) -> int:
        try:
            written = file_io.write_all(self.fd, frames(staged), self.end)
            if self.durable:
                file_io.fdatasync(self.fd)
            if self.unsynced_directory is not None:
                file_io.fsync_dir(self.unsynced_directory)
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
