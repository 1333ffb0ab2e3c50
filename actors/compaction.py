"""Compaction of a State Protocol stream (docs/state.md): its log is replaced by one base
record holding everything a reader and a writer need as of an offset H (the stream's state
and its view's entities, with their last-write offsets and txids), followed by the records
from H on, unchanged. Offsets never change; reads below H answer 410, reads from the start
get the snapshot.

Theory of operation. Compaction has two steps, so that live readers keep up: a reader that
lags the tail by less than the stream's `Stream-State-Compaction` bytes never finds its
offset compacted away.

    step       when (after a commit)                        what
    ---------  -------------------------------------------  ------------------------------
    prepare    the log since the last compaction is past    a new log holding the base
               the asked size and larger than the view      record as of the tail H is
               (writing the view is then paid for by as     written and synced beside the
               many appended bytes), and no fork links it   log (`Log.prepare_restart`)
    restart    the tail is the asked size past H            the records from H are copied
                                                            after the base, and the new log
                                                            is renamed over the old one
                                                            (`Log.restart`): a crash leaves
                                                            one or the other, never neither

A stream that forks link to is not compacted (a fork's inherited range must stay readable
in its source); a prepared base whose log went away (delete, actor restart, or in postgres
mode another process's compaction or delete) is forgotten.
"""

from __future__ import annotations

import logging

import attrs
import trio

from actors.storage import Log, Storage, Superseded, framing
from actors.views import Views
from state import checkpoint
from streams.protocol import records
from streams.protocol.errors import ProtocolError
from streams.protocol.machine import StreamState

logger = logging.getLogger(__name__)


@attrs.frozen
class Prepared:
    log: Log  # the log it was prepared beside
    base: int  # H: the tail when prepared
    keep_from: int  # where in that log the records from H on start
    view: tuple[int, int]  # where the base view's data sits in the new log


class Compactor:
    """One actor's compaction of its stream, a step after a commit at a time."""

    def __init__(self) -> None:
        self.prepared: Prepared | None = None
        self.warned = False  # that its view is refused: once per actor

    async def after_commit(
        self, state: StreamState, log: Log, views: Views, storage: Storage
    ) -> bool:
        """Take the next step if it is due; True if the log now starts at a new base."""
        threshold = state.config.state_compaction
        if threshold is None or state.soft_deleted:
            return False
        prepared = self.prepared
        if prepared is not None and prepared.log is not log:
            prepared = self.prepared = None
        if prepared is None:
            grown = state.tail - state.base
            view = views.view
            if grown < threshold or (view is not None and grown < view.bytes):
                return False
            if not await storage.links(state.name):
                try:
                    self.prepared = await self._prepare(state, log, views)
                except ProtocolError as error:  # its view is refused: beyond its bounds
                    self._refused(state, error)
                except Superseded:  # compacted or deleted elsewhere while its view was built
                    pass  # (postgres mode): the actor's next look at the log recovers
            return False
        if state.tail - prepared.base < threshold:
            return False
        self.prepared = None
        if await storage.links(state.name):
            return False
        try:
            shift = await log.restart(prepared.keep_from)
        except Superseded:  # another process committed, compacted or deleted since (postgres
            return False  # mode): the actor's next look at the log recovers from what it did
        state.rebase(prepared.base, prepared.view, shift)
        views.rebased(prepared.base)
        logger.info("stream %r compacted at offset %d", state.name, prepared.base)
        return True

    def _refused(self, state: StreamState, error: ProtocolError) -> None:
        if not self.warned:
            self.warned = True
            logger.warning("stream %r is not compacted: %s", state.name, error)

    @staticmethod
    async def _prepare(state: StreamState, log: Log, views: Views) -> Prepared | None:
        view = await views.ensure(state, log)
        if state.tail - state.base < view.bytes:
            return None  # built just now, and larger than the log since the last base
        blob = await trio.to_thread.run_sync(checkpoint.encode, view, state.incarnation)
        meta, data = records.encode(state.base_record(blob))
        try:
            framing.check_size(len(meta), len(data))
        except framing.FrameTooLarge as error:
            logger.warning("stream %r is not compacted: %s", state.name, error)
            return None
        locator = await log.prepare_restart(meta, data)
        return Prepared(log, state.tail, log.end, (locator, len(data)))
