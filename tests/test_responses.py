"""What a response says, decided by the pure core with the clock and jitter passed in: EOF,
Up-To-Date, cursors, ETags, 304 and Cache-Control for reads, SSE control events, errors."""

from __future__ import annotations

import json

import attrs
import pytest

from streams.protocol import caching, offsets, responses
from streams.protocol.errors import ProtocolError, bad_request
from streams.protocol.machine import Reply
from streams.protocol.offsets import Sentinel
from streams.protocol.responses import ReadView

NOW = caching.CURSOR_EPOCH + 1000 * caching.CURSOR_INTERVAL_SECS + 1  # interval 1000
JITTER = 100
VIEW = ReadView(0, 5, 5, False, "inc", "text/plain", None)


def read_reply(view: ReadView, **kw: object) -> Reply:
    options: dict[str, object] = {
        "start": 0,
        "cursor": None,
        "live": False,
        "if_none_match": None,
        "now": NOW,
        "jitter": JITTER,
    }
    options.update(kw)
    start, cursor = options.pop("start"), options.pop("cursor")
    return responses.read_reply(view, start, cursor, **options)  # type: ignore[arg-type]


def test_a_view_is_up_to_date_at_the_tail_and_at_eof_only_when_closed_too() -> None:
    assert VIEW.up_to_date and not VIEW.eof
    assert attrs.evolve(VIEW, closed=True).eof
    behind = attrs.evolve(VIEW, end=3, closed=True)
    assert not behind.up_to_date and not behind.eof


def test_live_headers_give_the_next_offset_and_a_cursor_until_eof() -> None:
    assert responses.live_headers(VIEW, None, NOW, JITTER) == {
        "Stream-Next-Offset": offsets.encode(5),
        "Stream-Up-To-Date": "true",
        "Stream-Cursor": "1000",
    }
    eof = responses.live_headers(attrs.evolve(VIEW, closed=True), None, NOW, JITTER)
    assert eof == {
        "Stream-Next-Offset": offsets.encode(5),
        "Stream-Up-To-Date": "true",
        "Stream-Closed": "true",
    }
    behind = responses.live_headers(attrs.evolve(VIEW, tail=9), None, NOW, JITTER)
    assert "Stream-Up-To-Date" not in behind


def test_the_cursor_moves_past_an_echoed_one_by_the_jitter() -> None:
    assert responses.live_headers(VIEW, "1000", NOW, JITTER)["Stream-Cursor"] == "1005"
    assert responses.live_headers(VIEW, "999", NOW, JITTER)["Stream-Cursor"] == "1000"


def test_a_catch_up_read_is_cacheable_with_an_etag() -> None:
    reply = read_reply(VIEW)
    assert reply.status == 200
    assert reply.headers["Content-Type"] == "text/plain"
    assert reply.headers["ETag"] == caching.etag("inc", 0, 5, False)
    assert reply.headers["Cache-Control"] == caching.catch_up_cache_control(None)


def test_cache_control_never_outlives_the_stream() -> None:
    reply = read_reply(attrs.evolve(VIEW, deadline=NOW + 7.5))
    assert reply.headers["Cache-Control"] == caching.catch_up_cache_control(7.5)


def test_an_empty_read_of_an_open_stream_is_revalidated_a_closed_one_is_cached() -> None:
    empty = attrs.evolve(VIEW, start=5)
    assert read_reply(empty).headers["Cache-Control"] == "no-cache"
    closed = attrs.evolve(empty, closed=True)
    assert read_reply(closed).headers["Cache-Control"] == caching.catch_up_cache_control(None)
    assert read_reply(closed).headers["ETag"] == caching.etag("inc", 5, 5, True)


def test_a_read_from_past_the_tail_says_where_it_asked_and_that_it_is_up_to_date() -> None:
    """PROTOCOL.md 5.6: 200, an empty body, and Stream-Next-Offset the requested offset. It
    holds all there is, so Stream-Up-To-Date (the reference server says so too); a cursor and
    a revalidated ETag of the empty range, as an empty read at the tail gets: a record that
    ends after the position changes the answer. Closed: EOF, cached like any EOF."""
    past = attrs.evolve(VIEW, start=8, end=8)  # the tail is 5
    assert past.up_to_date and not past.eof
    reply = read_reply(past, start=8)
    assert reply.status == 200
    assert reply.headers == {
        "Stream-Next-Offset": offsets.encode(8),
        "Stream-Up-To-Date": "true",
        "Stream-Cursor": "1000",
        "Content-Type": "text/plain",
        "ETag": caching.etag("inc", 8, 8, False),
        "Cache-Control": "no-cache",
    }
    closed = attrs.evolve(past, closed=True)
    assert closed.eof
    assert read_reply(closed, start=8).headers == {
        "Stream-Next-Offset": offsets.encode(8),
        "Stream-Up-To-Date": "true",
        "Stream-Closed": "true",
        "Content-Type": "text/plain",
        "ETag": caching.etag("inc", 8, 8, True),
        "Cache-Control": caching.catch_up_cache_control(None),
    }
    timeout = responses.no_data_reply(past, None, NOW, JITTER)  # a long-poll's 204
    assert timeout.status == 204
    assert timeout.headers["Stream-Next-Offset"] == offsets.encode(8)
    assert timeout.headers["Stream-Up-To-Date"] == "true"
    control = json.loads(responses.sse_control(past, None, NOW, JITTER).split(b"data:")[1])
    assert control == {
        "streamNextOffset": offsets.encode(8),
        "streamCursor": "1000",
        "upToDate": True,
    }
    last = json.loads(responses.sse_control(closed, None, NOW, JITTER).split(b"data:")[1])
    assert last == {"streamNextOffset": offsets.encode(8), "streamClosed": True, "upToDate": True}


def test_if_none_match_gives_304_without_content_type_but_never_live() -> None:
    tag = caching.etag("inc", 0, 5, False)
    not_modified = read_reply(VIEW, if_none_match=tag)
    assert not_modified.status == 304 and "Content-Type" not in not_modified.headers
    assert not_modified.headers["ETag"] == tag
    assert read_reply(VIEW, if_none_match=tag, live=True).status == 200
    assert read_reply(VIEW, if_none_match='"other"').status == 200


def test_a_read_from_now_is_not_stored() -> None:
    reply = read_reply(VIEW, start=Sentinel.NOW)
    assert reply.headers["Cache-Control"] == caching.NO_STORE and "ETag" not in reply.headers


def test_a_long_poll_without_data_is_204_with_where_to_go_on() -> None:
    reply = responses.no_data_reply(VIEW, None, NOW, JITTER)
    assert reply == Reply(204, responses.live_headers(VIEW, None, NOW, JITTER))


def test_sse_starts_with_its_encoding_and_each_batch_ends_with_a_control_event() -> None:
    text, as_base64 = responses.sse_reply("application/json")
    assert not as_base64 and text.headers == responses.SSE_HEADERS
    binary, as_base64 = responses.sse_reply("application/octet-stream")
    assert as_base64 and binary.headers["Stream-SSE-Data-Encoding"] == "base64"
    control = responses.sse_control(VIEW, None, NOW, JITTER)
    assert control.startswith(b"event: control\ndata:")
    assert json.loads(control.split(b"data:", 1)[1]) == {
        "streamNextOffset": offsets.encode(5),
        "streamCursor": "1000",
        "upToDate": True,
    }
    closed = responses.sse_control(attrs.evolve(VIEW, closed=True), None, NOW, JITTER)
    assert json.loads(closed.split(b"data:", 1)[1])["streamClosed"] is True


def test_errors_are_problem_json_where_a_body_may_go() -> None:
    error = bad_request("nope")
    reply = responses.error_reply(error, "GET")
    assert reply.status == 400 and reply.headers["Content-Type"] == "application/problem+json"
    assert json.loads(reply.body)["detail"] == "nope"
    assert responses.error_reply(error, "HEAD") == Reply(400, {})
    silent = ProtocolError(409, "Conflict", headers={"Stream-Closed": "true"}, body=False)
    assert responses.error_reply(silent, "POST") == Reply(409, {"Stream-Closed": "true"})


@pytest.mark.parametrize(
    ("status", "method", "expected"),
    [
        (200, "GET", (b"abc", 3)),
        (200, "HEAD", (b"", 3)),  # no body, and the length a GET's would have (RFC 9110 8.6)
        (204, "POST", (b"", None)),
        (304, "GET", (b"", None)),
    ],
)
def test_content_and_its_length(
    status: int, method: str, expected: tuple[bytes, int | None]
) -> None:
    assert responses.content(Reply(status, {}, b"abc"), method) == expected


def test_a_created_stream_is_named_by_its_url() -> None:
    assert responses.created(Reply(201, {"A": "b"}), "u").headers == {"A": "b", "Location": "u"}
    assert responses.created(Reply(200, {}), "u") == Reply(200, {})  # it existed already


def test_head_is_never_cached_and_location_is_as_addressed() -> None:
    reply = responses.head_reply(Reply(200, {"Stream-Next-Offset": "x"}))
    assert reply.headers == {"Stream-Next-Offset": "x", "Cache-Control": caching.NO_STORE}
    assert (
        responses.location("http", "h:1", None, "/v1/stream/a%20b") == "http://h:1/v1/stream/a%20b"
    )
    assert responses.location("https", None, ("10.0.0.1", 8), "/p") == "https://10.0.0.1:8/p"
    assert responses.location("http", None, None, "/p") == "http://localhost:80/p"


def test_cors_headers_only_for_browsers() -> None:
    assert responses.common_headers(None) == responses.SECURITY_HEADERS
    with_cors = responses.common_headers("https://app.test")
    assert (b"access-control-allow-origin", b"*") in with_cors
    assert responses.preflight() == Reply(204, responses.PREFLIGHT)


def test_cors_headers_only_for_allowed_origins() -> None:
    """DS_HTTP__CORS_ORIGINS: a listed origin is echoed, any other gets no CORS headers, and
    every response varies by Origin (a cache must not give one origin's to another)."""
    allowed = ("https://app.test", "http://localhost:3000")
    listed = dict(responses.common_headers("https://APP.test", allowed))
    assert listed[b"access-control-allow-origin"] == b"https://APP.test"
    assert b"Stream-Next-Offset" in listed[b"access-control-expose-headers"]
    assert listed[b"vary"] == b"Origin"
    for origin in ("https://evil.test", "https://app.test.evil", None):
        other = dict(responses.common_headers(origin, allowed))
        assert b"access-control-allow-origin" not in other
        assert other[b"vary"] == b"Origin"
        assert other[b"x-content-type-options"] == b"nosniff"
