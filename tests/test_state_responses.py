"""What reads of a State Protocol view answer (streams/protocol/views.py): pure, no server."""

from __future__ import annotations

from typing import Any

import pytest

from streams.protocol import views
from streams.protocol.errors import ProtocolError
from streams.protocol.responses import ReadView

VIEW = ReadView(0, 120, 120, False, "inc", "application/json", None)


def reply(view: ReadView = VIEW, **options: Any) -> Any:
    arguments: dict[str, Any] = {
        "base": 0,
        "types": None,
        "cursor": None,
        "skipped": 0,
        "compacting": False,
        "live": False,
        "if_none_match": None,
        "now": 1e9,
        "jitter": 1,
    }
    arguments.update(options)
    base, types, cursor = arguments.pop("base"), arguments.pop("types"), arguments.pop("cursor")
    return views.snapshot_reply(view, base, types, cursor, **arguments)


def test_a_snapshot_is_up_to_date_at_the_view_s_offset() -> None:
    headers = reply(skipped=3).headers
    assert headers["Stream-Next-Offset"] == "0000000000000000_0000000000000120"
    assert headers["Stream-Up-To-Date"] == "true"
    assert headers["Stream-State-Skipped"] == "3"
    assert "Stream-State-Base" not in headers


def test_the_etag_varies_with_offset_base_types_and_closure() -> None:
    tags = {
        reply().headers["ETag"],
        reply(ReadView(0, 130, 130, False, "inc", "application/json", None)).headers["ETag"],
        reply(base=60).headers["ETag"],
        reply(types=frozenset({"todo"})).headers["ETag"],
        reply(types=frozenset({"user"})).headers["ETag"],
        reply(ReadView(0, 120, 120, True, "inc", "application/json", None)).headers["ETag"],
    }
    assert len(tags) == 6
    assert (
        reply(types=frozenset({"a", "b"})).headers["ETag"]
        == reply(types=frozenset({"b", "a"})).headers["ETag"]
    )


def test_if_none_match_gives_304_except_live() -> None:
    tag = reply().headers["ETag"]
    assert reply(if_none_match=tag).status == 304
    assert reply(if_none_match=tag, live=True).status == 200


def test_a_compacting_stream_s_snapshot_is_revalidated_on_every_use() -> None:
    assert reply().headers["Cache-Control"].startswith("public")
    compacted = reply(base=60, compacting=True).headers
    assert compacted["Cache-Control"] == "no-cache"
    assert compacted["Stream-State-Base"] == "0000000000000000_0000000000000060"


def test_an_absent_entity_is_404_with_the_offset() -> None:
    with pytest.raises(ProtocolError) as raised:
        views.entity_reply(120, None, "todo", "a")
    assert (raised.value.status, raised.value.code) == (404, "ENTITY_NOT_FOUND")
    assert views.entity_reply(120, b"null", "todo", "a").body == b"null"
