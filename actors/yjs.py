"""Yjs documents (docs/yjs.md) as conversations with the actors of their streams
(`streams.protocol.yjs` names them), and their compaction.

A document's streams are ordinary streams, each owned by its actor and reached only by
messages (`Streams`). Changes to a document's set of streams (create, delete, a new
awareness stream, a compaction's writes) hold the document's lock, so a delete never leaves
a stream of a compaction, or an awareness stream, behind it.

Compaction (`compact`) reads the current snapshot and the updates after it, merges them in a
worker process (`Merges`: never in an actor, nor in this interpreter, whose GIL pycrdt would
hold), then, holding the lock:

1. records in the index that the new snapshot stream may exist,
2. creates it with the merged update (one create record: durable before it is answered),
3. moves the index's current snapshot to it (discovery redirects there from now on).

A crash before step 3 leaves the previous snapshot current and intact; the new one, if it
was created, is listed in the index and removed by the next compaction (or the document's
delete). The replaced snapshot is removed `keep` seconds after step 3 (`_remove_later`):
the discovery `307` may be cached for 5 s (`private, max-age=5`), so a client can be sent to
it that long after the pointer moved; `keep` defaults to those 5 s. A client that comes later
still gets `404 SNAPSHOT_NOT_FOUND` and discovers again, as the spec asks.

The lock is this process's: in postgres mode another server process may compact the same
document at once (docs/scaling.md). A compaction whose pointer, read again under the lock,
already covers its merge's end gives way, so it does not replace the snapshot the other one
just pointed to.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import attrs
import trio

from actors import messages as m
from actors.service import Streams
from actors.wakeups import Receipt
from actors.yjs_merges import Merges
from state.yjs import MergeError
from streams.protocol import offsets, yjs
from streams.protocol.errors import ProtocolError
from streams.protocol.machine import AppendRequest, CreateRequest, Reply
from streams.protocol.offsets import Sentinel
from streams.protocol.records import StreamConfig
from streams.protocol.yjs import Document, Pointer

logger = logging.getLogger(__name__)

DEFAULT_AWARENESS = "default"
OCTET_STREAM = "application/octet-stream"
JSON = "application/json"
READ_BYTES = 1 << 20
GONE = (404, 410)


def document_not_found() -> ProtocolError:
    return yjs.error(404, "DOCUMENT_NOT_FOUND", "Document does not exist")


def snapshot_not_found() -> ProtocolError:
    return yjs.error(404, "SNAPSHOT_NOT_FOUND", "Snapshot not found; discover it again")


@attrs.define
class YjsMetrics:
    compactions: int = 0
    compaction_failures: int = 0
    snapshots_removed: int = 0


@attrs.define
class _Lock:
    lock: trio.Lock = attrs.field(factory=trio.Lock)
    users: int = 0


class Documents:
    """The Yjs operations. `run` must run for compactions and snapshot removals (they
    are its tasks); `compact` can also be called directly."""

    def __init__(
        self,
        streams: Streams,
        *,
        threshold: int = 1 << 20,
        keep: float = 5.0,
        awareness_ttl: int = 3600,
        merges: int = 1,
    ) -> None:
        self.streams = streams
        self.threshold = threshold
        self.keep = keep
        self.awareness = StreamConfig(OCTET_STREAM, ttl=awareness_ttl)
        self.metrics = YjsMetrics()
        self._merges = Merges(merges)  # worker processes, started at the first merge
        self._locks: dict[str, _Lock] = {}
        self._compacting: set[str] = set()  # documents with a compaction scheduled or running
        self._failed_at: dict[str, int] = {}  # where a document's last failed compaction ended
        self._settled = trio.lowlevel.ParkingLot()
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await self._merges.start()  # a worker takes a moment: not at the first merge
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                self._merges.close()

    async def settled(self) -> None:
        """Wait until no compaction is scheduled or running (for tests and shutdown)."""
        while self._compacting:
            await self._settled.park()

    @asynccontextmanager
    async def _hold(self, doc: Document) -> AsyncIterator[None]:
        entry = self._locks.setdefault(doc.base, _Lock())
        entry.users += 1
        try:
            async with entry.lock:
                yield
        finally:
            entry.users -= 1
            if not entry.users:
                del self._locks[doc.base]

    # ---- the document ----------------------------------------------------------------------

    async def create(self, doc: Document, request: CreateRequest) -> Reply:
        """PUT: the updates stream (as the request asks), its index and default awareness."""
        async with self._hold(doc):
            reply = await self.streams.create(doc.updates, request)
            await self._ensure(doc.index, StreamConfig(JSON))
            await self._ensure(doc.awareness(DEFAULT_AWARENESS), self.awareness)
        return reply

    async def head(self, doc: Document) -> Reply:
        try:
            return await self.streams.head(doc.updates)
        except ProtocolError as error:
            if error.status in GONE:
                raise document_not_found() from None
            raise

    async def append(
        self, doc: Document, request: AppendRequest, receipt: Receipt | None = None
    ) -> Reply:
        """POST: the framed updates, stored as sent; a compaction may follow."""
        try:
            reply = await self.streams.append(doc.updates, request, receipt)
        except ProtocolError as error:
            if error.status in GONE:
                raise document_not_found() from None
            raise
        tail = reply.headers.get("Stream-Next-Offset")
        if tail is not None:
            self._consider(doc, offsets.decode(tail))
        return reply

    async def delete(self, doc: Document) -> Reply:
        """DELETE: its snapshots, awareness streams and index, then its updates (so a crash
        part way leaves the document, which a second delete finishes)."""
        async with self._hold(doc):
            await self.head(doc)
            names = [doc.awareness(DEFAULT_AWARENESS)]
            for kind, key in await self._listed(doc):
                if kind == yjs.STORED:
                    names.append(doc.snapshot(key))
                elif kind == yjs.AWARENESS:
                    names.append(doc.awareness(key))
            for name in [*names, doc.index]:
                await self._delete_if_there(name)
            reply = await self.streams.delete(doc.updates)
        self._failed_at.pop(doc.base, None)
        return reply

    # ---- snapshots ---------------------------------------------------------------------------

    async def pointer(self, doc: Document) -> Pointer | None:
        """The current snapshot (None: none yet, or no index)."""
        try:
            read = await self.streams.state_entity(doc.index, yjs.CURRENT, yjs.SNAPSHOT)
        except ProtocolError as error:
            if error.status in GONE:
                return None
            raise
        return yjs.pointer(read.entities[0].value()) if read.entities else None

    async def discover(self, doc: Document) -> Pointer | None:
        """`offset=snapshot`: the document must exist; where it redirects."""
        await self.head(doc)
        return await self.pointer(doc)

    async def snapshot(self, doc: Document, key: str) -> tuple[bytes, int]:
        """A snapshot's update and the offset it covers (its `Stream-Next-Offset`)."""
        covers = yjs.snapshot_covers(key)
        if covers is None:
            raise snapshot_not_found()
        try:
            data, _, _ = await self._read_all(doc.snapshot(key))
        except ProtocolError as error:
            if error.status in GONE:
                raise snapshot_not_found() from None
            raise
        return data, covers

    # ---- awareness ---------------------------------------------------------------------------

    async def create_awareness(self, doc: Document, name: str) -> bool:
        """PUT `?awareness=`: True if created (the document must exist)."""
        async with self._hold(doc):
            await self.head(doc)
            created = await self._ensure(doc.awareness(name), self.awareness)
            if created and name != DEFAULT_AWARENESS:
                await self._index(doc, yjs.awareness_entry(name))
        return created

    async def append_awareness(
        self, doc: Document, name: str, request: AppendRequest, receipt: Receipt | None = None
    ) -> Reply:
        """POST `?awareness=`: created first if it is not there (expired, or never made)."""
        try:
            return await self.streams.append(doc.awareness(name), request, receipt)
        except ProtocolError as error:
            if error.status not in GONE:
                raise
        await self.create_awareness(doc, name)
        return await self.streams.append(doc.awareness(name), request, receipt)

    # ---- compaction --------------------------------------------------------------------------

    def _consider(self, doc: Document, tail: int) -> None:
        """After an append that left the updates at `tail`: schedule a compaction if they may
        have passed the threshold since the snapshot (the pointer is looked up in the task)."""
        failed_at = self._failed_at.get(doc.base, 0)
        if self._nursery is None or doc.base in self._compacting:
            return
        if not yjs.should_compact(tail, 0, failed_at, self.threshold):
            return
        self._compacting.add(doc.base)
        self._nursery.start_soon(self._compact_if_due, doc, tail)

    async def _compact_if_due(self, doc: Document, tail: int) -> None:
        try:
            current = await self.pointer(doc)
            covers = current.covers if current is not None else 0
            failed_at = self._failed_at.get(doc.base, 0)
            if yjs.should_compact(tail, covers, failed_at, self.threshold):
                await self._compact(doc)
        except Exception:
            logger.exception("compacting %r failed", doc.name)
            self.metrics.compaction_failures += 1
        finally:
            self._compacting.discard(doc.base)
            self._settled.unpark_all()

    async def compact(self, doc: Document) -> Pointer | None:
        """Compact now, unless a compaction of the document is under way; the new current
        snapshot (None if nothing was done)."""
        if doc.base in self._compacting:
            return None
        self._compacting.add(doc.base)
        try:
            return await self._compact(doc)
        finally:
            self._compacting.discard(doc.base)
            self._settled.unpark_all()

    async def _compact(self, doc: Document) -> Pointer | None:
        try:
            old = await self.pointer(doc)
            snapshot = b""
            if old is not None:
                snapshot, _, _ = await self._read_all(doc.snapshot(old.key))
            start = old.covers if old is not None else 0
            data, end, incarnation = await self._read_all(doc.updates, start)
            if end <= start:
                return old
            try:
                updates = yjs.unframe(data)
                merged = await self._merges.merge(snapshot, updates)
            except (MergeError, ProtocolError) as error:
                self._failed_at[doc.base] = end
                self.metrics.compaction_failures += 1
                logger.warning("document %r not compacted: %s", doc.name, error)
                return old
            new = Pointer(yjs.snapshot_key(end), end)
            async with self._hold(doc):
                described: m.Snapshot = await self.streams.registry.call(doc.updates, m.Describe())
                if described.incarnation != incarnation or described.soft_deleted:
                    return None  # deleted (and maybe created again) meanwhile
                now = await self.pointer(doc)
                if now is not None and now.covers >= end:
                    return now  # another server process compacted as far meanwhile
                await self._index(doc, yjs.stored(new.key))
                await self._delete_if_there(doc.snapshot(new.key))  # left by a crash
                snapshot_request = CreateRequest(StreamConfig(OCTET_STREAM), body=merged)
                await self.streams.create(doc.snapshot(new.key), snapshot_request)
                await self._index(doc, yjs.current(new))
        except ProtocolError as error:
            if error.status in GONE:
                return None  # the document was deleted meanwhile
            raise
        self._failed_at.pop(doc.base, None)
        self.metrics.compactions += 1
        logger.info(
            "compacted %r: %d bytes of updates and snapshot into %d", doc.name,
            end - start + len(snapshot), len(merged),
        )  # fmt: skip
        stale = [key for kind, key in await self._listed(doc) if kind == yjs.STORED]
        stale = [key for key in stale if key != new.key]
        if stale and self._nursery is not None:
            self._nursery.start_soon(self._remove_later, doc, stale)
        return new

    async def _remove_later(self, doc: Document, keys: list[str]) -> None:
        """Remove replaced snapshots once no cached redirect can lead to them (`keep`)."""
        await trio.sleep(self.keep)
        try:
            async with self._hold(doc):
                current = await self.pointer(doc)
                for key in keys:
                    if current is not None and key == current.key:
                        continue
                    await self._delete_if_there(doc.snapshot(key))
                    await self._index(doc, yjs.unstored(key))
                    self.metrics.snapshots_removed += 1
        except ProtocolError as error:
            if error.status not in GONE:
                logger.warning("removing snapshots of %r failed: %s", doc.name, error)

    # ---- helpers -----------------------------------------------------------------------------

    async def _ensure(self, name: str, config: StreamConfig) -> bool:
        """Create a stream unless it exists (whatever its config); True if created."""
        try:
            reply = await self.streams.create(name, CreateRequest(config))
        except ProtocolError as error:
            if error.status == 409:
                return False
            raise
        return reply.status == 201

    async def _delete_if_there(self, name: str) -> None:
        try:
            await self.streams.delete(name)
        except ProtocolError as error:
            if error.status not in GONE:
                raise

    async def _index(self, doc: Document, *changes: dict[str, object]) -> None:
        body = yjs.index_append(*changes)
        await self.streams.append(doc.index, AppendRequest(JSON, body))

    async def _listed(self, doc: Document) -> list[tuple[str, str]]:
        """(type, key) of every entity in the document's index."""
        try:
            read = await self.streams.state_snapshot(doc.index)
        except ProtocolError as error:
            if error.status in GONE:
                return []
            raise
        listed = []
        for entity in read.entities:
            message = json.loads(entity.message)
            listed.append((message["type"], message["key"]))
        return listed

    async def _read_all(self, name: str, start: int = 0) -> tuple[bytes, int, str]:
        """A stream's bytes from `start` to its tail as of the first read; where they end,
        and the stream's incarnation."""
        position: int | Sentinel = start if start else Sentinel.START
        first = await self.streams.read(name, position, READ_BYTES)
        chunks, end, tail = [first.data], first.end, first.snapshot.tail
        while end < tail:
            more = await self.streams.read(name, end, READ_BYTES)
            if more.end <= end:
                break
            chunks.append(more.data)
            end = more.end
        return b"".join(chunks), end, first.snapshot.incarnation
