"""A stream's State Protocol view as its actor keeps it (docs/state.md): built on first use,
kept current by every commit, checkpointed beside the log, dropped under memory pressure.

The rules are the pure `state` package's (the fold, validation, a snapshot's form); this
module is the I/O around them. Like the log, a view is its actor's alone: the actor waits
while a worker thread folds a large record into it, so nothing else touches it meanwhile.
A view is built from its checkpoint (when one is usable) plus the log after it; a fork's
inherited range is read from its source by message, never from the source's log.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio

from actors import messages as m
from actors.storage import Log
from state import checkpoint, validation
from state.changes import parse_stored
from state.view import Entity, View, ViewTooLarge
from streams.protocol.errors import ProtocolError, bad_request
from streams.protocol.extents import Slice
from streams.protocol.headers import is_json
from streams.protocol.machine import StreamState

logger = logging.getLogger(__name__)

FOLD_CHUNK = 1 << 20  # the log is folded a chunk of whole records at a time
IN_THREAD_BYTES = 64 * 1024  # records at least this large are parsed off the event loop
SAVE_BYTES = 64 * 1024  # a view is checkpointed when it moved this far, and 1/8 of its size

# Reads a fork's inherited data: (source, start, bound, max_bytes), with record ends.
Inherited = Callable[[str, int, int, int], Awaitable[m.ReadResult]]


@attrs.frozen
class ViewLimits:
    """What one view, and all resident views together, may hold (docs/limits.md)."""

    max_entities: int = 1_000_000
    max_bytes: int = 256 << 20
    max_resident_bytes: int = 1 << 30


class ViewBudget:
    """The sizes of the resident views of a process, least recently used first: beyond the
    budget the oldest are dropped (their actors checkpoint them first), never truncated."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._sizes: OrderedDict[str, int] = OrderedDict()
        self.total = 0

    def note(self, name: str, size: int) -> list[str]:
        """`name`'s view now holds `size` bytes; returns the views to drop."""
        self.total += size - self._sizes.get(name, 0)
        self._sizes[name] = size
        self._sizes.move_to_end(name)
        victims, excess = [], self.total - self.max_bytes
        for other, held in self._sizes.items():
            if excess <= 0:
                break
            if other != name:
                victims.append(other)
                excess -= held
        return victims

    def forget(self, name: str) -> None:
        self.total -= self._sizes.pop(name, 0)


async def parsed(data: bytes) -> list[Any]:
    """The messages of stored JSON data (valid JSON: checked on append), parsed off the
    event loop when large."""
    if len(data) < IN_THREAD_BYTES:
        return parse_stored(data)
    return await trio.to_thread.run_sync(parse_stored, data)


def too_large(error: ViewTooLarge) -> ProtocolError:
    return ProtocolError(
        507,
        "Insufficient Storage",
        f"this stream's state view is beyond the server's bounds ({error}); plain reads work",
        code="STATE_TOO_LARGE",
    )


def rejected(rejection: validation.Rejection) -> ProtocolError:
    """An append refused by the stream's validation; nothing of it was appended."""
    title, code = (
        ("Bad Request", "STATE_INVALID")
        if rejection.status == 400
        else ("Conflict", "STATE_CONFLICT")
    )
    return ProtocolError(
        rejection.status,
        title,
        f"message {rejection.index}: {rejection.reason}; nothing was appended",
        code=code,
        fields={"index": rejection.index, "reason": rejection.reason},
    )


class Views:
    """One actor's view of its stream (None until first asked for), and its checkpoints."""

    def __init__(
        self, name: str, limits: ViewLimits, budget: ViewBudget, drop: Callable[[str], None]
    ) -> None:
        self.name = name
        self.limits = limits
        self.budget = budget
        self._drop_other = drop  # asks another stream's actor to let its view go
        self.view: View | None = None
        self._saved = -1  # the offset its checkpoint reflects (-1: none)
        self._refused: ProtocolError | None = None  # too large: refused until the actor stops

    async def ensure(self, state: StreamState, log: Log | None, inherited: Inherited) -> View:
        """The view, built if need be: its checkpoint, if usable, then the log after it."""
        if self.view is not None:
            return self.view
        if self._refused is not None:
            raise self._refused
        try:
            view = await self._build(state, log, inherited)
        except ViewTooLarge as error:
            self._refused = too_large(error)
            raise self._refused from None
        self.view = view
        for other in self.budget.note(self.name, view.bytes):
            self._drop_other(other)
        return view

    async def read(
        self,
        state: StreamState,
        log: Log | None,
        inherited: Inherited,
        message: m.StateSnapshot | m.StateEntity,
    ) -> tuple[int, list[Entity]]:
        """The offset the view reflects (the tail), and its entities: all, of some types,
        or one. A list of immutable entities: later commits cannot change what a reader
        is sending."""
        if not is_json(state.config.content_type):
            raise bad_request("state views are of application/json streams", code="STATE_NOT_JSON")
        view = await self.ensure(state, log, inherited)
        if isinstance(message, m.StateEntity):
            entity = view.get(message.type, message.key)
            return view.offset, [] if entity is None else [entity]
        return view.offset, view.pin(message.types)

    async def _build(self, state: StreamState, log: Log | None, inherited: Inherited) -> View:
        view = await self._restore(state, log)
        position = view.offset
        while position < state.tail:
            if position < state.config.fork_offset:
                assert state.config.fork_source is not None
                read = await inherited(
                    state.config.fork_source, position, state.config.fork_offset, FOLD_CHUNK
                )
                data, ends, end = read.data, read.ends, read.end
            else:
                assert log is not None
                slices, end = state.slices(position, state.tail, FOLD_CHUNK)
                data = await log.read(slices)
                ends = tuple(state.record_ends(position, end))
            if end <= position or len(data) != end - position:
                raise RuntimeError(f"folding {self.name!r} stalled at {position}")
            await trio.to_thread.run_sync(view.apply_records, data, ends, position)
            position = end
        view.offset = state.tail
        return view

    async def _restore(self, state: StreamState, log: Log | None) -> View:
        """The checkpointed view if it is this stream's and lies on a record boundary the
        log still holds; else an empty one (a full fold)."""
        limits = self.limits
        saved = await log.load_view() if log is not None else None
        for blob in (saved, await self._base_view(state, log)):
            if blob is None:
                continue
            view = await trio.to_thread.run_sync(
                checkpoint.decode, blob, state.incarnation, limits.max_entities, limits.max_bytes
            )
            if view is not None and state.holds_boundary(view.offset):
                self._saved = view.offset
                return view
        if state.base:
            raise RuntimeError(f"the compacted log of {self.name!r} holds no usable view")
        self._saved = -1
        return View(limits.max_entities, limits.max_bytes)

    @staticmethod
    async def _base_view(state: StreamState, log: Log | None) -> bytes | None:
        """The view a compacted log starts with."""
        if state.base_view is None or log is None:
            return None
        locator, length = state.base_view
        return await log.read([Slice(locator, 0, length)])

    def rebased(self, offset: int) -> None:
        """The log was compacted at `offset`: its base record holds the view as of then."""
        self._saved = offset

    def check(self, mode: str | None, messages: list[Any]) -> ProtocolError | None:
        """Why an append's messages are refused by the stream's validation, or None."""
        if mode is None:
            return None
        if mode == "semantic" and self.view is None:
            return self._refused or ProtocolError(500, "Internal Server Error", "no state view")
        rejection = validation.check(messages, mode, self.view)
        return None if rejection is None else rejected(rejection)

    def apply(self, messages: list[Any], end: int) -> None:
        """A staged record's messages, written at `end` (if its commit fails, the actor
        fails stop and the view goes with it); views of other streams go if the budget
        is passed."""
        view = self.view
        if view is None:
            return
        try:
            for message in messages:
                view.apply(message, end)
        except ViewTooLarge as error:
            logger.warning("state view of %r dropped: %s", self.name, error)
            self._refused = too_large(error)
            self.drop()
            return
        view.offset = end
        for other in self.budget.note(self.name, view.bytes):
            self._drop_other(other)

    async def save(self, log: Log | None, incarnation: str, *, force: bool = False) -> None:
        """Checkpoint the view beside the log when it moved enough since the last one (or,
        with `force`, at all): a restart then folds only the log after it."""
        view = self.view
        if view is None or log is None or view.offset == self._saved:
            return
        moved = view.offset - max(self._saved, 0)
        if not force and (moved < SAVE_BYTES or moved < view.bytes // 8):
            return
        # The actor waits here: the thread is the view's only user meanwhile.
        blob = await trio.to_thread.run_sync(checkpoint.encode, view, incarnation)
        await log.save_view(blob)
        self._saved = view.offset

    async def release(self, state: StreamState | None, log: Log | None) -> None:
        """Memory is short: checkpoint the view, then let it go."""
        if state is not None:
            await self.save(log, state.incarnation, force=True)
        self.drop()

    def drop(self) -> None:
        self.view = None
        self._saved = -1
        self.budget.forget(self.name)
