"""A batch of appends planned against a stream's state and staged in its log, one record
each, then committed at once (group commit): one write, one fdatasync, before any reply;
and the record a create commits."""

from __future__ import annotations

import uuid

import trio

from actors import faults
from actors import messages as m
from actors.metrics import ActorMetrics
from actors.storage import Log, framing
from actors.tail_cache import TailCache
from actors.views import Views, parsed
from state import checkpoint
from state.view import View
from streams.protocol import records
from streams.protocol.errors import ProtocolError, bad_request
from streams.protocol.machine import (
    CreateRequest,
    Reply,
    StreamState,
    check_stream_size,
    encode_body,
)

Outcome = tuple["m.Pending[Reply]", Reply | ProtocolError]


async def plan_create(
    name: str, request: CreateRequest, now: float, views: Views, base: View | None = None
) -> tuple[records.CreateRecord | records.BaseRecord, bytes]:
    """The record that creates a stream, and its metadata: refused (nothing written) if its
    body fails the validation it asks for, or no frame can hold it. With `base` (`streams
    import` of a compacted stream), a base record holding that view, as a compaction at its
    offset would have started the log (actors/compaction.py)."""
    config = request.config
    data = encode_body(
        config.content_type, request.body, creating=True, flattened=request.flattened
    )
    check_stream_size(0, len(data), request.max_stream_bytes)
    create = records.CreateRecord(name, config, uuid.uuid4().hex, now, request.closed, data)
    record: records.CreateRecord | records.BaseRecord = create
    if base is None:
        await views.check_create(create)
    else:
        if data or base.offset < max(1, config.fork_offset):
            raise bad_request("an imported base lies past the stream's start, with no body")
        views.check_bounds(base)
        blob = await trio.to_thread.run_sync(checkpoint.encode, base, create.incarnation)
        record = records.BaseRecord(create, base.offset, now, data=blob)
    meta, stored = records.encode(record)
    try:
        framing.check_size(len(meta), len(stored))
    except framing.FrameTooLarge as error:
        raise faults.too_large(error) from None
    return record, meta


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
            refusal = await views.check(mode, messages)
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
            await views.apply(messages, state.tail)
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
    metrics: ActorMetrics,
) -> tuple[list[Outcome], bytes | None]:
    """Each request's outcome, and the data the commit added (None: nothing to commit)."""
    outcomes, staged = await stage_appends(state, log, batch, now, views)
    added = None
    if staged:
        await metrics.commit(log)
        added = b"".join(staged)
        metrics.appended(len(staged), len(added))
        cache.extend(added)
    state.touch(now)
    return outcomes, added
