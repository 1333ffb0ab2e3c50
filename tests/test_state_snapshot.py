"""The snapshot body: a JSON array of the markers around the entities' insert messages, in
pieces of bounded size, whose length is known before the first piece; folded again it is the
same state."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from state import snapshot
from state.view import View
from tests.test_state_view import BIG, folded, put, stored


def start(offset: str) -> dict[str, Any]:
    return {"headers": {"control": "snapshot-start", "offset": offset}}


def end(offset: str) -> dict[str, Any]:
    return {"headers": {"control": "snapshot-end", "offset": offset}}


def test_markers() -> None:
    assert snapshot.marker("snapshot-start", "0000_0042") == (
        b'{"headers":{"control":"snapshot-start","offset":"0000_0042"}}'
    )
    assert snapshot.marker("snapshot-end", "7") == (
        b'{"headers":{"control":"snapshot-end","offset":"7"}}'
    )


def test_an_empty_view_is_the_two_markers() -> None:
    assert list(snapshot.pieces([], "5", 10)) == [
        b'[{"headers":{"control":"snapshot-start","offset":"5"}},'
        b'{"headers":{"control":"snapshot-end","offset":"5"}}]'
    ]
    assert snapshot.body_length([], "5") == len(b"".join(snapshot.pieces([], "5", 10)))


def test_the_body_is_the_markers_around_the_inserts() -> None:
    view = folded(
        [put("insert", "a", {"t": "é"}, txid="t1"), put("insert", "b", None)],
        [put("update", "a", 2, timestamp="2024-01-02T03:04:05Z"), put("delete", "zz")],
    )
    body = b"".join(snapshot.pieces(view.pin(), "20", 1 << 16))
    assert json.loads(body) == [
        start("20"),
        {"type": "todo", "key": "b", "value": None, "headers": {"operation": "insert"}},
        {
            "type": "todo",
            "key": "a",
            "value": 2,
            "headers": {"operation": "insert", "timestamp": "2024-01-02T03:04:05Z"},
        },
        end("20"),
    ]
    assert snapshot.body_length(view.pin(), "20") == len(body)


entities = st.lists(
    st.tuples(st.sampled_from("abcdefgh"), st.text(max_size=40), st.sampled_from(["", "t"])),
    max_size=30,
)


@given(entities, st.integers(1, 200), st.sampled_from(["0", "0000000000000042_0000000000000007"]))
def test_pieces_join_to_the_body_and_are_bounded(
    writes: list[tuple[str, str, str]], piece_bytes: int, offset: str
) -> None:
    view = View(BIG, BIG)
    for key, value, txid in writes:
        view.apply(put("upsert", key, value, **({"txid": txid} if txid else {})), 3)
    pinned = view.pin()
    pieces = list(snapshot.pieces(pinned, offset, piece_bytes))
    body = b"".join(pieces)
    assert json.loads(body) == [
        start(offset),
        *(json.loads(entity.message) for entity in pinned),
        end(offset),
    ]
    assert snapshot.body_length(pinned, offset) == len(body)
    assert pieces[0].startswith(b"[" + snapshot.marker("snapshot-start", offset))
    assert pieces[-1].endswith(snapshot.marker("snapshot-end", offset) + b"]")
    largest = max((len(entity.message) for entity in pinned), default=0)
    markers = 2 * len(snapshot.marker("snapshot-start", offset)) + 4
    for piece in pieces:
        assert len(piece) <= piece_bytes + largest + 1 + markers
    # Every piece holds at least one entity (each entity message is one `{"type":` in it).
    if pinned:
        assert all(piece.count(b'{"type":') >= 1 for piece in pieces)
        assert sum(piece.count(b'{"type":') for piece in pieces) == len(pinned)
    else:
        assert len(pieces) == 1


@given(entities)
def test_a_snapshot_folded_again_is_the_same_state(writes: list[tuple[str, str, str]]) -> None:
    view = View(BIG, BIG)
    for key, value, txid in writes:
        view.apply(put("upsert", key, value, **({"txid": txid} if txid else {})), 3)
    body = b"".join(snapshot.pieces(view.pin(), "3", 64))
    again = View(BIG, BIG)
    again.apply_record(stored(*json.loads(body)), 3)
    assert list(again.entities.items()) == list(view.entities.items())
    assert again.skipped == 0
