"""A stream coming into and going out of existence, as its actor handles it: create (and
undoing a create that failed), delete (a soft delete while forks read the stream), expiry,
a fork's link released, and (postgres mode) catching up with what other server processes
committed to the stream. `StreamActor` (actors/actor.py) takes these handlers from
`Existence`, with the checks that the stream exists (404) and is not deleted (410); what
they use of the actor is declared on the class below."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

from actors import messages as m
from actors.batch import plan_create
from actors.storage import Log, Storage, Superseded, Unavailable
from actors.supervisor import Supervisor
from actors.tail_cache import TailCache
from actors.views import Views
from streams.protocol import records
from streams.protocol.errors import ProtocolError, not_found
from streams.protocol.machine import Reply, StreamState

logger = logging.getLogger("actors.actor")  # the actor's lines, under one name


class Existence:
    """The actor's create and delete handlers (a mixin of `StreamActor`, whose attributes
    and helpers these are)."""

    name: str
    registry: Supervisor
    storage: Storage
    clock: Callable[[], float]
    state: StreamState | None
    log: Log | None
    cache: TailCache
    cache_bytes: int
    piece_bytes: int
    changed: m.Change
    views: Views

    if TYPE_CHECKING:

        def _note_deadline(self) -> None: ...
        def _notify(self, added_from: int | None = None, added: bytes = b"") -> None: ...
        async def _recover(self) -> None: ...

    # ---- exists -------------------------------------------------------------------------

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

    # ---- create -------------------------------------------------------------------------

    async def _create(self, message: m.CreateMessage) -> Reply:
        request = message.request
        if self.state is not None:
            return self.state.recreate(request)
        config = request.config
        record, meta = await plan_create(self.name, request, self.clock(), self.views, message.base)
        created = record.create if isinstance(record, records.BaseRecord) else record
        if message.link is not None:
            await message.link(created.incarnation)
        try:
            self.log = await self.storage.create(self.name)
            locator = self.log.stage(meta, record.data)
            await self.registry.metrics.commit(self.log)
        except Superseded:  # another process created it meanwhile: it is theirs to keep
            self.log = None
            await self._recover()
            if self.state is None:
                raise
            return self.state.recreate(request)
        except Unavailable:  # the create may have committed: a retry finds it, or creates it
            self.log = None
            raise
        except BaseException:
            with trio.CancelScope(shield=True):
                await self._discard_log()
                if config.fork_source is not None:
                    await self.registry.call_source(config.fork_source, m.Unlink(self.name))
            raise
        if isinstance(record, records.BaseRecord):
            self.state = StreamState.rebased(record, locator)
        else:
            self.state = StreamState.created(record, locator)
        self.cache = TailCache.of(self.state.tail, [created.data], self.cache_bytes)
        self._note_deadline()
        self._notify()
        return Reply(201, self.state.metadata_headers())

    async def _discard_log(self) -> None:
        """A create that failed leaves no log: a full disk left it empty (the failed frame is
        cut off), and nothing in it was acknowledged."""
        if self.log is not None:
            self.log.close()
            self.log = None
        try:
            await self.storage.remove(self.name)
        except OSError:
            logger.warning("removing the log of failed create %r failed", self.name, exc_info=True)

    # ---- delete, expiry, fork links -------------------------------------------------------

    async def _delete(self, expired_at: float | None = None) -> None:
        """Soft delete while forks read our data; otherwise remove, and tell our source. An
        expiry (`expired_at`) is decided again where every process's accesses are known
        (postgres mode: the row, under its lock); if another process used the stream, it
        lives on."""
        state = self._existing()
        self.views.drop()
        action = state.delete_action(referenced=bool(await self.storage.links(self.name)))
        if action != "remove":
            if action == "soft-delete":
                await self._soft_delete(expired_at)
            return
        if not await self.storage.remove(self.name, expired_at):
            await self._caught_up()  # the shared last access, which moved the deadline
            self._note_deadline()
            return
        if expired_at is not None:
            logger.info("stream %r expired", self.name)
        if self.log is not None:
            self.log.close()
            self.log = None
        self.state = None
        self.registry.note_deadline(self.name, None)
        self._notify()
        if state.config.fork_source is not None:
            await self.registry.call_source(state.config.fork_source, m.Unlink(self.name))

    async def _soft_delete(self, expired_at: float | None) -> None:
        """A record committed as appends are (postgres mode: under the row lock, after what
        other processes committed); an expiry is decided again there."""
        await self._caught_up(hold=True)
        state, log = self.state, self.log
        if state is None or log is None:
            return  # removed elsewhere meanwhile
        try:
            if state.soft_deleted or (expired_at is not None and not state.expired(expired_at)):
                return
            record = records.SoftDeleteRecord(self.clock())
            locator = log.stage(*records.encode(record))
            await self.registry.metrics.commit(log)
        finally:
            with trio.CancelScope(shield=True):
                await log.release()
        if expired_at is not None:
            logger.info("stream %r expired (soft-deleted: forks read it)", self.name)
        state.apply(record, locator)
        self._note_deadline()
        self._notify()

    async def _expire(self) -> None:
        await self._delete(self.clock())

    async def _unlink(self, fork: str | None) -> None:
        """A fork is gone (None: a check after restart). A soft-deleted stream nobody
        references any more goes; an absent one drops the links a crash left behind."""
        if fork is not None:
            await self.storage.remove_link(self.name, fork)
        if self.state is None:
            if fork is None:
                await self.storage.remove(self.name)
        elif self.state.soft_deleted and not await self.storage.links(self.name):
            await self._delete()

    # ---- other processes (postgres mode) --------------------------------------------------

    async def _caught_up(self, hold: bool = False) -> None:
        """The state made authoritative: what other processes committed to the log since
        this actor last looked is folded in (docs/scaling.md; a log only this process writes
        has nothing to fold). With `hold`, the log stays held for a commit. A stream deleted,
        created again or compacted elsewhere is recovered afresh (once)."""
        for attempt in (0, 1):
            if self.state is None or self.log is None:
                return
            state, log = self.state, self.log
            start = state.tail
            try:
                moved = await (log.hold(state.apply) if hold else log.refresh(state.apply))
                if log.accessed is not None:  # another process's read or write slides the TTL
                    state.touch(log.accessed)
                    self._note_deadline()
            except Superseded:
                if attempt:
                    raise
                log.close()
                self.log, self.state = None, None
                self.views.drop()
                await self._recover()
                self._moved()
                continue
            if moved:
                self._moved(await self._added(start))
            return

    async def _added(self, start: int) -> bytes | None:
        """The data records committed elsewhere added from `start`, read from the log once
        for all the live readers waiting there (and kept in the tail cache); None if nobody
        waits, they are more than a piece, or the read fails (each reader reads then)."""
        state, log = self.state, self.log
        if state is None or log is None or not self.changed.waiting:
            return None
        if not 0 < state.tail - start <= self.piece_bytes:
            return None
        slices, stop = state.slices(start, state.tail, self.piece_bytes)
        if stop != state.tail:
            return None
        try:
            data = await log.read(slices)
        except (Superseded, Unavailable):
            return None
        return data if len(data) == stop - start else None

    def _moved(self, added: bytes | None = None) -> None:
        """After records committed elsewhere were folded: the tail cache starts again at the
        tail (holding what they `added`, if read), a resident view is rebuilt on next use,
        and live readers look again (or are handed `added`)."""
        self.views.drop()
        tail = self.state.tail if self.state else 0
        self.cache = TailCache.of(tail, [] if added is None else [added], self.cache_bytes)
        self._note_deadline()
        if added is None:
            self._notify()
        else:
            self._notify(tail - len(added), added)
