"""What a storage backend holds for a stream, read the way an actor recovers it."""

from __future__ import annotations

from actors.storage import Storage
from streams.protocol.extents import Slice
from streams.protocol.records import Record


async def stored_records(storage: Storage, name: str) -> list[tuple[Record, bytes]] | None:
    """Each record with its data, or None when the stream is not stored."""
    found: list[tuple[Record, int, int]] = []
    log = await storage.open(name, lambda record, at, length: found.append((record, at, length)))
    if log is None:
        return None
    try:
        return [(r, await log.read([Slice(at, 0, n)]) if n else b"") for r, at, n in found]
    finally:
        log.close()


async def stored_data(storage: Storage, name: str) -> list[bytes] | None:
    stored = await stored_records(storage, name)
    return None if stored is None else [data for _, data in stored]
