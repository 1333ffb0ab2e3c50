"""A batch of appends planned against a stream's state and staged in its log, one record
each, before one commit covers them all (group commit). No I/O: staging only buffers."""

from __future__ import annotations

from actors import faults
from actors import messages as m
from actors.storage import Log, framing
from streams.protocol import records
from streams.protocol.errors import ProtocolError
from streams.protocol.machine import Reply, StreamState

Outcome = tuple["m.Pending[Reply]", Reply | ProtocolError]


def stage_appends(
    state: StreamState, log: Log, batch: list[m.Envelope], now: float
) -> tuple[list[Outcome], list[bytes]]:
    """Each request's outcome once the commit succeeds (a reply or a refusal), and the data
    staged. The state already holds the staged records: if the commit fails, the actor fails
    stop and recovers from the log."""
    outcomes: list[Outcome] = []
    staged: list[bytes] = []
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
        try:
            locator = log.stage(*records.encode(planned))
        except framing.FrameTooLarge as error:
            outcomes.append((pending, faults.too_large(error)))
            continue
        state.apply(planned, locator)
        staged.append(planned.data)
        outcomes.append((pending, state.appended(planned)))
    return outcomes, staged
