"""`/metrics`, `/readyz` and `/healthz` of the app started in-process: the exposition parses
with the official client's parser, and what it says moves with the requests made."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest
import trio
import trio.testing

from actors.storage import file_io
from actors.storage.files import FileStorage
from actors.storage.memory import MemoryStorage
from streams.config import Settings
from streams.metrics import StreamsOnDisk
from tests.ops import call, exchange, scrape, started_app, value
from tests.test_read_only import refusing_writes

MEMORY = Settings(storage_mode="memory")
TEXT = {"Content-Type": "text/plain"}
JSON = {"Content-Type": "application/json"}
STREAM = "/v1/stream/"


async def test_requests_appends_commits_and_errors_are_counted() -> None:
    async with started_app(Settings(storage_mode="memory", disk_scan_interval=1e-9)) as app:
        before = await scrape(app)
        assert not value(before, "durable_streams_requests_total", operation="create", status="201")
        assert value(before, "durable_streams_streams_on_disk") == 0
        assert (await call(app, "PUT", STREAM + "s", TEXT, b"first")).status == 201
        assert (await call(app, "POST", STREAM + "s", TEXT, b"hello")).status == 204
        assert (await call(app, "POST", STREAM + "s", TEXT, b"world!")).status == 204
        assert (await call(app, "GET", STREAM + "s?offset=-1")).status == 200
        assert (await call(app, "GET", STREAM + "missing?offset=-1")).status == 404
        assert (await call(app, "HEAD", STREAM + "s")).status == 200
        assert (await call(app, "OPTIONS", STREAM + "s")).status == 204
        after = await scrape(app)

    def requests(operation: str, status: str) -> float:
        return value(after, "durable_streams_requests_total", operation=operation, status=status)

    assert requests("create", "201") == 1
    assert requests("append", "204") == 2
    assert requests("read", "200") == 1
    assert requests("read", "404") == 1
    assert requests("head", "200") == 1
    assert requests("options", "204") == 1
    errors = value(after, "durable_streams_errors_total", code="STREAM_NOT_FOUND", status="404")
    assert errors == 1
    assert value(after, "durable_streams_append_bytes_total") == len(b"hello" + b"world!")
    assert value(after, "durable_streams_append_records_total") == 2
    assert value(after, "durable_streams_commit_seconds_count") == 3  # the create, 2 appends
    assert value(after, "durable_streams_commit_seconds_bucket", le="+Inf") == 3
    assert value(after, "durable_streams_commit_seconds_sum") > 0
    assert value(after, "durable_streams_live_actors") == 1
    assert value(after, "durable_streams_streams_on_disk") == 1
    assert value(after, "process_resident_memory_bytes") > 0


async def test_live_readers_are_counted_while_they_wait() -> None:
    async with started_app(Settings(storage_mode="memory", long_poll_timeout=600)) as app:
        assert (await call(app, "PUT", STREAM + "s", TEXT)).status == 201
        async with trio.open_nursery() as nursery:
            sse = exchange("GET", STREAM + "s", query="offset=-1&live=sse")
            poll = exchange("GET", STREAM + "s", query="offset=-1&live=long-poll")
            for reader in (sse, poll):
                reader.feed(b"", more=False)
                nursery.start_soon(reader.serve, app)
            await trio.testing.wait_all_tasks_blocked()
            live = await scrape(app)
            assert value(live, "durable_streams_live_readers", mode="sse") == 1
            assert value(live, "durable_streams_live_readers", mode="long-poll") == 1

            assert (await call(app, "POST", STREAM + "s", TEXT, b"x")).status == 204
            await poll.done.wait()  # the append ends the long-poll
            sse.disconnect()  # and the SSE client goes away
            await trio.testing.wait_all_tasks_blocked()
        done = await scrape(app)
    assert value(done, "durable_streams_live_readers", mode="sse") == 0
    assert value(done, "durable_streams_live_readers", mode="long-poll") == 0
    sse_read = value(done, "durable_streams_requests_total", operation="read-sse", status="200")
    assert sse_read == 1
    long_poll = {"operation": "read-live-longpoll", "status": "200"}
    assert value(done, "durable_streams_requests_total", **long_poll) == 1


async def test_refusals_are_counted_by_the_limit_reached() -> None:
    settings = Settings(
        storage_mode="memory",
        max_connections=2,
        max_append_bytes=100,
        max_buffered_body_bytes=100,
        max_snapshot_entities=0,
    )
    async with started_app(settings) as app:
        assert (await call(app, "PUT", STREAM + "j", JSON)).status == 201
        change = {"type": "t", "key": "k", "value": 1, "headers": {"operation": "upsert"}}
        appended = await call(app, "POST", STREAM + "j", JSON, json.dumps([change]).encode())
        assert appended.status == 204
        # The snapshot budget: one entity is more than none.
        assert (await call(app, "GET", STREAM + "j?state=snapshot")).status == 503
        async with trio.open_nursery() as nursery:
            # The body budget: a body being received holds it all.
            held = exchange("POST", STREAM + "j", {**JSON, "Content-Length": "100"})
            nursery.start_soon(held.serve, app)
            await trio.testing.wait_all_tasks_blocked()
            assert (await call(app, "POST", STREAM + "j", JSON, b"[1]")).status == 503
            # The request cap: two in progress.
            second = exchange("POST", STREAM + "j", {**JSON, "Content-Length": "0"})
            nursery.start_soon(second.serve, app)
            await trio.testing.wait_all_tasks_blocked()
            assert (await call(app, "HEAD", STREAM + "j")).status == 503
            held.feed(b"[2]" + b" " * 97, more=False)
            second.feed(b"", more=False)
        scraped = await scrape(app)
    for limit in ("requests", "bodies", "snapshots"):
        assert value(scraped, "durable_streams_refused_total", limit=limit) == 1, limit
    assert value(scraped, "durable_streams_errors_total", code="BUSY", status="503") == 3
    assert value(scraped, "durable_streams_requests_total", operation="head", status="503") == 1
    snapshot = {"operation": "state-snapshot", "status": "503"}
    assert value(scraped, "durable_streams_requests_total", **snapshot) == 1


async def test_a_token_guards_metrics_when_set() -> None:
    async with started_app(Settings(storage_mode="memory", metrics_token="s3cret")) as app:
        missing = await call(app, "GET", "/metrics")
        assert missing.status == 401
        assert missing.headers["www-authenticate"].startswith("Bearer")
        assert b"durable_streams" not in missing.body
        for wrong in ("Bearer s3cre", "Bearer s3cret2", "Basic s3cret", "s3cret", "Bearer"):
            assert (await call(app, "GET", "/metrics", {"Authorization": wrong})).status == 401
        scraped = await scrape(app, {"Authorization": "Bearer s3cret"})
        assert "durable_streams_live_actors" in {name for name, _ in scraped}
        lower = await call(app, "GET", "/metrics", {"Authorization": "bearer s3cret"})
        assert lower.status == 200  # the scheme is case-insensitive
        assert (await call(app, "GET", "/healthz")).status == 200  # health stays open
        assert (await call(app, "GET", "/readyz")).status == 200


async def test_metrics_negotiate_openmetrics() -> None:
    async with started_app(MEMORY) as app:
        accept = {"Accept": "application/openmetrics-text; version=1.0.0"}
        response = await call(app, "GET", "/metrics", accept)
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.body.endswith(b"# EOF\n")


async def test_streams_on_disk_are_counted_at_most_once_per_interval(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    storage = FileStorage(tmp_path, durable=False)
    for name in ("a", "b", "c"):
        (await storage.create(name)).close()
    counted = StreamsOnDisk(storage, interval=60)
    await counted.refresh()
    assert counted.value == 3
    (await storage.create("d")).close()
    await counted.refresh()
    assert counted.value == 3  # cached
    await trio.sleep(60)
    await counted.refresh()
    assert counted.value == 4
    await storage.remove("a")
    await trio.sleep(60)
    await counted.refresh()
    assert counted.value == 3
    storage.close()

    memory = StreamsOnDisk(MemoryStorage(), interval=1)
    await memory.refresh()
    assert memory.value == 0


async def test_ready_once_started_with_writable_storage_and_not_while_stopping(
    tmp_path: Path,
) -> None:
    async with started_app(Settings(data_dir=tmp_path)) as app:
        assert (await call(app, "GET", "/healthz")).status == 200
        ready = await call(app, "GET", "/readyz")
        assert (ready.status, ready.body) == (200, b"ready\n")
        app.stopping = True  # what a graceful shutdown sets first
        stopping = await call(app, "GET", "/readyz")
        assert (stopping.status, stopping.body) == (503, b"not ready: shutting down\n")
        assert (await call(app, "GET", "/healthz")).status == 200  # alive all the same


async def test_not_ready_before_start_nor_on_read_only_storage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with started_app(MEMORY) as app:
        app.protocol = None  # as before start-up finished
        starting = await call(app, "GET", "/readyz")
        assert (starting.status, starting.body) == (503, b"not ready: starting\n")
    FileStorage(tmp_path, durable=True).close()  # a data directory, then mounted read-only
    monkeypatch.setattr(file_io, "open_file", refusing_writes(errno.EROFS))
    async with started_app(Settings(data_dir=tmp_path)) as app:
        read_only = await call(app, "GET", "/readyz")
        assert read_only.status == 503
        assert read_only.body.startswith(b"not ready: storage is read-only")
        assert (await call(app, "GET", "/healthz")).status == 200
