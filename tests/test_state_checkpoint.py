"""View checkpoints: what comes back is the view that was written, or nothing. (The round trip
over random streams and damage at every byte are in test_state_view.py.)"""

from __future__ import annotations

import zlib
from typing import Any

import attrs
import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from state import checkpoint
from state.view import View, ViewTooLarge
from tests.test_state_view import BIG, RESET, folded, put


def sample() -> View:
    return folded(
        [put("insert", "a", {"x": 1}, txid="t1"), put("insert", "b", None, type="user")],
        [put("update", "a", 2, timestamp="2024-01-02T03:04:05Z"), 42, put("delete", "zz")],
    )


def sealed(document: Any) -> bytes:
    """A blob with a good CRC around whatever `document` is."""
    body = cbor2.dumps(document)
    return body + zlib.crc32(body).to_bytes(4, "big")


def test_a_view_round_trips_with_its_counts() -> None:
    view = sample()
    back = checkpoint.decode(checkpoint.encode(view, "inc"), "inc", 5, BIG)
    assert back == attrs.evolve(view, max_entities=5)  # the bounds are today's
    assert back is not None
    assert list(back.entities) == [("user", "b"), ("todo", "a")]
    assert (back.offset, back.skipped, back.max_entities) == (20, 1, 5)


def test_an_empty_view_round_trips() -> None:
    view = folded([RESET])
    assert checkpoint.decode(checkpoint.encode(view, "i"), "i", BIG, BIG) == view


def test_another_incarnation_or_version_is_not_used() -> None:
    blob = checkpoint.encode(sample(), "inc")
    assert checkpoint.decode(blob, "other", BIG, BIG) is None
    document = cbor2.loads(blob[:-4])
    assert checkpoint.decode(sealed(document), "inc", BIG, BIG) is not None
    assert checkpoint.decode(sealed({**document, "v": 2}), "inc", BIG, BIG) is None


GOOD_ROW = ["todo", "a", b'{"type":"todo"}', 5, None, None]


@pytest.mark.parametrize(
    "change",
    [
        {"entities": [GOOD_ROW, GOOD_ROW]},  # one identity twice
        {"entities": [GOOD_ROW[:5]]},
        {"entities": [tuple(GOOD_ROW)[:3]]},
        {"entities": ["row"]},
        {"entities": {"a": 1}},
        {"entities": [["todo", "", b"{}", 5, None, None]]},
        {"entities": [["todo", 1, b"{}", 5, None, None]]},
        {"entities": [["todo", "a", "{}", 5, None, None]]},
        {"entities": [["todo", "a", b"{}", -1, None, None]]},
        {"entities": [["todo", "a", b"{}", True, None, None]]},
        {"entities": [["todo", "a", b"{}", 11, None, None]]},  # written after the view's offset
        {"entities": [["todo", "a", b"{}", 5, 7, None]]},
        {"entities": [["todo", "a", b"{}", 5, None, b"t"]]},
        {"offset": -1},
        {"offset": 1.5},
        {"skipped": None},
    ],
)
def test_a_well_sealed_but_wrong_checkpoint_is_not_used(change: dict[str, Any]) -> None:
    document = {"v": 1, "incarnation": "i", "offset": 10, "skipped": 0, "entities": [GOOD_ROW]}
    assert checkpoint.decode(sealed(document), "i", BIG, BIG) is not None
    assert checkpoint.decode(sealed({**document, **change}), "i", BIG, BIG) is None


@pytest.mark.parametrize("document", [None, 1, [], "x", {}, {"v": 1}, {"v": 1, "incarnation": "i"}])
def test_other_documents_are_not_used(document: Any) -> None:
    assert checkpoint.decode(sealed(document), "i", BIG, BIG) is None


@given(st.binary(max_size=64))
def test_random_bytes_are_not_used(blob: bytes) -> None:
    assert checkpoint.decode(blob, "i", BIG, BIG) is None


@given(st.binary(max_size=64))
def test_random_sealed_bytes_never_raise(body: bytes) -> None:
    """Past the CRC, cbor2 meets whatever bytes there are without raising out of decode."""
    checkpoint.decode(body + zlib.crc32(body).to_bytes(4, "big"), "i", BIG, BIG)


def test_bounds_lowered_since_the_checkpoint_was_written() -> None:
    view = sample()
    blob = checkpoint.encode(view, "i")
    with pytest.raises(ViewTooLarge, match="entities"):
        checkpoint.decode(blob, "i", 1, BIG)
    with pytest.raises(ViewTooLarge, match="bytes"):
        checkpoint.decode(blob, "i", BIG, view.bytes - 1)
    assert checkpoint.decode(blob, "i", 2, view.bytes) == View(
        2, view.bytes, view.offset, view.skipped, view.bytes, view.entities
    )
