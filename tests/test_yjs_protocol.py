"""The Yjs protocol's pure rules (streams/protocol/yjs.py) and the merge (state/yjs.py)."""

from __future__ import annotations

from typing import Any

import pycrdt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from state.yjs import Kept, MergeError, complete, merge, state_vector
from streams.protocol import offsets, yjs
from streams.protocol.errors import ProtocolError


@pytest.mark.parametrize(
    ("value", "encoded"),
    [(0, b"\x00"), (127, b"\x7f"), (128, b"\x80\x01"), (300, b"\xac\x02")],  # the spec's
)
def test_var_uint_as_the_spec_shows(value: int, encoded: bytes) -> None:
    assert yjs.write_var_uint(value) == encoded


@given(st.lists(st.binary(max_size=300), max_size=8))
def test_frames_round_trip(updates: list[bytes]) -> None:
    assert yjs.unframe(b"".join(yjs.frame(update) for update in updates)) == updates


@pytest.mark.parametrize(
    "body", [b"\x80", b"\x03ab", b"\x01a\x02b", b"\xff" * 9, b"\x02ab\x80\x80"]
)
def test_malformed_framing_is_invalid(body: bytes) -> None:
    with pytest.raises(ProtocolError) as raised:
        yjs.check_framing(body)
    assert (raised.value.status, raised.value.code) == (400, "INVALID_REQUEST")


def test_an_empty_write_is_invalid() -> None:
    with pytest.raises(ProtocolError):
        yjs.check_framing(b"")


@pytest.mark.parametrize(
    ("path", "service", "doc"),
    [(b"s/docs/a", "s", "a"), (b"s/docs/a/b/c", "s", "a/b/c"), (b"s/docs/n.md", "s", "n.md")],
)
def test_document_paths(path: bytes, service: str, doc: str) -> None:
    document = yjs.document(path, 1024)
    assert (document.service, document.path) == (service, doc)
    assert document.updates == f"__ds/yjs/{service}/docs/{doc}/.updates"
    assert document.name == f"{service}/docs/{doc}"


@pytest.mark.parametrize(
    "path",
    [b"s/docs/", b"s/doc/a", b"s/docs/a/../b", b"s/docs/./a", b"s/docs/a//b", b"s/docs/a/",
     b"./docs/a", b"s/docs/.index", b"s/docs/\xff", b"s/docs/" + b"a" * 2000],
)  # fmt: skip
def test_bad_document_paths_are_invalid(path: bytes) -> None:
    with pytest.raises(ProtocolError) as raised:
        yjs.document(path, 1024)
    assert raised.value.status == 400


def test_no_two_documents_share_a_stream() -> None:
    """Every stream of a document ends in a dot-led segment no document path may hold."""
    a, b = yjs.document(b"s/docs/a", 1024), yjs.document(b"s/docs/a/x", 1024)
    names_a = {a.updates, a.index, a.snapshot("k_snapshot"), a.awareness("x")}
    names_b = {b.updates, b.index, b.snapshot("k_snapshot"), b.awareness("x")}
    assert not names_a & names_b


def test_snapshot_keys_name_the_last_byte_covered() -> None:
    key = yjs.snapshot_key(4783)
    assert key == offsets.encode(4782) + "_snapshot"
    assert yjs.is_snapshot_key(key)
    assert yjs.snapshot_covers(key) == 4783
    assert yjs.snapshot_covers("junk_snapshot") is None
    assert yjs.snapshot_covers(f"{'9' * 16}_{'9' * 16}_snapshot") is None
    with pytest.raises(ValueError):
        yjs.snapshot_key(0)


def test_redirect_keeps_the_query_and_replaces_the_offset() -> None:
    location = yjs.redirect("/v1/yjs/s/docs/a%20b", [("offset", "snapshot"), ("x", "1")], "-1")
    assert location == "/v1/yjs/s/docs/a%20b?x=1&offset=-1"


def test_index_pointer_and_when_to_compact() -> None:
    pointer = yjs.Pointer(yjs.snapshot_key(10), 10)
    assert yjs.pointer(yjs.current(pointer)["value"]) == pointer
    assert yjs.pointer({"key": 1}) is None
    assert yjs.should_compact(tail=150, covers=50, failed_at=0, threshold=100)
    assert not yjs.should_compact(tail=149, covers=50, failed_at=0, threshold=100)
    assert not yjs.should_compact(tail=150, covers=50, failed_at=120, threshold=100)


def text_doc(update: bytes) -> str:
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    doc.apply_update(update)
    return str(doc.get("t", type=pycrdt.Text))


def test_merge_is_the_state_of_snapshot_and_updates() -> None:
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    text = doc.get("t", type=pycrdt.Text)
    updates = []
    for word in ("a", "b", "c"):
        before = doc.get_state()
        text += word
        updates.append(doc.get_update(before))
    snapshot = merge(b"", updates[:2])
    assert text_doc(snapshot) == "ab"
    assert text_doc(merge(snapshot, updates[2:])) == "abc"


def test_merge_keeps_updates_whose_dependencies_are_missing() -> None:
    a: pycrdt.Doc[Any] = pycrdt.Doc()
    a.get("t", type=pycrdt.Text).insert(0, "A")
    first = a.get_update()
    b: pycrdt.Doc[Any] = pycrdt.Doc()
    b.apply_update(first)
    before = b.get_state()
    b.get("t", type=pycrdt.Text).insert(1, "B")
    second = b.get_update(before)
    merged = merge(b"", [second])  # pending in a document: kept all the same
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    doc.apply_update(merged)
    doc.apply_update(first)
    assert str(doc.get("t", type=pycrdt.Text)) == "AB"


def typed(text: str, client_id: int = 7) -> tuple[pycrdt.Doc[Any], list[bytes]]:
    """A document and one update per character typed into it."""
    doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=client_id)
    t = doc.get("t", type=pycrdt.Text)
    updates = []
    for char in text:
        before = doc.get_state()
        t += char
        updates.append(doc.get_update(before))
    return doc, updates


def test_merge_keeps_an_update_after_a_gap_in_its_clients_clocks() -> None:
    _, updates = typed("abcd")
    merged = merge(b"", [updates[0], updates[3]])  # "d" waits for "b" and "c"
    assert complete(pycrdt.get_state(merged), [updates[3]]) is False
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    doc.apply_update(merged)
    doc.apply_update(updates[1])
    doc.apply_update(updates[2])
    assert str(doc.get("t", type=pycrdt.Text)) == "abcd"


def test_merge_keeps_a_delete_of_what_it_has_not_seen() -> None:
    source, updates = typed("abc")
    before = source.get_state()
    del source.get("t", type=pycrdt.Text)[0:3]
    deletion = source.get_update(before)
    merged = merge(b"", [updates[0], deletion])  # deletes "b" and "c" too
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    doc.apply_update(merged)
    doc.apply_update(updates[1])
    doc.apply_update(updates[2])
    assert str(doc.get("t", type=pycrdt.Text)) == ""


def test_a_complete_merge_is_the_documents_own_encoding() -> None:
    source, updates = typed("abc")
    before = source.get_state()
    del source.get("t", type=pycrdt.Text)[0:2]
    parts = [*updates, source.get_update(before)]
    assert complete(source.get_state(), parts)
    assert merge(b"", parts) == source.get_update()  # not the lossless merge of the parts
    assert not complete(pycrdt.Doc().get_state(), parts)


def test_a_kept_document_merges_as_its_snapshot_would() -> None:
    _, updates = typed("abcdefgh")
    kept = Kept(size=1)
    snapshot = merge(b"", updates[:3], kept)
    assert kept.take(snapshot) is not None  # taken: a second merge decodes the snapshot
    snapshot = merge(b"", updates[:3], kept)
    for start, end in ((3, 5), (5, 8)):  # each from the kept document of the last
        snapshot = merge(snapshot, updates[start:end], kept)
        assert text_doc_t(snapshot) == "abcdefgh"[:end]
        assert pycrdt.get_state(snapshot) == pycrdt.get_state(merge(b"", updates[:end]))
    merge(b"", [updates[0], updates[3]], kept)  # incomplete: the lossless merge, not kept
    assert kept.take(merge(b"", [updates[0], updates[3]])) is None


def text_doc_t(update: bytes) -> str:
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    doc.apply_update(update)
    return str(doc.get("t", type=pycrdt.Text))


def test_state_vectors_decode_as_lib0_writes_them() -> None:
    source, _ = typed("abc", client_id=300)
    assert state_vector(source.get_state()) == {300: 3}
    assert state_vector(b"\x00") == {}
    with pytest.raises(MergeError):
        state_vector(b"\x01\xac")


def test_merge_refuses_what_is_not_an_update() -> None:
    with pytest.raises(MergeError):
        merge(b"", [b"\x07garbage"])
