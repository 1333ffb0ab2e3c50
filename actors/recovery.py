"""A stream's state rebuilt from its log: from the start, or from its checkpoint and the
records after it. The fold runs in the storage's worker thread; the state is nobody else's
until it is returned."""

from __future__ import annotations

from actors.storage import Log, Storage
from streams.protocol import checkpoint, records
from streams.protocol.machine import StreamState


async def recover(storage: Storage, name: str) -> tuple[Log, StreamState, int] | None:
    """(the open log, its state, the data records its checkpoint covered), or None if no
    such stream is stored. A full replay leaves none covered, so the actor checkpoints it
    when it stops."""
    recovered: StreamState | None = None
    covered = 0

    def restore(blob: bytes) -> bool:
        nonlocal recovered, covered
        recovered = checkpoint.decode(blob)
        covered = recovered.records if recovered is not None else 0
        return recovered is not None

    def fold(record: records.Record, locator: int, length: int) -> None:
        nonlocal recovered
        if recovered is None:
            if isinstance(record, records.BaseRecord):  # a compacted log
                recovered = StreamState.rebased(record, locator, length)
                return
            assert isinstance(record, records.CreateRecord)
            recovered = StreamState.created(record, locator, length)
        else:
            recovered.apply(record, locator, length)

    log = await storage.open(name, fold, restore)
    if log is None or recovered is None:
        return None
    return log, recovered, covered
