"""The materialized view: the fold rules of the official MaterializedState, the order of last
write a snapshot lists, the bounds, and pinned pictures later commits cannot change. A
property test compares the view with a reference fold over random streams, and checkpoints
with the view they were taken of."""

from __future__ import annotations

import gc
import json
import random
import tracemalloc
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from state import checkpoint
from state.changes import ABSENT, Change, Control, classify
from state.view import View, ViewTooLarge, charge
from tests.test_state_changes import json_values, mangled, messy

BIG = 10**9


def stored(*messages: Any) -> bytes:
    """A record's stored data: each message compact, then a comma."""
    return b"".join(
        json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode() + b","
        for message in messages
    )


def put(
    operation: str,
    key: str,
    value: Any = None,
    type: str = "todo",
    old_value: Any = ABSENT,
    **headers: str,
) -> Any:
    """A change message (a delete without a value)."""
    message: dict[str, Any] = {"type": type, "key": key, "headers": {"operation": operation}}
    if operation != "delete":
        message["value"] = value
    if old_value is not ABSENT:
        message["old_value"] = old_value
    message["headers"].update(headers)
    return message


RESET = {"headers": {"control": "reset"}}


def folded(*records: Sequence[Any]) -> View:
    """A view of records of the given messages, record i ending at 10 * (i + 1)."""
    view = View(BIG, BIG)
    for index, messages in enumerate(records):
        view.apply_record(stored(*messages), 10 * (index + 1))
    return view


def values(view: View) -> dict[tuple[str, str], Any]:
    return {identity: entity.value() for identity, entity in view.entities.items()}


def test_every_set_operation_sets_the_whole_value() -> None:
    view = folded(
        [put("insert", "a", {"x": 1, "y": 2})],
        [put("update", "a", {"x": 3})],  # replaced, not merged
        [put("upsert", "b", 1), put("upsert", "b", 2)],
    )
    assert values(view) == {("todo", "a"): {"x": 3}, ("todo", "b"): 2}
    assert view.offset == 30
    assert view.skipped == 0


def test_the_fold_forgives_what_semantic_validation_would_refuse() -> None:
    view = folded(
        [put("insert", "a", 1), put("insert", "a", 2)],  # insert of an existing key
        [put("update", "b", 3)],  # update of a missing key
        [put("delete", "c")],  # delete of a missing key: creates nothing
    )
    assert values(view) == {("todo", "a"): 2, ("todo", "b"): 3}
    assert view.skipped == 0


def test_null_is_a_value_and_delete_removes() -> None:
    view = folded([put("insert", "a", None), put("insert", "b", 1)], [put("delete", "b")])
    entity = view.get("todo", "a")
    assert entity is not None
    assert entity.value() is None
    assert entity.value_json() == b"null"
    assert view.get("todo", "b") is None
    assert len(view) == 1


def test_types_keep_keys_apart() -> None:
    view = folded([put("insert", "1", "u", type="user"), put("insert", "1", "c", type="config")])
    assert values(view) == {("user", "1"): "u", ("config", "1"): "c"}


def test_an_entity_is_its_insert_message_with_its_last_write() -> None:
    view = folded(
        [put("insert", "a", {"t": "é"}, txid="t1", timestamp="2024-01-02T03:04:05Z")],
        [put("update", "b", [1, 2.5], timestamp="2024-01-02T03:04:06Z", sourceApp="web")],
    )
    a, b = view.get("todo", "a"), view.get("todo", "b")
    assert a is not None
    assert b is not None
    assert (
        a.message
        == (
            '{"type":"todo","key":"a","value":{"t":"é"},'
            '"headers":{"operation":"insert","txid":"t1","timestamp":"2024-01-02T03:04:05Z"}}'
        ).encode()
    )
    assert (a.offset, a.txid, a.timestamp) == (10, "t1", "2024-01-02T03:04:05Z")
    assert b.message == (
        b'{"type":"todo","key":"b","value":[1,2.5],'
        b'"headers":{"operation":"insert","timestamp":"2024-01-02T03:04:06Z"}}'
    )
    assert (b.offset, b.txid) == (20, None)
    assert b.value_json() == b"[1,2.5]"
    view.apply_record(stored(put("update", "a", 2)), 35)  # no txid now: none kept
    a = view.get("todo", "a")
    assert a is not None
    assert (a.offset, a.txid, a.timestamp, a.value()) == (35, None, None, 2)


def test_entities_are_in_order_of_last_write() -> None:
    view = folded(
        [put("insert", "a", 1), put("insert", "b", 1), put("insert", "c", 1)],
        [put("update", "a", 2)],
        [put("delete", "b"), put("insert", "b", 3), put("delete", "z")],
    )
    assert list(view.entities) == [("todo", "c"), ("todo", "a"), ("todo", "b")]
    assert [entity.offset for entity in view.pin()] == [10, 20, 30]


def test_reset_clears_and_the_fold_goes_on() -> None:
    view = folded([RESET, put("insert", "a", 1)], [put("insert", "b", 1)])
    assert len(view) == 2
    view.apply_record(stored(put("insert", "c", 1), RESET, put("insert", "d", 4)), 40)
    assert values(view) == {("todo", "d"): 4}
    assert view.bytes == charge("todo", "d", view.entities["todo", "d"])
    view.apply_record(stored(RESET), 50)
    assert (len(view), view.bytes, view.offset) == (0, 0, 50)


def test_snapshot_markers_change_nothing() -> None:
    view = folded(
        [{"headers": {"control": "snapshot-start", "offset": "5"}}, put("insert", "a", 1)],
        [{"headers": {"control": "snapshot-end"}}, {"headers": {"control": "snapshot-end"}}],
    )
    assert values(view) == {("todo", "a"): 1}
    assert view.skipped == 0


def test_other_json_is_skipped_and_counted() -> None:
    junk = [
        42,
        "x",
        None,
        [put("insert", "a", 1)],
        {"foo": 1},
        {"headers": "insert"},
        {"headers": {"control": "up-to-date"}},
        put("merge", "a", 1),
        {**put("insert", "a", 1), "key": 7},
        {**put("insert", "a", 1), "key": ""},
        {"type": "todo", "key": "a", "headers": {"operation": "insert"}},  # no value
    ]
    view = folded(junk, [put("insert", "b", 2)])
    assert values(view) == {("todo", "b"): 2}
    assert view.skipped == len(junk)


def test_a_value_that_is_not_json_is_skipped() -> None:
    """Never in a stored record (the stream's JSON mode refuses it), but apply takes any."""
    view = View(BIG, BIG)
    view.apply(put("insert", "a", float("inf")), 5)
    view.apply(put("insert", "b", object()), 5)
    assert (len(view), view.skipped, view.bytes) == (0, 2, 0)


def test_apply_does_not_move_the_offset_and_an_empty_record_does() -> None:
    view = View(BIG, BIG)
    view.apply(put("insert", "a", 1), 7)
    assert view.offset == 0
    view.apply_record(b"", 12)
    assert view.offset == 12
    assert view.entities["todo", "a"].offset == 7


def test_too_many_entities() -> None:
    view = View(max_entities=2, max_bytes=BIG)
    view.apply_record(stored(put("insert", "a", 1), put("insert", "b", 1)), 10)
    view.apply_record(stored(put("update", "a", 2), put("delete", "b")), 20)  # no growth
    view.apply_record(stored(put("insert", "b", 1)), 30)
    with pytest.raises(ViewTooLarge, match="more than 2 entities"):
        view.apply_record(stored(put("insert", "c", 1)), 40)


def test_too_many_bytes() -> None:
    small = View(BIG, BIG)
    small.apply(put("insert", "a", "x"), 1)
    view = View(max_entities=BIG, max_bytes=small.bytes + 10)
    view.apply(put("insert", "a", "x" * 11), 1)
    view.apply(put("update", "a", "x"), 2)
    with pytest.raises(ViewTooLarge, match=f"more than {small.bytes + 10} bytes"):
        view.apply(put("update", "a", "x" * 12), 3)  # an overwrite that grows


def test_bytes_is_the_charge_of_the_entities() -> None:
    view = folded(
        [put("insert", "a", "x" * 50, txid="t"), put("insert", "b", 1)],
        [put("update", "a", 1, timestamp="2024-01-02T03:04:05Z"), put("upsert", "c", [1])],
        [put("delete", "b")],
    )
    assert view.bytes == sum(charge(t, k, entity) for (t, k), entity in view.entities.items())
    view.apply_record(stored(put("delete", "a"), put("delete", "c")), 40)
    assert view.bytes == 0


def test_a_pinned_picture_does_not_change() -> None:
    view = folded(
        [put("insert", "a", 1, type="user"), put("insert", "b", 2), put("insert", "c", 3)]
    )
    pinned, users = view.pin(), view.pin(frozenset({"user"}))
    before = [entity.message for entity in pinned]
    view.apply_record(stored(put("update", "b", 9), put("delete", "c")), 20)
    view.apply_record(stored(RESET, put("insert", "d", 4)), 30)
    assert [entity.message for entity in pinned] == before
    assert [entity.value() for entity in pinned] == [1, 2, 3]
    assert [entity.value() for entity in users] == [1]
    assert view.pin(frozenset({"user", "none"})) == []
    assert [entity.value() for entity in view.pin(frozenset({"todo"}))] == [4]


def test_an_empty_view_is_still_a_view() -> None:
    view = View(BIG, BIG)
    assert len(view) == 0
    assert view


def test_records_joined_must_span_their_data() -> None:
    view = View(BIG, BIG)
    with pytest.raises(ValueError, match="do not span"):
        view.apply_records(stored(1), [100], 0)
    view.apply_records(b"", [], 5)
    assert view.offset == 0


def test_the_overhead_estimate_is_honest() -> None:
    """`bytes` is within 20% of the memory the entities hold (measured, not timed)."""
    count = 20_000
    records = [
        stored(
            *(
                put("upsert", f"key-{i}", {"title": f"t{i}", "done": False}, **stamps)
                for i in range(count)
            )
        )
        for stamps in ({}, {"txid": "tx-123", "timestamp": "2024-01-02T03:04:05.123Z"})
    ]
    for data in records:
        gc.collect()
        tracemalloc.start()
        try:
            view = View(BIG, BIG)
            view.apply_record(data, len(data))
            gc.collect()
            held = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
        assert 0.8 < view.bytes / held < 1.2


# ---- the fold against a reference, and checkpoints of it -----------------------------------

keys = st.sampled_from(["a", "b", "c"])
types = st.sampled_from(["todo", "user"])
values_ = st.none() | st.integers(-3, 3) | st.text(max_size=3) | st.lists(st.booleans(), max_size=2)
stamps = st.fixed_dictionaries(
    {},
    optional={
        "txid": st.sampled_from(["t1", "t2", ""]),
        "timestamp": st.just("2024-01-02T03:04:05Z"),
    },
)
changes = st.builds(
    lambda operation, key, type_, value, headers: put(operation, key, value, type_, **headers),
    st.sampled_from(["insert", "update", "upsert", "delete"]),
    keys,
    types,
    values_,
    stamps,
)
controls = st.sampled_from(["reset", "snapshot-start", "snapshot-end"]).map(
    lambda control: {"headers": {"control": control, "offset": "9"}}
)
junk = st.sampled_from(
    [42, "x", None, [1], {"foo": 1}, {"headers": {"control": "up-to-date"}}, {"headers": 1}]
)
streams = st.lists(st.lists(changes | controls | junk, max_size=6), max_size=12)


def reference(records: list[list[Any]], ends: list[int]) -> tuple[list[tuple[Any, ...]], int]:
    """The fold written as plainly as possible: (type, key, value, offset, txid, timestamp) in
    order of last write, and the count of skipped messages."""
    rows: dict[tuple[str, str], tuple[Any, ...]] = {}
    skipped = 0
    for messages, end in zip(records, ends, strict=True):
        for message in messages:
            read = classify(message)
            if isinstance(read, Change):
                identity = read.type, read.key
                rows.pop(identity, None)
                if read.operation != "delete":
                    rows[identity] = (read.value, end, read.txid, read.timestamp)
            elif isinstance(read, Control):
                if read.control == "reset":
                    rows.clear()
            else:
                skipped += 1
    return [(*identity, *row) for identity, row in rows.items()], skipped


def rows(view: View) -> list[tuple[Any, ...]]:
    return [
        (*identity, entity.value(), entity.offset, entity.txid, entity.timestamp)
        for identity, entity in view.entities.items()
    ]


BASE = 100  # where the log starts: not at 0, as after a checkpoint


@given(streams, st.randoms(use_true_random=False))
def test_the_view_is_the_reference_fold(records: list[list[Any]], rng: random.Random) -> None:
    log = [stored(*messages) for messages in records]
    ends = [BASE + sum(len(data) for data in log[: index + 1]) for index in range(len(log))]
    view = View(BIG, BIG)
    for data, end in zip(log, ends, strict=True):
        view.apply_record(data, end)
    expected, skipped = reference(records, ends)
    assert rows(view) == expected
    assert view.skipped == skipped
    assert view.offset == (ends[-1] if ends else 0)
    assert view.bytes == sum(charge(t, k, entity) for (t, k), entity in view.entities.items())

    # The same log folded in chunks of consecutive records.
    chunked = View(BIG, BIG)
    first = 0
    while first < len(log):
        last = min(first + rng.randint(1, 4), len(log))
        start = ends[first - 1] if first else BASE
        chunked.apply_records(b"".join(log[first:last]), ends[first:last], start)
        first = last
    assert list(chunked.entities.items()) == list(view.entities.items())
    assert chunked == view

    # A checkpoint of it comes back whole, in order, for this incarnation only.
    blob = checkpoint.encode(view, "inc-1")
    back = checkpoint.decode(blob, "inc-1", BIG, BIG)
    assert back == view
    assert back is not None
    assert list(back.entities.items()) == list(view.entities.items())
    assert checkpoint.decode(blob, "inc-2", BIG, BIG) is None


@given(streams, st.data())
def test_a_damaged_checkpoint_is_never_believed(records: list[list[Any]], data: Any) -> None:
    view = folded(*records)
    blob = checkpoint.encode(view, "inc")
    for length in range(len(blob)):
        assert checkpoint.decode(blob[:length], "inc", BIG, BIG) is None
    damaged = bytearray(blob)
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(blob) - 1))
        damaged[at] ^= data.draw(st.integers(1, 255))
    back = checkpoint.decode(bytes(damaged), "inc", BIG, BIG)
    assert back is None or (back == view and list(back.entities) == list(view.entities))


@given(st.lists(st.lists(json_values | messy | mangled(), max_size=4), max_size=6))
def test_the_fold_reads_any_json_as_classify_does(records: list[list[Any]]) -> None:
    """`View.apply` inlines `classify`'s rules; over messy JSON they still agree."""
    view = folded(*records)
    expected, skipped = reference(records, [10 * (index + 1) for index in range(len(records))])
    assert rows(view) == expected
    assert view.skipped == skipped
