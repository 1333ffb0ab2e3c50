"""The stream actor: one Trio task that owns a stream's log, state and live readers.

Theory of operation. The actor takes messages one at a time from its inbox, so every change
to its stream is serialized without locks (which also serializes each producer, as the
protocol requires). Consecutive appends are committed together: one write, one fdatasync,
and only then a reply to each (group commit), writers before readers. Live readers wait on
`changed`, which the actor publishes after each commit and replaces. Nothing but the actor
touches the stream's log (docs/architecture.md, "Ownership"). A JSON stream read as state
has a view the actor keeps current in each commit (actors/views.py), and a stream that asked
for compaction takes its next step after a commit (actors/compaction.py).

    state      what it does                                    next
    ---------  ----------------------------------------------  ---------------------------
    starting   recovers the log (or checkpoint + what follows)  serving; stopped (no such
               in a worker thread; requests wait in the inbox  stream); failed
    serving    one message at a time, appends in batches       idle
               (their view updated and compaction stepped)
    idle       waits for a message, up to the idle timeout     serving; retiring (timeout
                                                               and no reader parked, or
                                                               evicted: least recently used)
    retiring   checkpoints if 1000+ records are new (and the   serving; stopped
               view, if it moved), serves what arrives
    stopped    left the registry and closed its log in one     (a request starts a
               step: a successor may open it at once           successor)
    failed     answers what is pending (500; 503 for a full    stopped
               disk or no descriptors); a damaged log is
               refused without an actor for a back-off
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

import trio

from actors import faults, reads
from actors import messages as m
from actors.batch import commit_appends
from actors.compaction import Compactor
from actors.existence import Existence
from actors.recovery import recover
from actors.storage import CorruptLog, Log, Storage, Superseded, Unavailable
from actors.supervisor import Supervisor
from actors.tail_cache import TailCache
from actors.views import Views
from actors.wakeups import Receipt
from streams.protocol import checkpoint
from streams.protocol.errors import ProtocolError
from streams.protocol.machine import Reply, StreamState
from streams.protocol.stream_reads import compacted

logger = logging.getLogger(__name__)

MAX_BATCH = 256
CHECKPOINT = 1000  # new data records that make an actor checkpoint its state as it stops


class StreamActor(Existence):
    """One stream's actor: the only owner of its log, its state and its live readers. The
    registry starts it with a `Supervisor`, sends it `Ask`s through `send`, and it answers
    each through the caller's `Pending`; its life is the table above. Its create, delete and
    expiry handlers, and the checks that its stream exists, are in actors/existence.py."""

    def __init__(
        self,
        name: str,
        registry: Supervisor,
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
        self.send, self._inbox = trio.open_memory_channel[m.Envelope](inbox_size)
        self.state: StreamState | None = None
        self.log: Log | None = None
        self.cache_bytes = cache_bytes
        self.cache = TailCache(0, cache_bytes)
        self.piece_bytes = piece_bytes
        self.changed = m.Change()
        self._held: m.Envelope | None = None
        self._idle: trio.CancelScope | None = None  # set while waiting for a message
        self._checkpointed = 0  # data records the log's checkpoint covers
        self.views = Views(name, registry)
        self.compactor = Compactor()

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
            if isinstance(error, CorruptLog):
                # Reopening cannot help until an operator repairs the log: the registry
                # answers for the stream meanwhile, and this is logged once per back-off.
                logger.error("stream %r is refused: %s; run `%s`", self.name, error, faults.FSCK)
                self.registry.refuse(self.name, faults.actor_failed(self.name, error))
            elif isinstance(error, Unavailable):
                # Its cached state goes (recovered from the database next); one line per interval.
                if (count := self.registry.unavailable.note()) is not None:
                    logger.warning("%s: %d stream actor(s) stopped", error, count)
            elif not faults.exhausted(error):
                logger.exception("stream actor %r failed", self.name)
            elif (count := self.registry.exhaustion.note()) is not None:
                # Every request may hit this at once: one line per interval, not per request.
                logger.error(
                    "out of file descriptors (%s): %d stream actor(s) failed", error, count
                )
            failure = error
        finally:
            self._stop(faults.actor_failed(self.name, failure))

    async def _next(self, idle_timeout: float) -> m.Envelope | None:
        """The next message, or None once the actor may stop."""
        if self._held is not None:
            held, self._held = self._held, None
            return held
        if self.state is None:
            try:
                return self._inbox.receive_nowait()
            except trio.WouldBlock:
                return None  # an absent stream keeps no task
        envelope: m.Envelope | None = None
        while envelope is None:
            with trio.move_on_after(idle_timeout) as self._idle:
                envelope = await self._inbox.receive()
            self._idle = None
            if envelope is None:
                await self._checkpoint()  # what arrives meanwhile waits in the inbox
                try:  # sent after the wait ended but before this task ran again
                    envelope = self._inbox.receive_nowait()
                except trio.WouldBlock:
                    if self.changed.waiting == 0:
                        return None
        return envelope

    async def _checkpoint(self) -> None:
        """Before stopping, save the state (and the view) if rebuilding them would take a
        while."""
        state = self.state
        if state is None or self.log is None:
            return
        await self.views.save(self.log, state.incarnation)
        if state.records - self._checkpointed < CHECKPOINT:
            return
        # The actor is the state's only writer, and it waits here: a thread may read it.
        await self.log.checkpoint(await trio.to_thread.run_sync(checkpoint.encode, state))
        self._checkpointed = state.records

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
        self.views.drop()
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
        recovered = await recover(self.storage, self.name)
        if recovered is None:
            return
        self.log, state, self._checkpointed = recovered
        shared = self.log.accessed  # postgres: the last access of every process
        if shared is None:
            # An access, unless this process knows the last one: TTLs neither shrink nor slide.
            shared = self.registry.last_access(self.name, state.config.ttl, self.clock())
        state.touch(shared)
        self.state = state
        self.cache = TailCache(state.tail, self.cache_bytes)  # fills as appends come
        self._note_deadline()

    def _notify(
        self,
        added_from: int | None = None,
        added: bytes = b"",
        receipts: Iterable[Receipt | None] = (),
    ) -> None:
        """Wake live readers; those at `added_from` are handed the `added` bytes directly,
        unless they are more than a piece: every reader holding this change (even one stuck
        sending to a client that stopped reading) would keep them alive. With the `receipts`
        of the commit's writers, readers wake once those are released (actors/wakeups.py)."""
        change, self.changed = self.changed, m.Change()
        state = self.state
        gone = state is None or state.soft_deleted
        self.registry.committed(self.name, None if gone or state is None else state.tail)
        result = None
        if (
            added_from is not None
            and self.state is not None
            and change.waiting
            and len(added) <= self.piece_bytes
        ):
            snapshot = self._snapshot(self.state)
            result = m.ReadResult(snapshot, added_from, added_from + len(added), added)
        change.publish(result, receipts)

    def _note_deadline(self) -> None:
        deadline = self.state.deadline() if self.state and not self.state.soft_deleted else None
        self.registry.note_deadline(self.name, deadline)

    # ---- dispatch -----------------------------------------------------------------------

    async def _handle(self, envelope: m.Envelope) -> None:
        message, pending = envelope
        try:
            if not isinstance(message, m.AppendMessage):
                await self._caught_up()
            state = self.state
            if state is not None and not state.soft_deleted and state.expired(self.clock()):
                await self._expire()
            if isinstance(message, m.AppendMessage):
                await self._append_batch(envelope)
                return
            if isinstance(message, m.Restore):
                await self._restore(message, pending)
                return
            try:
                pending.set(await self._dispatch(message))
            except Superseded:  # changed by another process since we looked: look again
                await self._caught_up()
                pending.set(await self._dispatch(message))
        except ProtocolError as error:
            pending.fail(error)
        except Exception as error:
            pending.fail(faults.actor_failed(self.name, error))
            raise

    async def _dispatch(self, message: m.Ask[Any]) -> Any:
        match message:
            case m.CreateMessage():
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
            case m.Export():
                return m.Exported.of(self._existing(), self.changed)
            case m.Advance():
                return await reads.advance(self._existing(), self.log, message)
            case m.Link():
                self._visible(gone_status=409)
                await self.storage.add_link(self.name, message.fork, message.incarnation)
                return None
            case m.Links():
                return await self.storage.links(self.name)
            case m.Unlink():
                await self._unlink(message.fork)
                return None
            case m.Expire() | m.Refresh():
                return None
            case m.StateSnapshot() | m.StateEntity():
                return await self._state_read(message)
            case m.BaseView():
                state = self._existing()
                view = await self.views.base_view(state, self.log)
                if view is None:
                    raise compacted(0)  # the fork point was checked: not reached
                return state.incarnation, view
            case m.DropView():
                await self.views.release(self.state, self.log)
                return None
        raise TypeError(f"unknown message {message!r}")

    async def _touch(self, state: StreamState) -> None:
        """A read slides the TTL, here and (postgres mode) for the other processes."""
        now = self.clock()
        state.touch(now)
        self._note_deadline()
        if self.log is not None:
            await self.log.touched(now)

    def _snapshot(self, state: StreamState) -> m.Snapshot:
        return m.Snapshot.of(state, self.changed)

    # ---- append -------------------------------------------------------------------------

    async def _append_batch(self, first: m.Envelope) -> None:
        """Plan and stage consecutive appends, commit them once, then reply to each."""
        batch = [first]
        while len(batch) < MAX_BATCH:
            try:
                envelope = self._inbox.receive_nowait()
            except trio.WouldBlock:
                break
            if not isinstance(envelope[0], m.AppendMessage):
                self._held = envelope
                break
            batch.append(envelope)
        await self._commit(batch)

    async def _restore(self, message: m.Restore, pending: m.Pending[list[Reply]]) -> None:
        """An import's records, one batch of appends committed at once (one write, not one
        per record); answered with their replies, or the first refusal."""
        batch: list[m.Envelope] = [(m.AppendMessage(r), m.Pending()) for r in message.requests]
        await self._commit(batch)
        pending.set([await slot.wait() for _, slot in batch])

    async def _commit(self, batch: list[m.Envelope]) -> None:
        """Every request in the batch gets an answer whatever fails; an unexpected failure
        leaves uncommitted records in the state, so it fails stop and recovers from the log.
        """
        try:
            await self._caught_up(hold=True)
            state = self._existing()
            assert self.log is not None
            added_from = state.tail
            if state.config.state_validation == "semantic":
                await self.views.ensure(state, self.log)
            now = self.clock()
            try:
                outcomes, added = await commit_appends(
                    state, self.log, self.cache, batch, now, self.views, self.registry.metrics
                )
            finally:
                with trio.CancelScope(shield=True):
                    await self.log.release()  # nothing committed: the row lock goes
            self._note_deadline()
        except BaseException as error:
            failure = (
                error if isinstance(error, ProtocolError) else faults.actor_failed(self.name, error)
            )
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
        if added is not None:  # readers wake once the writers' responses are out
            writers = (e[0].receipt for e in batch if isinstance(e[0], m.AppendMessage))
            self._notify(added_from, added, writers)
            # An import's appends (`restore`) are all committed before it forks the stream:
            # compacting meanwhile could take the history a fork of it starts in.
            restoring = all(
                isinstance(e[0], m.AppendMessage) and e[0].request.restore for e in batch
            )
            compacting = state.config.state_compaction is not None and not restoring
            if compacting and await self.compactor.after_commit(
                state, self.log, self.views, self.storage
            ):
                self._checkpointed = 0
        await self.log.touched(now)  # last: neither writers nor readers wait for it

    # ---- read ---------------------------------------------------------------------------

    async def _read(self, message: m.Read) -> m.ReadResult:
        state = self._existing() if message.internal else self._visible()
        if not message.internal:
            await self._touch(state)
        return await reads.read(state, self._snapshot(state), self.cache, self.log, message)

    async def _state_read(self, message: m.StateSnapshot | m.StateEntity) -> m.StateRead:
        state = self._visible()
        await self._touch(state)
        view, entities = await self.views.read(state, self.log, message)
        return m.StateRead(self._snapshot(state), view.offset, state.base, entities, view.skipped)
