"""Settings the HTTP layer follows, in-process: the stream base path (and the plural
`/v1/streams/` upstream's proxy uses), the CORS origins, and the size limit of one stream."""

from __future__ import annotations

from typing import Any

import trio

from actors.registry import Registry
from actors.service import Streams
from actors.storage.memory import MemoryStorage
from streams.config import Settings
from streams.http import StreamsHTTP
from tests.asgi import Exchange, Response

TEXT = {"Content-Type": "text/plain"}


async def serving(nursery: trio.Nursery, **settings: Any) -> StreamsHTTP:
    registry = Registry(MemoryStorage())
    await nursery.start(registry.run)
    return StreamsHTTP(Streams(registry), Settings(storage_mode="memory", **settings))


async def call(
    app: StreamsHTTP,
    method: str,
    path: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    query: str = "",
) -> Response:
    exchange = Exchange(method, path, headers or {}, query)
    exchange.feed(body, more=False)
    await exchange.serve(app)
    return exchange.response


async def test_streams_live_under_the_base_path() -> None:
    async with trio.open_nursery() as nursery:
        app = await serving(nursery, stream_base_path="/api/streams")
        created = await call(app, "PUT", "/api/streams/a/b", b"x", TEXT)
        assert created.status == 201
        assert created.headers["location"].endswith("/api/streams/a/b")
        assert (await call(app, "GET", "/api/streams/a/b", query="offset=-1")).body == b"x"
        for elsewhere in ("/v1/stream/a/b", "/v1/streams/a/b", "/api/streamsa/b"):
            assert (await call(app, "GET", elsewhere, query="offset=-1")).status == 404
        fork = await call(
            app, "PUT", "/api/streams/f", headers={"Stream-Forked-From": "/api/streams/a/b"}
        )
        assert fork.status == 201
        assert (await call(app, "GET", "/api/streams/f", query="offset=-1")).body == b"x"
        nursery.cancel_scope.cancel()


async def test_the_default_base_also_serves_the_plural_path() -> None:
    """Upstream's LLM proxy (packages/proxy) hard-codes /v1/streams/."""
    async with trio.open_nursery() as nursery:
        app = await serving(nursery)
        assert (await call(app, "PUT", "/v1/streams/chat", b"hi", TEXT)).status == 201
        assert (await call(app, "GET", "/v1/stream/chat", query="offset=-1")).body == b"hi"
        await call(app, "POST", "/v1/stream/chat", b"!", TEXT)
        assert (await call(app, "GET", "/v1/streams/chat", query="offset=-1")).body == b"hi!"
        fork = await call(
            app, "PUT", "/v1/streams/f", headers={"Stream-Forked-From": "/v1/streams/chat"}
        )
        assert fork.status == 201
        assert (await call(app, "GET", "/v1/streams/f", query="offset=-1")).body == b"hi!"
        nursery.cancel_scope.cancel()


async def test_cors_follows_the_configured_origins() -> None:
    async with trio.open_nursery() as nursery:
        app = await serving(nursery, cors_origins=("https://app.test",))
        await call(app, "PUT", "/v1/stream/s", b"x", TEXT)
        allowed = await call(
            app, "GET", "/v1/stream/s", headers={"Origin": "https://app.test"}, query="offset=-1"
        )
        assert allowed.headers["access-control-allow-origin"] == "https://app.test"
        assert allowed.headers["vary"] == "Origin"
        other = await call(
            app, "GET", "/v1/stream/s", headers={"Origin": "https://evil.test"}, query="offset=-1"
        )
        assert other.status == 200
        assert "access-control-allow-origin" not in other.headers
        preflight = {"Origin": "https://app.test", "Access-Control-Request-Method": "POST"}
        answered = await call(app, "OPTIONS", "/v1/stream/s", headers=preflight)
        assert answered.status == 204
        assert answered.headers["access-control-allow-origin"] == "https://app.test"
        assert "POST" in answered.headers["access-control-allow-methods"]
        refused = await call(
            app, "OPTIONS", "/v1/stream/s", headers={**preflight, "Origin": "https://evil.test"}
        )
        assert "access-control-allow-origin" not in refused.headers
        nursery.cancel_scope.cancel()


async def test_an_append_past_the_stream_limit_gets_413_and_appends_nothing() -> None:
    async with trio.open_nursery() as nursery:
        app = await serving(nursery, max_stream_bytes=10)
        assert (await call(app, "PUT", "/v1/stream/s", b"12345", TEXT)).status == 201
        assert (await call(app, "POST", "/v1/stream/s", b"67890", TEXT)).status == 204  # at it
        refused = await call(app, "POST", "/v1/stream/s", b"x", TEXT)
        assert refused.status == 413
        assert refused.problem()["code"] == "STREAM_TOO_LARGE"
        closing = {**TEXT, "Stream-Closed": "true"}
        assert (await call(app, "POST", "/v1/stream/s", b"x", closing)).status == 413
        read = await call(app, "GET", "/v1/stream/s", query="offset=-1")
        assert read.body == b"1234567890"
        assert "stream-closed" not in read.headers  # the refused close did not happen either
        assert (await call(app, "POST", "/v1/stream/s", b"", closing)).status == 204  # no data
        too_big = await call(app, "PUT", "/v1/stream/t", b"x" * 11, TEXT)
        assert too_big.status == 413
        assert (await call(app, "HEAD", "/v1/stream/t")).status == 404
        # A fork's inherited data is its source's: the fork may hold its own 10 bytes.
        fork = await call(
            app, "PUT", "/v1/stream/f", headers={"Stream-Forked-From": "/v1/stream/s"}
        )
        assert fork.status == 201
        assert (await call(app, "POST", "/v1/stream/f", b"abcdefghij", TEXT)).status == 204
        assert (await call(app, "POST", "/v1/stream/f", b"k", TEXT)).status == 413
        nursery.cancel_scope.cancel()
