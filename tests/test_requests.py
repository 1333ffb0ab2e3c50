"""What PUT, POST and GET ask for, from headers, query and body: the pure core, no server."""

from __future__ import annotations

import pytest

from streams.protocol import offsets
from streams.protocol.errors import ProtocolError
from streams.protocol.headers import Producer
from streams.protocol.machine import AppendRequest, CreateRequest
from streams.protocol.offsets import Sentinel
from streams.protocol.records import StreamConfig
from streams.protocol.requests import (
    CreateHeaders,
    Fork,
    ReadQuery,
    parse_append,
    parse_create,
    parse_fork,
    parse_query,
    parse_read,
    too_large,
)

MAX_NAME = 1024


def refused(call: object, *args: object) -> ProtocolError:
    with pytest.raises(ProtocolError) as error:
        call(*args)  # type: ignore[operator]
    return error.value


# ---- PUT ----------------------------------------------------------------------------------


def test_a_plain_create_defaults_to_octet_stream() -> None:
    create = parse_create({}, MAX_NAME)
    assert create == CreateHeaders(StreamConfig("application/octet-stream"), False, None)
    assert create.request(b"body") == CreateRequest(
        StreamConfig("application/octet-stream"), False, b"body"
    )


def test_a_create_takes_its_content_type_ttl_and_closure() -> None:
    headers = {"content-type": "text/plain", "stream-ttl": "60", "stream-closed": "TRUE"}
    assert parse_create(headers, MAX_NAME) == CreateHeaders(
        StreamConfig("text/plain", 60), True, None
    )
    expires = parse_create({"stream-expires-at": "2030-01-01T00:00:00Z"}, MAX_NAME)
    assert expires.config.expires_at == 1893456000.0


@pytest.mark.parametrize(
    "headers",
    [
        {"stream-ttl": "60", "stream-expires-at": "2030-01-01T00:00:00Z"},
        {"stream-ttl": "-1"},
        {"stream-expires-at": "tomorrow"},
        {"content-type": "nonsense"},
        {"stream-fork-offset": offsets.encode(0)},  # fork headers without a source
        {"stream-fork-sub-offset": "1"},
        {"stream-forked-from": "src", "stream-fork-offset": "12"},
        {"stream-forked-from": "src", "stream-fork-sub-offset": "x"},
    ],
)
def test_bad_create_headers_are_400(headers: dict[str, str]) -> None:
    assert refused(parse_create, headers, MAX_NAME).status == 400


def test_a_fork_may_leave_out_its_content_type() -> None:
    create = parse_create({"stream-forked-from": "/v1/stream/src"}, MAX_NAME)
    assert create.config.content_type == "" and create.fork == Fork("src")


def test_fork_headers() -> None:
    assert parse_fork({}, MAX_NAME) is None
    headers = {
        "stream-forked-from": "src",
        "stream-fork-offset": offsets.encode(5),
        "stream-fork-sub-offset": "3",
    }
    assert parse_fork(headers, MAX_NAME) == Fork("src", 5, 3)
    assert parse_fork({"stream-forked-from": "a%2Fb"}, MAX_NAME) == Fork("a/b")
    assert refused(parse_fork, {"stream-forked-from": "x" * 20}, 10).status == 400


# ---- POST ---------------------------------------------------------------------------------


def test_an_append_takes_its_body_and_headers() -> None:
    headers = {
        "content-type": "text/plain",
        "stream-seq": "7",
        "producer-id": "p",
        "producer-epoch": "1",
        "producer-seq": "2",
    }
    request = parse_append(headers).request(b"x")
    assert request == AppendRequest("text/plain", b"x", False, Producer("p", 1, 2), "7")


def test_a_close_needs_no_body_nor_content_type() -> None:
    request = parse_append({"stream-closed": "true"}).request(b"")
    assert request == AppendRequest(None, b"", True)


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        ({"content-type": "text/plain"}, b""),  # nothing to append
        ({}, b"x"),  # no content type
        ({"content-type": "text"}, b"x"),
    ],
)
def test_bad_appends_are_400(headers: dict[str, str], body: bytes) -> None:
    assert refused(parse_append(headers).request, body).status == 400


def test_producer_headers_are_checked_before_the_body_is_read() -> None:
    assert refused(parse_append, {"producer-id": "p"}).status == 400


def test_too_large() -> None:
    error = too_large(100)
    assert (error.status, error.detail) == (413, "body exceeds 100 bytes")


# ---- GET ----------------------------------------------------------------------------------


def test_query_parameters_keep_every_value_in_order() -> None:
    assert parse_query(b"offset=-1&live=sse&live=&x") == {
        "offset": ["-1"],
        "live": ["sse", ""],
        "x": [""],
    }


@pytest.mark.parametrize(
    ("query", "read"),
    [
        ({}, ReadQuery(Sentinel.START)),
        ({"offset": ["now"]}, ReadQuery(Sentinel.NOW)),
        ({"offset": [offsets.encode(3)], "live": ["sse"]}, ReadQuery(3, "sse")),
        (
            {"offset": ["-1"], "live": ["long-poll"], "cursor": ["1", "2"]},
            ReadQuery(Sentinel.START, "long-poll", "2"),
        ),
        ({"offset": ["-1"], "live": ["sse", ""]}, ReadQuery(Sentinel.START)),  # the last wins
    ],
)
def test_reads(query: dict[str, list[str]], read: ReadQuery) -> None:
    assert parse_read(query) == read


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ({"offset": ["-1", "-1"]}, "INVALID_OFFSET"),
        ({"offset": [""]}, "INVALID_OFFSET"),
        ({"offset": ["12"]}, "INVALID_OFFSET"),
        ({"offset": ["-1"], "live": ["push"]}, "BAD_REQUEST"),
        ({"live": ["sse"]}, "BAD_REQUEST"),  # live reads need an offset
    ],
)
def test_bad_reads_are_400(query: dict[str, list[str]], code: str) -> None:
    error = refused(parse_read, query)
    assert (error.status, error.code) == (400, code)
