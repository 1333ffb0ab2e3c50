"""An in-process server with its Yjs routes, requests to them, and pycrdt documents that
write lib0-framed updates: shared by the Yjs tests."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import pycrdt
import trio

from actors.registry import Registry
from actors.service import Streams
from actors.storage.memory import MemoryStorage
from actors.yjs import Documents
from streams.config import Settings
from streams.http import StreamsHTTP
from streams.protocol.yjs import frame, unframe
from streams.yjs_http import documents, mount
from tests.asgi import Exchange, Response

BASE = "/v1/yjs/t/docs/"


@attrs.define
class Served:
    app: StreamsHTTP
    documents: Documents
    registry: Registry

    async def __call__(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        query: str = "",
        headers: dict[str, str] | None = None,
    ) -> Response:
        exchange = Exchange(method, BASE + path, headers or {}, query)
        exchange.feed(body, more=False)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(exchange.serve, self.app)
            await exchange.done.wait()
        return exchange.response


@asynccontextmanager
async def serving(**settings: Any) -> AsyncIterator[Served]:
    """The protocol handler with Yjs mounted, over memory storage, on trio's clock."""
    async with trio.open_nursery() as nursery:
        registry = Registry(MemoryStorage(), clock=trio.current_time)
        await nursery.start(registry.run)
        http = StreamsHTTP(Streams(registry), Settings(storage_mode="memory", **settings))
        docs = documents(http)
        mount(http, docs)
        await nursery.start(docs.run)
        yield Served(http, docs, registry)
        nursery.cancel_scope.cancel()


def error_code(response: Response) -> str:
    assert response.headers["content-type"] == "application/json", response.headers
    code: str = json.loads(response.body)["error"]["code"]
    return code


class Writer:
    """A pycrdt document whose edits come out as lib0-framed updates."""

    def __init__(self, client_id: int | None = None) -> None:
        self.doc: pycrdt.Doc[Any] = (
            pycrdt.Doc() if client_id is None else pycrdt.Doc(client_id=client_id)
        )
        self.text = self.doc.get("text", type=pycrdt.Text)

    def insert(self, index: int, content: str) -> bytes:
        before = self.doc.get_state()
        self.text.insert(min(index, len(self.text)), content)
        return frame(self.doc.get_update(before))

    def delete(self, index: int, length: int) -> bytes:
        before = self.doc.get_state()
        size = len(self.text)
        if size:
            start = min(index, size - 1)
            del self.text[start : min(size, start + max(1, length))]
        return frame(self.doc.get_update(before))

    def apply(self, framed: bytes) -> None:
        for update in unframe(framed):
            self.doc.apply_update(update)


def text_of(snapshot: bytes, framed: bytes) -> str:
    """The text of a document loaded from a snapshot (raw update) and framed updates."""
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    if snapshot:
        doc.apply_update(snapshot)
    for update in unframe(framed):
        doc.apply_update(update)
    return str(doc.get("text", type=pycrdt.Text))
