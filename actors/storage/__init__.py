"""Storage behind a small interface: one append-only log per stream, plus fork links.

Backends: `memory.MemoryStorage` keeps logs in byte arrays, `files.FileStorage` in files under
a data directory. Both use the same frames (`framing`), so an actor recovers the same way
from either. Only a stream's actor touches its log; blocking file I/O runs in worker threads
so one slow disk never stalls the loop. `tests/test_storage_contract.py` is the contract a
backend must pass.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol

import attrs
import trio

from actors.storage import framing
from streams.protocol import records
from streams.protocol.extents import Slice

OFFLOAD_BYTES = 1 << 20  # records at least this large are framed in a worker thread


class CorruptLog(RuntimeError):
    """A log damaged before its last record: recovery will not drop acknowledged data."""


class DataDirLocked(RuntimeError):
    """Another process owns the data directory."""


class Superseded(RuntimeError):
    """Another process changed the stream under this log (deleted it, created it again, or
    compacted it): the actor recovers afresh from storage."""


class Unavailable(RuntimeError):
    """The database failed a request (restarting, unreachable, the connection lost): the
    actor stops, its cached state with it, and the next request recovers from the database.
    A commit cut off so may or may not have taken effect: the caller retries, and a
    producer's sequence applies its append once either way."""


class Log(Protocol):
    end: int

    def stage(self, meta: bytes, data: bytes) -> int:
        """Buffer one frame; returns where its data will sit."""

    async def commit(self) -> None:
        """Write everything staged, durable to the storage mode's promise (and release what
        `hold` took)."""

    async def hold(self, fold: Fold) -> bool:
        """Before staging a commit: take what the commit needs held (a database row lock) and
        fold into the caller's state what other processes committed since `end`; True if
        anything was. Raises `Superseded` (nothing held). Logs owned by one process do
        nothing here."""

    async def release(self) -> None:
        """Let go of what `hold` took, if no commit did (a batch with nothing to write)."""

    async def refresh(self, fold: Fold) -> bool:
        """`hold` without holding anything: before a read, so that it sees every commit
        acknowledged by any process before it."""

    @property
    def accessed(self) -> float | None:
        """The latest time any process may have read or written the stream, as storage
        several processes share knows it after `open`, `hold` and `refresh` (a sliding TTL
        counts from it); None for a log only this process uses."""

    async def touched(self, at: float) -> None:
        """A read or write at `at`: shared storage keeps it for the other processes (at most
        so often)."""

    async def read(self, slices: Iterable[Slice]) -> bytes:
        """The data of `slices` (in log order, none past `end`), joined; none gives b""."""

    async def checkpoint(self, state: bytes) -> None:
        """Keep `state` as what the log holds up to its end, for the next `open`."""

    async def save_view(self, view: bytes) -> None:
        """Keep a State Protocol view beside the log, replacing the last (atomically; the
        view says which offset it reflects, and is checked before it is used)."""

    async def load_view(self) -> bytes | None: ...

    async def prepare_restart(self, meta: bytes, data: bytes) -> int:
        """Compaction, first step: write (and sync) beside the log a new log holding one
        record; returns where that record's data sits in it. Replaces one prepared before."""

    async def restart(self, keep_from: int) -> int:
        """Compaction, second step: the prepared log, then this log's frames from
        `keep_from` (a frame's start) to its end, replaces this log atomically (a crash
        leaves the old log or the new one); returns how far the kept frames moved.
        Checkpoints of the old log are dropped."""

    def close(self) -> None: ...


# Recovery hands each record to a fold: (record without its data, data locator, data length).
Fold = Callable[[records.Record, int, int], None]
# ... unless a checkpoint covers a prefix of the log: `restore` takes it (False: unusable),
# and only the records after that prefix are folded.
Restore = Callable[[bytes], bool]


class OwnedLog:
    """`hold`, `release` and `refresh` of a log only its actor commits to (memory, files):
    nothing changes under it, so there is nothing to hold or fold."""

    async def hold(self, fold: Fold) -> bool:
        return False

    async def release(self) -> None:
        pass

    async def refresh(self, fold: Fold) -> bool:
        return False

    @property
    def accessed(self) -> float | None:
        return None

    async def touched(self, at: float) -> None:
        pass


class Storage(Protocol):
    async def open(self, name: str, fold: Fold, restore: Restore | None = None) -> Log | None:
        """The stream's log, its records replayed through `fold` first (in a worker thread,
        reading the log a window at a time); None if there is no such stream."""

    async def create(self, name: str) -> Log: ...

    async def remove(self, name: str, expired_at: float | None = None) -> bool:
        """The stream goes; True. An expiry (`expired_at`, now) on storage several processes
        share is decided there, by every process's accesses: False if it is not due."""

    async def add_link(self, source: str, fork: str, incarnation: str) -> None: ...

    async def remove_link(self, source: str, fork: str) -> None: ...

    async def links(self, source: str) -> dict[str, str]:
        """Forks recorded against `source`: fork name to the fork's incarnation."""

    async def expiring(self) -> list[tuple[str, int | None, float | None]]:
        """(name, TTL, Expires-At) of every stored stream that can expire."""

    async def due(self, before: float) -> list[tuple[str, float]]:
        """(name, deadline) of the streams due to expire before `before` by what every
        process sharing the storage did: only shared storage (postgres) has any a process
        does not know already."""

    async def fork_sources(self) -> list[str]:
        """Streams that have, or had, forks recorded against them."""

    async def names(self) -> list[str]:
        """Every stored stream (its log holds a committed first record), in no order: what
        the offline commands (`streams ls`, `streams export`) enumerate, asking each one's
        actor for the rest."""

    def close(self) -> None: ...


def replay(
    read: framing.Read, size: int, fold: Fold, start: int = 0, repair: bool = False
) -> tuple[int, int, int | None]:
    """Feeds the records of a log from `start` to `fold`; returns (records, end of the valid
    prefix, where the last record's frame starts). A torn tail is left out; damage further
    back raises `CorruptLog`, unless `repair` accepts the loss. Memory stays bounded: one
    window of the log, and metadata one record at a time."""
    count = end = 0
    last = None
    for item in framing.scan_source(read, size, start):
        if isinstance(item, int):
            end = item
            if not repair and end < size and not framing.torn_source(read, size, end):
                raise CorruptLog(f"damaged record at byte {end} of {size}")
            break
        record = records.decode(item.meta)
        first = (records.CreateRecord, records.BaseRecord)
        if count == 0 and start == 0 and not isinstance(record, first):
            raise ValueError("log does not start with a create record")
        fold(record, item.data_locator, item.data_length)
        last = item.data_locator - framing.data_offset(item.meta)
        count += 1
    return count, end, last


@attrs.define
class Staged:
    """Records waiting for a log's next commit; their frames (a copy and a checksum of the
    data) are made at commit, off the event loop when large."""

    records: list[tuple[bytes, bytes]] = attrs.field(factory=list)
    size: int = 0

    def add(self, end: int, meta: bytes, data: bytes) -> int:
        """Stage one record after `end` (the committed end); returns where its data will
        sit. Raises `framing.FrameTooLarge`, staging nothing, for what no frame can hold."""
        framing.check_size(len(meta), len(data))
        locator = end + self.size + framing.data_offset(meta)
        self.records.append((meta, data))
        self.size += framing.frame_size(meta, len(data))
        return locator

    def take(self) -> list[tuple[bytes, bytes]]:
        taken, self.records, self.size = self.records, [], 0
        return taken


def frames(staged: list[tuple[bytes, bytes]]) -> bytes:
    return b"".join(framing.frame(meta, data) for meta, data in staged)


async def framed(staged: list[tuple[bytes, bytes]]) -> bytes:
    """The frames of staged records, made in a worker thread when they are large."""
    if sum(len(data) for _, data in staged) < OFFLOAD_BYTES:
        return frames(staged)
    return await trio.to_thread.run_sync(frames, staged)
