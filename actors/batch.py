"""A batch of appends planned against a stream's state and staged in its log, one record
each, then committed at once (group commit): one write, one fdatasync, before any reply."""

from __future__ import annotations

from actors import faults
from actors import messages as m
from actors.storage import Log, framing
from actors.tail_cache import TailCache
from actors.views import Views, parsed
from streams.protocol import records
from streams.protocol.errors import ProtocolError
from streams.protocol.machine import Reply, StreamState

Outcome = tuple["m.Pending[Reply]", Reply | ProtocolError]


async def stage_appends(
    state: StreamState, log: Log, batch: list[m.Envelope], now: float, views: Views
) -> tuple[list[Outcome], list[bytes]]:
    """Each request's outcome once the commit succeeds (a reply or a refusal), and the data
    staged. The state (and the State Protocol view, if any) already holds the staged
    records: if the commit fails, the actor fails stop and recovers from the log."""
    outcomes: list[Outcome] = []
    staged: list[bytes] = []
    mode = state.config.state_validation
    for message, pending in batch:
        assert isinstance(message, m.AppendMessage)
        try:
            planned = state.plan_append(message.request, now)
        except ProtocolError as error:
            outcomes.append((pending, error))
            continue
        if isinstance(planned, Reply):
            outcomes.append((pending, planned))
            continue
        messages = None
        if planned.data and (mode is not None or views.view is not None):
            messages = await parsed(planned.data)
            refusal = views.check(mode, messages)
            if refusal is not None:
                outcomes.append((pending, refusal))
                continue
        try:
            locator = log.stage(*records.encode(planned))
        except framing.FrameTooLarge as error:
            outcomes.append((pending, faults.too_large(error)))
            continue
        state.apply(planned, locator)
        if messages is not None:
            views.apply(messages, state.tail)
        staged.append(planned.data)
        outcomes.append((pending, state.appended(planned)))
    return outcomes, staged


async def commit_appends(
    state: StreamState,
    log: Log,
    cache: TailCache,
    batch: list[m.Envelope],
    now: float,
    views: Views,
) -> tuple[list[Outcome], bytes | None]:
    """Each request's outcome, and the data the commit added (None: nothing to commit)."""
    outcomes, staged = await stage_appends(state, log, batch, now, views)
    added = None
    if staged:
        await log.commit()
        added = b"".join(staged)
        cache.extend(added)
    state.touch(now)
    return outcomes, added
