"""Yjs documents across processes (docs/scaling.md, "Yjs across processes"): two registries
on one database, each with its `Documents`, as two server processes would run. A document's
lock and its compactions are per process, so both may compact one document at once: the
one that finds the pointer already as far as its merge leaves that snapshot alone."""

from __future__ import annotations

from collections.abc import Iterable

import pytest
import trio

from actors import messages as m
from actors.service import Streams
from actors.storage.postgres import PostgresStorage
from actors.yjs import Documents
from streams.protocol import yjs
from streams.protocol.machine import AppendRequest, CreateRequest
from streams.protocol.records import StreamConfig
from tests.on_disk import started
from tests.yjs_helpers import Writer

OCTET = "application/octet-stream"
DOC = yjs.document(b"t/docs/doc", 1024)


async def incarnation(streams: Streams, name: str) -> str:
    described: m.Snapshot = await streams.registry.call(name, m.Describe())
    return described.incarnation


async def test_a_compaction_overtaken_by_another_process_keeps_its_snapshot(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """B merges the same updates A compacts meanwhile (to the same end): B must not delete
    and create again the snapshot A's pointer names (a reader sent there would find none)."""
    storages = [PostgresStorage.connect(postgres_url, max_size=4) for _ in range(2)]
    try:
        async with trio.open_nursery() as nursery:
            a, b = [Streams(await started(s, nursery)) for s in storages]
            docs_a, docs_b = Documents(a, threshold=1 << 30), Documents(b, threshold=1 << 30)
            await nursery.start(docs_a.run)
            await nursery.start(docs_b.run)
            await docs_a.create(DOC, CreateRequest(StreamConfig(OCTET)))
            writer = Writer(client_id=1)
            for word in ("hello", " world"):
                await docs_a.append(DOC, AppendRequest(OCTET, writer.insert(0, word)))
            merge = docs_b._merges.merge
            overtaken: list[str] = []

            async def merged(snapshot: bytes, updates: Iterable[bytes]) -> bytes:
                pointer = await docs_a.compact(DOC)  # A, meanwhile
                assert pointer is not None
                overtaken.append(await incarnation(a, DOC.snapshot(pointer.key)))
                return await merge(snapshot, updates)

            monkeypatch.setattr(docs_b._merges, "merge", merged)
            pointer = await docs_b.compact(DOC)
            assert pointer is not None and overtaken
            assert pointer == await docs_a.pointer(DOC)
            assert await incarnation(b, DOC.snapshot(pointer.key)) == overtaken[0]
            nursery.cancel_scope.cancel()
    finally:
        for storage in storages:
            storage.close()
