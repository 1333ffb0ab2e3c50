"""The Yjs routes (docs/yjs.md), in-process: every operation and its errors."""

from __future__ import annotations

import json

import trio.testing

from streams.protocol import offsets
from streams.protocol.yjs import frame
from tests.asgi import Exchange
from tests.yjs_helpers import Served, Writer, error_code, serving, text_of

SMALL = {"yjs_compaction_threshold": 400, "long_poll_timeout": 1.0}


async def grow(served: Served, path: str, writer: Writer, count: int, size: int = 60) -> None:
    for number in range(count):
        update = writer.insert(len(writer.text), f"{number}:" + "x" * size)
        response = await served("POST", path, update)
        assert response.status == 204, response.body
    await served.documents.settled()


async def discover(served: Served, path: str) -> str:
    response = await served("GET", path, query="offset=snapshot")
    assert response.status == 307
    assert response.headers["cache-control"] == "private, max-age=5"
    location = response.headers["location"]
    assert location.startswith("/v1/yjs/t/docs/" + path + "?")
    return location.rpartition("offset=")[2]


async def load(served: Served, path: str) -> str:
    """What a new client sees: discovery, the snapshot, then the updates after it."""
    offset = await discover(served, path)
    snapshot = b""
    if offset.endswith("_snapshot"):
        response = await served("GET", path, query=f"offset={offset}")
        assert response.status == 200
        assert response.headers["content-type"] == "application/octet-stream"
        snapshot, offset = response.body, response.headers["stream-next-offset"]
    updates = await served("GET", path, query=f"offset={offset}")
    assert updates.status == 200
    return text_of(snapshot, updates.body)


async def test_create_is_idempotent_and_makes_the_default_awareness_stream() -> None:
    async with serving() as served:
        created = await served("PUT", "a/b/c")
        assert created.status == 201
        assert created.headers["location"].endswith("/v1/yjs/t/docs/a/b/c")
        assert created.headers["stream-next-offset"] == offsets.encode(0)
        assert (await served("PUT", "a/b/c")).status == 200
        assert (await served("HEAD", "a/b/c")).status == 200
        assert (await served("HEAD", "a/b/c", query="awareness=default")).status == 200
        other = await served("PUT", "a/b/c", headers={"Content-Type": "text/plain"})
        assert other.status == 409


async def test_discovery_redirects_to_the_start_until_a_snapshot_exists() -> None:
    async with serving() as served:
        missing = await served("GET", "nope", query="offset=snapshot")
        assert missing.status == 404
        assert error_code(missing) == "DOCUMENT_NOT_FOUND"
        await served("PUT", "doc")
        assert await discover(served, "doc") == "-1"


async def test_writes_are_framed_checked_and_stored_as_sent() -> None:
    async with serving() as served:
        for body in (frame(b"\0\0"), b"\x05abc"):  # missing before malformed
            assert error_code(await served("POST", "doc", body)) == "DOCUMENT_NOT_FOUND"
        await served("PUT", "doc")
        writer = Writer()
        first, second = writer.insert(0, "hello"), writer.insert(5, " world")
        written = await served("POST", "doc", first + second)  # a batch of two frames
        assert written.status == 204
        assert written.headers["stream-next-offset"] == offsets.encode(len(first + second))
        for bad in (b"", b"\x05abc", b"\x80", first + b"\x01"):
            refused = await served("POST", "doc", bad)
            assert refused.status == 400, bad
            assert error_code(refused) == "INVALID_REQUEST"
        closing = await served("POST", "doc", first, headers={"Stream-Closed": "true"})
        assert closing.status == 204  # the provider's producer closes as it leaves: ignored
        assert (await served("POST", "doc", second)).status == 204
        read = await served("GET", "doc", query="offset=-1")
        assert read.body == first + second + first + second  # nothing of the refused writes
        assert text_of(b"", read.body) == "hello world"  # applying an update twice is a no-op


async def test_compaction_moves_discovery_and_the_snapshot_says_where_to_continue() -> None:
    async with serving(**SMALL) as served:
        await served("PUT", "doc")
        writer = Writer()
        await grow(served, "doc", writer, 8)
        key = await discover(served, "doc")
        assert key.endswith("_snapshot")
        snapshot = await served("GET", "doc", query=f"offset={key}")
        covers = offsets.decode(snapshot.headers["stream-next-offset"])
        assert offsets.encode(covers - 1) + "_snapshot" == key  # upstream's key + 1 relation
        assert await load(served, "doc") == str(writer.text)
        early = await served("GET", "doc", query="offset=-1")  # updates are never removed
        assert text_of(b"", early.body) == str(writer.text)
        assert served.documents.metrics.compactions >= 1


async def test_a_replaced_snapshot_is_kept_while_redirects_to_it_may_be_cached(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with serving(**SMALL, yjs_snapshot_keep=5.0) as served:
        await served("PUT", "doc")
        writer = Writer()
        await grow(served, "doc", writer, 8)
        first = await discover(served, "doc")
        await grow(served, "doc", writer, 8)
        second = await discover(served, "doc")
        assert second != first
        await trio.sleep(4)
        assert (await served("GET", "doc", query=f"offset={first}")).status == 200
        await trio.sleep(2)
        gone = await served("GET", "doc", query=f"offset={first}")
        assert gone.status == 404
        assert error_code(gone) == "SNAPSHOT_NOT_FOUND"
        assert await load(served, "doc") == str(writer.text)


async def test_unknown_and_malformed_snapshots_are_not_found() -> None:
    async with serving() as served:
        await served("PUT", "doc")
        for key in ("9999999999999999_9999999999999999", offsets.encode(5), "x", "../../a"):
            response = await served("GET", "doc", query=f"offset={key}_snapshot")
            assert response.status == 404, key
            assert error_code(response) == "SNAPSHOT_NOT_FOUND"


async def test_a_failed_compaction_is_counted_and_retried_and_the_document_works() -> None:
    async with serving(**SMALL) as served:
        await served("PUT", "doc")
        assert (await served("POST", "doc", frame(b"\x07not a yjs update"))).status == 204
        writer = Writer()
        await grow(served, "doc", writer, 8)
        assert served.documents.metrics.compaction_failures == 1
        assert await discover(served, "doc") == "-1"
        await grow(served, "doc", writer, 8)  # another threshold's worth: tried again
        assert served.documents.metrics.compaction_failures == 2
        assert served.documents.metrics.compactions == 0
        read = await served("GET", "doc", query="offset=-1")
        assert read.status == 200 and len(read.body) > 800


async def test_long_poll_waits_for_the_next_update() -> None:
    async with serving(long_poll_timeout=30.0) as served, trio.open_nursery() as nursery:
        await served("PUT", "doc")
        tail = (await served("HEAD", "doc")).headers["stream-next-offset"]
        exchange = Exchange("GET", "/v1/yjs/t/docs/doc", {}, f"offset={tail}&live=long-poll")
        exchange.feed(b"", more=False)
        nursery.start_soon(exchange.serve, served.app)
        await trio.testing.wait_all_tasks_blocked()
        update = Writer().insert(0, "live")
        await served("POST", "doc", update)
        await exchange.done.wait()
        assert exchange.response.status == 200
        assert exchange.response.body == update


async def test_awareness_streams() -> None:
    async with serving() as served:
        missing = await served("PUT", "doc", query="awareness=cursors")
        assert (missing.status, error_code(missing)) == (404, "DOCUMENT_NOT_FOUND")
        await served("PUT", "doc")
        assert (await served("PUT", "doc", query="awareness=cursors")).status == 201
        assert (await served("PUT", "doc", query="awareness=cursors")).status == 200
        assert (await served("POST", "doc", frame(b"c"), "awareness=cursors")).status == 204
        assert (await served("POST", "doc", frame(b"p"), "awareness=presence")).status == 204
        cursors = await served("GET", "doc", query="awareness=cursors&offset=-1")
        assert cursors.body == frame(b"c")
        presence = await served("GET", "doc", query="awareness=presence&offset=-1")
        assert presence.body == frame(b"p")
        now = await served("GET", "doc", query="awareness=cursors&offset=now")
        assert now.status == 200 and now.body == b""
        raw = await served("POST", "doc", b"\x09\x01", "awareness=cursors")
        assert raw.status == 204  # awareness bytes pass through unread (spec 12.4)
        empty = await served("POST", "doc", b"", "awareness=cursors")
        assert (empty.status, error_code(empty)) == (400, "INVALID_REQUEST")
        assert (await served("DELETE", "doc", query="awareness=cursors")).status == 204
        again = await served("DELETE", "doc", query="awareness=cursors")
        assert (again.status, error_code(again)) == (404, "STREAM_NOT_FOUND")
        assert (await served("HEAD", "doc")).status == 200  # the document stays
        for name in ("", ".x", "a/b"):
            refused = await served("PUT", "doc", query=f"awareness={name}")
            assert refused.status == 400, name


async def test_awareness_streams_expire_and_a_post_makes_them_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with serving(yjs_awareness_ttl=3600) as served:
        await served("PUT", "doc")
        assert (await served("POST", "doc", frame(b"a"), "awareness=default")).status == 204
        await trio.sleep(3000)
        assert (await served("HEAD", "doc", query="awareness=default")).status == 200
        await trio.sleep(3700)
        expired = await served("HEAD", "doc", query="awareness=default")
        assert expired.status == 404
        assert (await served("POST", "doc", frame(b"b"), "awareness=default")).status == 204
        read = await served("GET", "doc", query="awareness=default&offset=-1")
        assert read.body == frame(b"b")
        assert (await served("HEAD", "doc")).status == 200  # documents do not expire


async def test_delete_removes_the_document_its_snapshots_and_awareness() -> None:
    async with serving(**SMALL) as served:
        await served("PUT", "doc")
        await served("PUT", "doc", query="awareness=cursors")
        await grow(served, "doc", Writer(), 8)
        key = await discover(served, "doc")
        assert (await served("DELETE", "doc")).status == 204
        for method, query, body in [
            ("GET", "offset=-1", b""),
            ("GET", "offset=snapshot", b""),
            ("GET", f"offset={key}", b""),
            ("HEAD", "", b""),
            ("POST", "", frame(b"x")),
            ("DELETE", "", b""),
            ("HEAD", "awareness=default", b""),
            ("HEAD", "awareness=cursors", b""),
            ("PUT", "awareness=cursors", b""),
            ("POST", "awareness=cursors", frame(b"x")),
        ]:
            response = await served(method, "doc", body, query)
            assert response.status == 404, (method, query)
        assert (await served("PUT", "doc")).status == 201
        assert await discover(served, "doc") == "-1"
        assert (await served("GET", "doc", query="offset=-1")).body == b""


async def test_other_methods_paths_and_internal_streams_are_refused() -> None:
    async with serving() as served:
        await served("PUT", "doc")
        for query in ("", "awareness=default"):
            patch = await served("PATCH", "doc", query=query)
            assert (patch.status, error_code(patch)) == (405, "INVALID_REQUEST")
        for path in ("foo/../bar", "foo/./bar", "a//b", "a/", ".hidden", "a/.updates"):
            refused = await served("GET", path, query="offset=snapshot")
            assert (refused.status, error_code(refused)) == (400, "INVALID_REQUEST"), path
        internal = Exchange("GET", "/v1/stream/__ds/yjs/t/docs/doc/.updates", {}, "offset=-1")
        internal.feed(b"", more=False)
        await internal.serve(served.app)
        assert internal.response.status == 404


async def test_auth_applies_to_documents() -> None:
    secret = "s" * 32
    async with serving(auth_mode="jwt", auth_jwt_secret=secret) as served:
        refused = await served("PUT", "doc")
        assert (refused.status, error_code(refused)) == (401, "UNAUTHORIZED")
        assert "www-authenticate" in refused.headers


def test_error_bodies_are_the_spec_json() -> None:
    from streams.protocol.yjs import error_body

    assert json.loads(error_body("X", "y")) == {"error": {"code": "X", "message": "y"}}
