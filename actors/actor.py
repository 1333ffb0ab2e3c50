"""The stream actor: one Trio task that owns a stream's log, state and live readers.

It takes messages one at a time from its inbox, so every change to a stream is serialized
without locks. Consecutive appends are committed together: one write, one fdatasync, and
only then any reply (group commit). Live readers wait on `changed`, which the actor
publishes, with the data a commit added, and replaces after each commit.
"""

from __future__ import annotations

import errno
import logging
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import trio

from actors import messages as m
from actors.logs import Log, Storage
from actors.tail_cache import TailCache
from streams import records
from streams.errors import ProtocolError, bad_request, not_found
from streams.machine import Reply, StreamState, encode_body
from streams.offsets import Sentinel
from streams.records import SoftDelete

if TYPE_CHECKING:
    from actors.registry import Registry

log = logging.getLogger(__name__)

MAX_BATCH = 256


class Pending:
    """A reply slot one caller waits on."""

    def __init__(self) -> None:
        self._done = trio.Event()
        self._value: Any = None
        self._error: BaseException | None = None

    def set(self, value: Any) -> None:
        if not self._done.is_set():
            self._value = value
            self._done.set()

    def fail(self, error: BaseException) -> None:
        if not self._done.is_set():
            self._error = error
            self._done.set()

    async def wait(self) -> Any:
        await self._done.wait()
        if self._error is not None:
            raise self._error
        return self._value


Envelope = tuple[m.Message, Pending]


def actor_failed(name: str, cause: BaseException | None = None) -> ProtocolError:
    """What callers hear when a stream's actor fails: a full disk is worth retrying later."""
    if isinstance(cause, OSError) and cause.errno in (errno.ENOSPC, errno.EDQUOT):
        return ProtocolError(
            503,
            "Service Unavailable",
            "no space left for this write; nothing was stored",
            {"Retry-After": "5"},
            code="STORAGE_FULL",
        )
    return ProtocolError(500, "Internal Server Error", f"stream {name!r} failed; it restarts")


class StreamActor:
    def __init__(
        self,
        name: str,
        registry: Registry,
        storage: Storage,
        clock: Callable[[], float],
        inbox_size: int,
        cache_bytes: int,
        piece_bytes: int = 64 * 1024,
    ) -> None:
        self.name = name
        self.registry = registry
        self.storage = storage
        self.clock = clock
        self.send, self._inbox = trio.open_memory_channel[Envelope](inbox_size)
        self.state: StreamState | None = None
        self.log: Log | None = None
        self.cache_bytes = cache_bytes
        self.cache = TailCache(0, cache_bytes)
        self.piece_bytes = piece_bytes
        self.changed = m.Change()
        self._fresh_links: set[str] = set()
        self._held: Envelope | None = None
        self._idle: trio.CancelScope | None = None  # set while waiting for a message

    # ---- lifecycle ----------------------------------------------------------------------

    async def run(self, idle_timeout: float) -> None:
        failure: Exception | None = None
        try:
            await self._recover()
            while True:
                envelope = await self._next(idle_timeout)
                if envelope is None:
                    break
                await self._handle(envelope)
        except Exception as error:
            log.exception("stream actor %r failed", self.name)
            failure = error
        finally:
            self._stop(actor_failed(self.name, failure))

    async def _next(self, idle_timeout: float) -> Envelope | None:
        """The next message, or None once the actor may stop."""
        if self._held is not None:
            held, self._held = self._held, None
            return held
        if self.state is None:
            try:
                return self._inbox.receive_nowait()
            except trio.WouldBlock:
                return None  # an absent stream keeps no task
        envelope: Envelope | None = None
        while envelope is None:
            with trio.move_on_after(idle_timeout) as self._idle:
                envelope = await self._inbox.receive()
            self._idle = None
            if envelope is None:
                try:  # sent after the wait ended but before this task ran again
                    envelope = self._inbox.receive_nowait()
                except trio.WouldBlock:
                    if self.changed.waiting == 0:
                        return None
        return envelope

    def retire(self) -> bool:
        """Stop now if idle: waiting for a message, with no live reader. True if it will."""
        if self._idle is None or self._idle.cancel_called or self.changed.waiting:
            return False
        self._idle.cancel()
        return True

    def _stop(self, error: ProtocolError) -> None:
        """Leave the registry first, so no new message can arrive, then fail the rest.

        Synchronous on purpose: by the time any other task runs, the log is closed, so a
        successor actor can open it at once.
        """
        self.registry.forget(self)
        self.send.close()
        if self._held is not None:
            self._held[1].fail(error)
        while True:
            try:
                _, pending = self._inbox.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel):
                break
            pending.fail(error)
        if self.log is not None:
            self.log.close()
        self._notify()

    async def _recover(self) -> None:
        opened = await self.storage.open(self.name)
        if opened is None:
            return
        self.log, recovered = opened
        (create, locator), *rest = recovered
        assert isinstance(create, records.Create)
        state = StreamState.created(create, locator)
        for record, at in rest:
            state.apply(record, at)
        state.touch(self.clock())  # a restart counts as an access: TTLs never shrink
        self.state = state
        newest_first = [r.data for r, _ in reversed(recovered) if not isinstance(r, SoftDelete)]
        self.cache = TailCache.of(state.tail, newest_first, self.cache_bytes)
        self._note_deadline()

    def _notify(self, added_from: int | None = None, added: bytes = b"") -> None:
        """Wake live readers; those at `added_from` are handed the `added` bytes directly,
        unless they are more than a piece: every reader holding this change (even one stuck
        sending to a client that stopped reading) would keep them alive."""
        change, self.changed = self.changed, m.Change()
        result = None
        if (
            added_from is not None
            and self.state is not None
            and change.waiting
            and len(added) <= self.piece_bytes
        ):
            snapshot = self._snapshot(self.state)
            result = m.ReadResult(snapshot, added_from, added_from + len(added), added)
        change.publish(result)

    def _note_deadline(self) -> None:
        deadline = self.state.deadline() if self.state and not self.state.soft_deleted else None
        self.registry.note_deadline(self.name, deadline)

    # ---- dispatch -----------------------------------------------------------------------

    async def _handle(self, envelope: Envelope) -> None:
        message, pending = envelope
        try:
            state = self.state
            if state is not None and not state.soft_deleted and state.expired(self.clock()):
                await self._expire()
            if isinstance(message, m.Append):
                await self._append_batch(envelope)
                return
            pending.set(await self._dispatch(message))
        except ProtocolError as error:
            pending.fail(error)
        except Exception as error:
            pending.fail(actor_failed(self.name, error))
            raise

    async def _dispatch(self, message: m.Message) -> Any:
        match message:
            case m.Create():
                return await self._create(message)
            case m.Read():
                return await self._read(message)
            case m.Head():
                state = self._visible()
                return Reply(200, state.metadata_headers())
            case m.Delete():
                self._visible()
                await self._delete()
                return Reply(204)
            case m.Describe():
                return self._snapshot(self._existing())
            case m.Advance():
                return self._existing().advance(message.position, message.count, message.bound)
            case m.Link():
                self._visible(gone_status=409)
                await self.storage.add_link(self.name, message.fork, message.incarnation)
                self._fresh_links.add(message.fork)
                return None
            case m.Unlink():
                await self._unlink(message.fork)
                return None
            case m.Expire():
                return None
        raise TypeError(f"unknown message {message!r}")

    def _existing(self) -> StreamState:
        if self.state is None:
            raise not_found()
        return self.state

    def _visible(self, gone_status: int = 410) -> StreamState:
        state = self._existing()
        if state.soft_deleted:
            if gone_status == 409:
                raise ProtocolError(409, "Conflict", "source stream was deleted", code="GONE")
            state.check_visible()
        return state

    def _snapshot(self, state: StreamState) -> m.Snapshot:
        return m.Snapshot(
            state.config,
            state.incarnation,
            state.tail,
            state.closed,
            state.soft_deleted,
            state.deadline(),
            self.changed,
        )

    # ---- create -------------------------------------------------------------------------

    async def _create(self, message: m.Create) -> Reply:
        request = message.request
        if self.state is not None:
            return self.state.recreate(request)
        config = request.config
        data, sizes = encode_body(config.content_type, request.body, creating=True)
        incarnation = uuid.uuid4().hex
        if message.link is not None:
            await message.link(incarnation)
        record = records.Create(
            self.name, config, incarnation, self.clock(), request.closed, data, sizes
        )
        try:
            self.log = await self.storage.create(self.name)
            locator = self.log.stage(*records.encode(record))
            await self.log.commit()
        except BaseException:
            if config.fork_source is not None:
                with trio.CancelScope(shield=True):
                    await self.registry.call(config.fork_source, m.Unlink(self.name))
            raise
        self.state = StreamState.created(record, locator)
        self.cache = TailCache.of(self.state.tail, [data], self.cache_bytes)
        self._note_deadline()
        self._notify()
        return Reply(201, self.state.metadata_headers())

    # ---- append -------------------------------------------------------------------------

    async def _append_batch(self, first: Envelope) -> None:
        """Plan and stage consecutive appends, commit them once, then reply to each.

        Every request in the batch gets an answer whatever fails; an unexpected failure
        leaves uncommitted records in the state, so it fails stop and recovers from the log.
        """
        batch = [first]
        while len(batch) < MAX_BATCH:
            try:
                envelope = self._inbox.receive_nowait()
            except trio.WouldBlock:
                break
            if not isinstance(envelope[0], m.Append):
                self._held = envelope
                break
            batch.append(envelope)
        try:
            outcomes, added_from, added = await self._commit_appends(batch)
        except BaseException as error:
            failure = error if isinstance(error, ProtocolError) else actor_failed(self.name, error)
            for _, pending in batch:
                pending.fail(failure)
            if not isinstance(error, ProtocolError):
                raise
            return
        for pending, outcome in outcomes:
            if isinstance(outcome, ProtocolError):
                pending.fail(outcome)
            else:
                pending.set(outcome)
        if added is not None:  # writers first: their replies are already scheduled
            self._notify(added_from, added)

    async def _commit_appends(
        self, batch: list[Envelope]
    ) -> tuple[list[tuple[Pending, Reply | ProtocolError]], int, bytes | None]:
        """Outcomes, and where the committed data starts and what it is (None: no commit)."""
        state = self._existing()
        added_from = state.tail
        assert self.log is not None
        outcomes: list[tuple[Pending, Reply | ProtocolError]] = []
        staged: list[bytes] = []
        now = self.clock()
        for message, pending in batch:
            assert isinstance(message, m.Append)
            try:
                planned = state.plan_append(message.request, now)
            except ProtocolError as error:
                outcomes.append((pending, error))
                continue
            if isinstance(planned, Reply):
                outcomes.append((pending, planned))
                continue
            state.apply(planned, self.log.stage(*records.encode(planned)))
            staged.append(planned.data)
            outcomes.append((pending, state.appended(planned)))
        added = None
        if staged:
            await self.log.commit()
            added = b"".join(staged)
            self.cache.extend(added)
        state.touch(now)
        self._note_deadline()
        return outcomes, added_from, added

    # ---- read ---------------------------------------------------------------------------

    async def _read(self, message: m.Read) -> m.ReadResult:
        state = self._existing() if message.internal else self._visible()
        if not message.internal:
            state.touch(self.clock())
            self._note_deadline()
        match message.start:
            case Sentinel.START:
                start = 0
            case Sentinel.NOW:
                start = state.tail
            case int(position):
                start = position
        if start > state.tail:
            raise bad_request("offset is beyond the stream's tail", code="OFFSET_OUT_OF_RANGE")
        snapshot = self._snapshot(state)
        if start < state.config.fork_offset:
            return m.ReadResult(snapshot, start, start, b"", state.config.fork_source)
        bound = state.tail if message.bound is None else message.bound
        end = state.read_end(start, bound, message.max_bytes)
        stop = end if message.fetch is None else min(end, start + message.fetch)
        data = self.cache.get(start, stop)
        if data is None:
            slices, stop = state.slices(start, stop, message.max_bytes)  # cut inside a record
            assert self.log is not None
            data = await self.log.read(slices) if slices else b""
        return m.ReadResult(snapshot, start, end, data)

    # ---- delete, expiry, fork links -------------------------------------------------------

    async def _live_links(self) -> dict[str, str]:
        """Forks that still reference this stream; stale links (a crash mid-delete) go."""
        links = await self.storage.links(self.name)
        for fork, incarnation in list(links.items()):
            if fork in self._fresh_links:
                continue
            if await self.storage.incarnation(fork) != incarnation:
                await self.storage.remove_link(self.name, fork)
                del links[fork]
        return links

    async def _delete(self) -> None:
        """Soft delete while forks read our data; otherwise remove, and tell our source."""
        state = self._existing()
        if await self._live_links():
            if not state.soft_deleted:
                assert self.log is not None
                record = records.SoftDelete(self.clock())
                locator = self.log.stage(*records.encode(record))
                await self.log.commit()
                state.apply(record, locator)
                self._note_deadline()
                self._notify()
            return
        await self.storage.remove(self.name)
        if self.log is not None:
            self.log.close()
            self.log = None
        self.state = None
        self._fresh_links.clear()
        self.registry.note_deadline(self.name, None)
        self._notify()
        if state.config.fork_source is not None:
            await self.registry.call(state.config.fork_source, m.Unlink(self.name))

    async def _expire(self) -> None:
        log.info("stream %r expired", self.name)
        await self._delete()

    async def _unlink(self, fork: str | None) -> None:
        if fork is not None:
            await self.storage.remove_link(self.name, fork)
            self._fresh_links.discard(fork)
        if self.state is not None and self.state.soft_deleted and not await self._live_links():
            await self._delete()
