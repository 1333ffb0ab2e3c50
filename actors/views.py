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
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import attrs
import trio

from actors import messages as m
from actors.storage import Log
from state import checkpoint, validation
from state.changes import parse_stored
from state.view import Entity, View, ViewTooLarge
from streams.protocol import jsonmode
from streams.protocol.errors import ProtocolError, bad_request
from streams.protocol.extents import Slice
from streams.protocol.headers import is_json
from streams.protocol.machine import StreamState
from streams.protocol.records import CreateRecord

if TYPE_CHECKING:
    from actors.supervisor import Supervisor

logger = logging.getLogger(__name__)
R = TypeVar("R")

FOLD_CHUNK = 1 << 20  # the log is folded a chunk of whole records at a time
IN_THREAD_BYTES = 64 * 1024  # records at least this large are parsed off the event loop
IN_THREAD_MESSAGES = 1024  # appends of more messages are checked and folded off it too
SAVE_BYTES = 64 * 1024  # a view is checkpointed when it moved this far, and 1/8 of its size


async def parsed(data: bytes) -> list[Any]:
    """The messages of stored JSON data (valid JSON: checked on append), parsed off the
    event loop when large."""
    if len(data) < IN_THREAD_BYTES:
        return parse_stored(data)
    return await trio.to_thread.run_sync(jsonmode.messages, data)


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


async def _off_loop(check: Callable[..., R], messages: list[Any], *args: Any) -> R:
    """`check(messages, *args)`, in a worker thread when there are many messages (an append
    can hold a million): the actor waits meanwhile, so the view is the thread's alone."""
    if len(messages) < IN_THREAD_MESSAGES:
        return check(messages, *args)
    return await trio.to_thread.run_sync(check, messages, *args)


def _fold(messages: list[Any], view: View, end: int) -> None:
    for message in messages:
        view.apply(message, end)


class Views:
    """One actor's view of its stream (None until first asked for), and its checkpoints."""

    def __init__(self, name: str, supervisor: Supervisor) -> None:
        self.name = name
        self.supervisor = supervisor  # its view limits and budget, and reads of fork sources
        self.limits = supervisor.view_limits
        self.budget = supervisor.views
        self.view: View | None = None
        self._saved = -1  # the offset its checkpoint reflects (-1: none)
        # The last snapshot's entities, handed to every reader of that offset and types:
        # one list however many send it (the HTTP layer bounds what they hold).
        self._pinned: tuple[tuple[int, frozenset[str] | None], list[Entity]] | None = None
        self._refused: ProtocolError | None = None  # too large: refused until the actor stops

    async def ensure(self, state: StreamState, log: Log | None) -> View:
        """The view, built if need be: its checkpoint, if usable, then the log after it."""
        if self.view is not None:
            return self.view
        if self._refused is not None:
            raise self._refused
        try:
            view = await self._build(state, log)
        except ViewTooLarge as error:
            self._refused = too_large(error)
            raise self._refused from None
        self.view = view
        self._note(view)
        return view

    async def check_create(self, record: CreateRecord) -> None:
        """Refuse a create whose body fails the validation it asks for, as an append would
        be: against no entities, or a fork's inherited ones (folded from its source)."""
        mode = record.config.state_validation
        if mode is None or not record.data:
            return
        view = View(0, 0)
        if mode == "semantic" and record.config.fork_source is not None:
            inherited = StreamState.created(attrs.evolve(record, data=b""), 0)
            try:
                view = await self._build(inherited, None)
            except ViewTooLarge as error:
                raise too_large(error) from None
        rejection = await _off_loop(validation.check, await parsed(record.data), mode, view)
        if rejection is not None:
            raise rejected(rejection)

    def check_bounds(self, view: View) -> None:
        """Refuse a view (an imported base) that this server's bounds would drop."""
        limits = self.limits
        if len(view) > limits.max_entities or view.bytes > limits.max_bytes:
            held = f"{len(view)} entities, {view.bytes} bytes"
            raise too_large(ViewTooLarge(f"it holds {held}"))

    def _note(self, view: View) -> None:
        """The view's size in the budget; views of other streams go if it is passed."""
        for other in self.budget.note(self.name, view.bytes):
            self.supervisor.drop_view(other)

    async def read(
        self,
        state: StreamState,
        log: Log | None,
        message: m.StateSnapshot | m.StateEntity,
    ) -> tuple[View, list[Entity]]:
        """The view (as of the tail), and its entities: all, of some types, or one. A list
        of immutable entities: later commits cannot change what a reader is sending."""
        if not is_json(state.config.content_type):
            raise bad_request("state views are of application/json streams", code="STATE_NOT_JSON")
        view = await self.ensure(state, log)
        if isinstance(message, m.StateEntity):
            entity = view.get(message.type, message.key)
            return view, [] if entity is None else [entity]
        asked = (view.offset, message.types)
        if self._pinned is None or self._pinned[0] != asked:
            self._pinned = (asked, view.pin(message.types))
        return view, self._pinned[1]

    async def _build(self, state: StreamState, log: Log | None) -> View:
        view = await self._restore(state, log)
        position = view.offset
        while position < state.tail:
            if position < state.config.fork_offset:
                try:
                    data, ends, end = await self._inherited(state, position)
                except ProtocolError as error:
                    if error.code != "STREAM_COMPACTED" or view.offset:
                        raise
                    view = await self._compacted_source(state)
                    position = view.offset
                    continue
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

    async def _inherited(
        self, state: StreamState, position: int
    ) -> tuple[bytes, tuple[int, ...], int]:
        assert state.config.fork_source is not None
        source, bound = state.config.fork_source, state.config.fork_offset
        read = await self.supervisor.read_inherited(source, position, bound, FOLD_CHUNK)
        return read.data, read.ends, read.end

    async def _compacted_source(self, state: StreamState) -> View:
        """A fork of a compacted stream (at or past its base): the fold starts from the
        view that stream's base holds, and goes on through its records from there."""
        assert state.config.fork_source is not None
        incarnation, blob = await self.supervisor.inherited_base(state.config.fork_source)
        limits = self.limits
        view = await trio.to_thread.run_sync(
            checkpoint.decode, blob, incarnation, limits.max_entities, limits.max_bytes
        )
        if view is None or view.offset > state.config.fork_offset:
            raise RuntimeError(f"the compacted source of {self.name!r} holds no usable view")
        return view

    async def _restore(self, state: StreamState, log: Log | None) -> View:
        """The checkpointed view if it is this stream's and lies on a record boundary the
        log still holds; else an empty one (a full fold)."""
        limits = self.limits
        saved = await log.load_view() if log is not None else None
        for blob in (saved, await self.base_view(state, log)):
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
    async def base_view(state: StreamState, log: Log | None) -> bytes | None:
        """The view a compacted log starts with."""
        if state.base_view is None or log is None:
            return None
        locator, length = state.base_view
        return await log.read([Slice(locator, 0, length)])

    def rebased(self, offset: int) -> None:
        """The log was compacted at `offset`: its base record holds the view as of then."""
        self._saved = offset

    async def check(self, mode: str | None, messages: list[Any]) -> ProtocolError | None:
        """Why an append's messages are refused by the stream's validation, or None."""
        if mode is None:
            return None
        if mode == "semantic" and self.view is None:
            return self._refused or ProtocolError(500, "Internal Server Error", "no state view")
        rejection = await _off_loop(validation.check, messages, mode, self.view)
        return None if rejection is None else rejected(rejection)

    async def apply(self, messages: list[Any], end: int) -> None:
        """A staged record's messages, written at `end` (if its commit fails, the actor
        fails stop and the view goes with it); views of other streams go if the budget
        is passed."""
        view = self.view
        if view is None:
            return
        self._pinned = None
        try:
            await _off_loop(_fold, messages, view, end)
        except ViewTooLarge as error:
            logger.warning("state view of %r dropped: %s", self.name, error)
            self._refused = too_large(error)
            self.drop()
            return
        view.offset = end
        self._note(view)

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
        self._pinned = None
        self._saved = -1
        self.budget.forget(self.name)
