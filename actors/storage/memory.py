"""Logs in memory: byte arrays with the same frames as files, nothing on disk."""

from __future__ import annotations

from collections.abc import Iterable

import attrs
import trio

from actors.storage import (
    OFFLOAD_BYTES,
    Fold,
    Log,
    OwnedLog,
    Restore,
    Staged,
    framed,
    framing,
    replay,
)
from streams.protocol.extents import Slice


@attrs.define
class MemoryLog(OwnedLog):
    buffer: bytearray
    _storage: MemoryStorage
    _name: str
    end: int = 0
    _staged: Staged = attrs.field(factory=Staged)
    _next: bytes | None = None  # a compaction's prepared log

    @property
    def _current(self) -> bool:
        """Not removed or created again meanwhile."""
        return self._storage._logs.get(self._name) is self.buffer

    def stage(self, meta: bytes, data: bytes) -> int:
        return self._staged.add(self.end, meta, data)

    async def commit(self) -> None:
        self.buffer += await framed(self._staged.take())
        self.end = len(self.buffer)

    async def read(self, slices: Iterable[Slice]) -> bytes:
        view = memoryview(self.buffer)
        return b"".join(view[s.locator + s.skip : s.locator + s.skip + s.length] for s in slices)

    async def checkpoint(self, state: bytes) -> None:
        if self._current:
            self._storage._checkpoints[self._name] = (self.end, state)

    async def save_view(self, view: bytes) -> None:
        if self._current:
            self._storage._views[self._name] = view

    async def load_view(self) -> bytes | None:
        return self._storage._views.get(self._name)

    async def prepare_restart(self, meta: bytes, data: bytes) -> int:
        self._next = framing.frame(meta, data)
        return framing.data_offset(meta)

    async def restart(self, keep_from: int) -> int:
        assert self._next is not None, "restart without prepare_restart"
        self._storage._checkpoints.pop(self._name, None)
        self._storage._views.pop(self._name, None)
        prepared, self._next = self._next, None
        self.buffer[:] = prepared + self.buffer[keep_from:]
        self.end = len(self.buffer)
        return len(prepared) - keep_from

    def close(self) -> None:
        self._staged.take()
        if self._current:  # the storage keeps a compact copy of a closed log
            self._storage._logs[self._name] = bytes(self.buffer)


@attrs.define
class MemoryStorage:
    """A running actor appends to its log's bytearray; when it stops, the log is kept as a
    compact `bytes` copy (100k streams created then idle: RSS 163 -> 155 MiB)."""

    _logs: dict[str, bytes | bytearray] = attrs.field(factory=dict)
    _links: dict[str, dict[str, str]] = attrs.field(factory=dict)
    _checkpoints: dict[str, tuple[int, bytes]] = attrs.field(factory=dict)
    _views: dict[str, bytes] = attrs.field(factory=dict)

    async def open(self, name: str, fold: Fold, restore: Restore | None = None) -> Log | None:
        stored = self._logs.get(name)
        if not stored:
            return None
        stored = bytes(stored)  # a live log's bytearray may grow while a thread reads it
        start, blob = self._checkpoints.get(name, (0, None))  # b"" is a state too
        if blob is None or start > len(stored) or restore is None or not restore(blob):
            start = 0
        arguments = (framing.reader(stored), len(stored), fold, start)
        if len(stored) - start < OFFLOAD_BYTES:  # a thread hop would cost more than replay
            _, end, _ = replay(*arguments)
        else:
            _, end, _ = await trio.to_thread.run_sync(replay, *arguments)
        return self._live(name, bytearray(memoryview(stored)[:end]))

    async def create(self, name: str) -> Log:
        self._checkpoints.pop(name, None)
        self._views.pop(name, None)
        return self._live(name, bytearray())

    def _live(self, name: str, buffer: bytearray) -> MemoryLog:
        self._logs[name] = buffer
        return MemoryLog(buffer, self, name, len(buffer))

    async def remove(self, name: str, expired_at: float | None = None) -> bool:
        self._logs.pop(name, None)
        self._links.pop(name, None)
        self._checkpoints.pop(name, None)
        self._views.pop(name, None)
        return True  # one process: its actor decided the expiry

    async def add_link(self, source: str, fork: str, incarnation: str) -> None:
        self._links.setdefault(source, {})[fork] = incarnation

    async def remove_link(self, source: str, fork: str) -> None:
        self._links.get(source, {}).pop(fork, None)

    async def links(self, source: str) -> dict[str, str]:
        return dict(self._links.get(source, {}))

    async def expiring(self) -> list[tuple[str, int | None, float | None]]:
        return []  # nothing outlives the process, and live actors report their own

    async def due(self, before: float) -> list[tuple[str, float]]:
        return []  # one process: it knows every deadline

    async def fork_sources(self) -> list[str]:
        return []

    def count_logs(self) -> int:
        return len(self._logs)

    async def names(self) -> list[str]:
        return [name for name, log in self._logs.items() if log]  # b"": created, not committed

    def close(self) -> None:
        pass
