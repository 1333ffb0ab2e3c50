"""The Yjs routes (`<DS_YJS__BASE_PATH>/<service>/docs/<doc path>`, docs/yjs.md): parse,
ask `actors.yjs.Documents`, answer. Reads of updates and awareness are this server's
ordinary reads (`streams.reads`) of the document's streams; errors are the Yjs spec's JSON
(`{"error": {"code", "message"}}`) instead of problem+json."""

from __future__ import annotations

from typing import TYPE_CHECKING

from actors.yjs import Documents
from streams.protocol import offsets, responses, yjs
from streams.protocol.errors import ProtocolError
from streams.protocol.machine import Reply
from streams.protocol.requests import parse_append, parse_create, parse_read
from streams.protocol.yjs import Document
from streams.request import Request, respond
from streams.sending import Sender

if TYPE_CHECKING:
    from streams.http import StreamsHTTP

OCTET_STREAM = "application/octet-stream"
READ_PARAMETERS = ("offset", "live", "cursor")  # what a read of updates passes on


def mount(http: StreamsHTTP, documents: Documents) -> YjsHTTP:
    """Serve Yjs documents under `DS_YJS__BASE_PATH` beside the streams of `http`."""
    http.yjs = YjsHTTP(http, documents, http.settings.yjs_base_path)
    return http.yjs


def documents(http: StreamsHTTP) -> Documents:
    """The Yjs documents of a server's settings (`run` them in its nursery)."""
    settings = http.settings
    return Documents(
        http.streams,
        threshold=settings.yjs_compaction_threshold,
        keep=settings.yjs_snapshot_keep,
        awareness_ttl=settings.yjs_awareness_ttl,
        merges=settings.yjs_merge_workers,
    )


class YjsHTTP:
    """The Yjs routes of one `StreamsHTTP` (its bounds, reads, auth and metrics)."""

    def __init__(self, http: StreamsHTTP, documents: Documents, base_path: str) -> None:
        self.http = http
        self.documents = documents
        self.prefix = base_path.rstrip("/").encode() + b"/"

    def owns(self, path: bytes) -> bool:
        return path.startswith(self.prefix)

    async def route(self, request: Request, send: Sender, path: bytes) -> None:
        """Serve one request; an error before the response started is the spec's JSON."""
        missing = "DOCUMENT_NOT_FOUND"  # what a 404 means where the request failed
        try:
            doc = yjs.document(path[len(self.prefix) :], self.http.settings.max_name_bytes)
            if self.http.auth is not None:
                self.http.auth.admit(request, doc.name)  # 401/403 before any body is read
            if request.method == "OPTIONS":
                await respond(request, send, responses.preflight())
                return
            query = request.query()
            if "awareness" in query:
                missing = "STREAM_NOT_FOUND"
                name = yjs.awareness_name(query["awareness"][-1])
                await self._awareness(request, send, doc, name, query)
                return
            offset = query.get("offset", [""])[-1]
            if request.method == "GET" and yjs.is_snapshot_key(offset):
                missing = "SNAPSHOT_NOT_FOUND"
            await self._document(request, send, doc, query, offset)
        except ProtocolError as failure:
            if send.started:
                raise
            await self._error(request, send, failure, missing)

    async def _error(
        self, request: Request, send: Sender, failure: ProtocolError, missing: str
    ) -> None:
        code = yjs.yjs_code(failure, missing)
        self.http.metrics.errors[code, failure.status] += 1
        message = failure.detail or failure.title
        headers = {**failure.headers, "Content-Type": "application/json"}
        await respond(request, send, Reply(failure.status, headers, yjs.error_body(code, message)))

    async def _document(
        self,
        request: Request,
        send: Sender,
        doc: Document,
        query: dict[str, list[str]],
        offset: str,
    ) -> None:
        method = request.method
        documents = self.documents
        if method == "GET" and offset == yjs.SNAPSHOT:
            request.operation = "yjs-discover"
            current = await documents.discover(doc)
            target = current.key if current is not None else "-1"
            items = [(key, value) for key, values in query.items() for value in values]
            location = yjs.redirect(self._raw_path(request), items, target)
            headers = {"Location": location, "Cache-Control": yjs.DISCOVERY_CACHE}
            await respond(request, send, Reply(307, headers))
        elif method == "GET" and yjs.is_snapshot_key(offset):
            request.operation = "yjs-snapshot"
            data, covers = await documents.snapshot(doc, offset)
            headers = {
                "Content-Type": OCTET_STREAM,
                "Stream-Next-Offset": offsets.encode(covers),
            }
            await respond(request, send, Reply(200, headers, data))
        elif method == "GET":
            read = parse_read({k: v for k, v in query.items() if k in READ_PARAMETERS})
            request.operation = "yjs-read"
            await self.http.reads.get(request, doc.updates, read, send)
        elif method == "HEAD":
            reply = responses.head_reply(await documents.head(doc))
            await respond(request, send, reply)
        elif method == "PUT":
            await respond(request, send, await self._put(request, doc))
        elif method == "POST":
            request.operation = "yjs-append"
            await self._post(request, send, doc, None)
        elif method == "DELETE":
            await respond(request, send, await documents.delete(doc))
        else:
            raise yjs.error(405, "INVALID_REQUEST", f"{method} is not supported")

    async def _put(self, request: Request, doc: Document) -> Reply:
        settings = self.http.settings
        headers = {"content-type": OCTET_STREAM, **request.headers}
        create = parse_create(headers, settings.max_name_bytes)
        if create.fork is not None:
            raise yjs.invalid("documents cannot be forks")
        body = await request.body(settings.max_append_bytes)
        if body:
            yjs.check_framing(body)
        asked = create.request(body, settings.max_stream_bytes)
        reply = await self.documents.create(doc, asked)
        return responses.created(reply, request.url())

    async def _post(
        self, request: Request, send: Sender, doc: Document, awareness: str | None
    ) -> None:
        """An append stored as sent, answered before the readers it wakes run (writers first,
        as for streams). Document updates must be lib0-framed (compaction reads them);
        awareness updates pass through unread (YJS-PROTOCOL.md 12.4)."""
        settings = self.http.settings
        # Documents and awareness are never closed by a client: the official provider's
        # producer sends `Stream-Closed` as it disconnects, and others still write.
        headers = {k: v for k, v in request.headers.items() if k != "stream-closed"}
        append = parse_append({**headers, "content-type": OCTET_STREAM})
        body = await request.body(settings.max_append_bytes)
        if awareness is not None:
            if not body:
                raise yjs.invalid("an update is required")
        else:
            try:
                yjs.check_framing(body)
            except ProtocolError:
                await self.documents.head(doc)  # a missing document is 404 before a bad body
                raise
        receipt = self.http.streams.receipt()
        try:
            asked = append.request(body, settings.max_stream_bytes)
            if awareness is None:
                reply = await self.documents.append(doc, asked, receipt)
            else:
                reply = await self.documents.append_awareness(doc, awareness, asked, receipt)
            await respond(request, send, reply)
        finally:
            if receipt is not None:
                receipt.release()

    async def _awareness(
        self, request: Request, send: Sender, doc: Document, name: str, query: dict[str, list[str]]
    ) -> None:
        method = request.method
        documents = self.documents
        stream = doc.awareness(name)
        if method == "GET":
            request.operation = "yjs-awareness-read"
            read = parse_read({k: v for k, v in query.items() if k in READ_PARAMETERS})
            await self.http.reads.get(request, stream, read, send)
        elif method == "HEAD":
            reply = responses.head_reply(await self.http.streams.head(stream))
            await respond(request, send, reply)
        elif method == "PUT":
            created = await documents.create_awareness(doc, name)
            await respond(request, send, Reply(201 if created else 200))
        elif method == "POST":
            request.operation = "yjs-awareness-append"
            await self._post(request, send, doc, name)
        elif method == "DELETE":
            await respond(request, send, await self.http.streams.delete(stream))
        else:
            raise yjs.error(405, "INVALID_REQUEST", f"{method} is not supported")

    @staticmethod
    def _raw_path(request: Request) -> str:
        scope = request.scope
        raw = scope.get("raw_path")
        if raw is None:
            return str(scope["path"])
        return bytes(raw).partition(b"?")[0].decode("latin-1")
