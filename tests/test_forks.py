"""The rules of creating a fork, in the pure core: what may be forked, from where, and the
fork's configuration (content type, TTL inheritance, offset, depth)."""

from __future__ import annotations

import pytest

from streams.protocol import forks
from streams.protocol.errors import ProtocolError, gone
from streams.protocol.machine import CreateRequest
from streams.protocol.records import StreamConfig
from streams.protocol.requests import Fork

SOURCE = forks.Source(
    StreamConfig("text/plain; charset=utf-8", ttl=60), tail=10, soft_deleted=False
)


def refused(call: object, *args: object) -> ProtocolError:
    with pytest.raises(ProtocolError) as error:
        call(*args)  # type: ignore[operator]
    return error.value


def test_a_stream_cannot_fork_itself() -> None:
    assert refused(forks.check_target, "a", Fork("a")).status == 409
    forks.check_target("b", Fork("a"))


def test_a_missing_source_is_named_so_other_errors_pass() -> None:
    missing = forks.source_error(ProtocolError(404, "Not Found"))
    assert (missing.status, missing.detail) == (404, "fork source stream not found")
    error = gone()
    assert forks.source_error(error) is error


def test_the_anchor_is_the_offset_asked_or_the_tail() -> None:
    assert forks.anchor(Fork("s"), SOURCE, 100) == 10
    assert forks.anchor(Fork("s", 4), SOURCE, 100) == 4
    beyond = refused(forks.anchor, Fork("s", 11), SOURCE, 100)
    assert (beyond.status, beyond.detail) == (400, "Stream-Fork-Offset is beyond the source's tail")


def test_a_deleted_source_or_one_at_the_depth_limit_cannot_be_forked() -> None:
    deleted = forks.Source(SOURCE.config, 10, soft_deleted=True)
    assert refused(forks.anchor, Fork("s"), deleted, 100).code == "SOURCE_DELETED"
    deep = forks.Source(StreamConfig("text/plain", fork_depth=3), 10, False)
    assert refused(forks.anchor, Fork("s"), deep, 3).code == "FORK_DEPTH_EXCEEDED"
    assert forks.anchor(Fork("s"), deep, 4) == 10


def test_a_fork_inherits_content_type_and_ttl_and_starts_where_it_was_walked_to() -> None:
    request = CreateRequest(StreamConfig(""), closed=True, body=b"x")
    forked = forks.forked(request, Fork("src", 4, 2), SOURCE, 6, 0)
    assert forked == CreateRequest(
        StreamConfig(
            "text/plain; charset=utf-8", ttl=60, fork_source="src", fork_offset=6, fork_depth=1
        ),
        closed=True,
        body=b"x",
        fork_offset=4,
    )


def test_a_fork_with_its_own_expiry_keeps_it() -> None:
    request = CreateRequest(StreamConfig("TEXT/PLAIN", expires_at=5.0))
    config = forks.forked(request, Fork("src"), SOURCE, 10, 0).config
    assert (config.ttl, config.expires_at) == (None, 5.0)
    assert config.content_type == SOURCE.config.content_type  # the source's spelling


def test_a_fork_cannot_change_the_content_type_nor_start_past_the_tail() -> None:
    other = CreateRequest(StreamConfig("application/json"))
    assert refused(forks.forked, other, Fork("src"), SOURCE, 10, 0).code == "CONTENT_TYPE"
    left = refused(forks.forked, CreateRequest(StreamConfig("")), Fork("src"), SOURCE, 10, 1)
    assert left.detail == "Stream-Fork-Sub-Offset is beyond the source's tail"
