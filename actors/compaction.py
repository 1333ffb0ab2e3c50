"""Compaction of a State Protocol stream (docs/state.md): once its log passes the size its
creator asked for, the actor replaces the log by one base record holding everything a
reader and a writer need as of the tail H (the stream's state, and its view's entities with
their last-write offsets and txids), after which appends continue at H as before.

Offsets never change and no byte after H is rewritten; reads below H answer 410, and reads
from the start get the snapshot. The new log is written and synced beside the old one, then
renamed over it (`Log.restart`): a crash leaves one or the other, never neither. A stream
with forks is not compacted: a fork's inherited range must stay readable in its source.
"""

from __future__ import annotations

import logging

import trio

from actors.storage import Log, Storage, framing
from actors.views import Inherited, Views
from state import checkpoint
from streams.protocol import records
from streams.protocol.machine import StreamState

logger = logging.getLogger(__name__)


def due(state: StreamState, views: Views) -> bool:
    """Whether the log since the last compaction is past the asked size, and larger than
    the view (so writing the view is paid for by as many bytes of appends: no stream is
    compacted on every append)."""
    threshold = state.config.state_compaction
    if threshold is None or state.soft_deleted:
        return False
    grown = state.tail - state.base
    view = views.view
    return grown >= threshold and (view is None or grown >= view.bytes)


async def compact(
    state: StreamState, log: Log, views: Views, storage: Storage, inherited: Inherited
) -> bool:
    """Compact at the tail if due; True if the log now starts there."""
    if not due(state, views) or await storage.links(state.name):
        return False
    view = await views.ensure(state, log, inherited)
    if state.tail - state.base < view.bytes:
        return False  # the view was built just now, and is larger than the log since
    blob = await trio.to_thread.run_sync(checkpoint.encode, view, state.incarnation)
    meta, data = records.encode(state.base_record(blob))
    try:
        framing.check_size(len(meta), len(data))
    except framing.FrameTooLarge as error:
        logger.warning("stream %r is not compacted: %s", state.name, error)
        return False
    locator = await log.restart(meta, data)
    state.rebase(locator, len(data))
    views.rebased(state.tail)
    logger.info("stream %r compacted at offset %d (%d entities)", state.name, state.tail, len(view))
    return True
