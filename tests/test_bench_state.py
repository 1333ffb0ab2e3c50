"""The State Protocol benchmark's pure parts: the reference fold its late joiners check the
server against, the changes it appends, and its report (no server, no timing asserted)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from benchmarks import report_state
from benchmarks.scenarios import FULL, QUICK
from benchmarks.state import wrk_changes
from benchmarks.state_fold import (
    Entities,
    batches,
    changes,
    difference,
    fold,
    inserts,
    is_snapshot_start,
)

LUA = Path(__file__).resolve().parent.parent / "benchmarks" / "lua" / "append.lua"


def change(operation: str, key: str, value: Any = None, **more: Any) -> dict[str, Any]:
    message: dict[str, Any] = {"type": "todo", "key": key, "headers": {"operation": operation}}
    if operation != "delete":
        message["value"] = value
    return {**message, **more}


def control(name: str) -> dict[str, Any]:
    return {"headers": {"control": name, "offset": "0_5"}}


def test_writes_replace_the_whole_value_whether_or_not_the_key_exists() -> None:
    entities: Entities = {}
    skipped = fold(
        entities,
        [
            change("insert", "a", {"x": 1, "y": 2}),
            change("update", "a", {"x": 3}),  # replaces, never merges
            change("update", "b", {"new": True}),  # update of a missing key: the new value
            change("insert", "b", {"again": 1}),  # insert of an existing key: the new value
            change("upsert", "c", None),  # null is a value
            change("update", "d", 1, old_value=0),
        ],
    )
    assert skipped == 0
    assert entities == {
        ("todo", "a"): {"x": 3},
        ("todo", "b"): {"again": 1},
        ("todo", "c"): None,
        ("todo", "d"): 1,
    }


def test_delete_reset_and_snapshot_markers() -> None:
    entities: Entities = {}
    fold(entities, [change("insert", "a", 1), change("insert", "b", 2)])
    skipped = fold(
        entities,
        [
            change("delete", "missing"),  # changes nothing
            change("delete", "a"),
            control("snapshot-start"),  # markers change nothing
            control("snapshot-end"),
        ],
    )
    assert skipped == 0
    assert entities == {("todo", "b"): 2}
    entities[("other", "x")] = 1
    assert fold(entities, [control("reset"), change("insert", "c", 3)]) == 0
    assert entities == {("todo", "c"): 3}


def test_entities_are_named_by_type_and_key() -> None:
    entities: Entities = {}
    fold(entities, [change("insert", "a", 1), {**change("insert", "a", 2), "type": "user"}])
    assert entities == {("todo", "a"): 1, ("user", "a"): 2}


def test_other_json_is_skipped_and_counted_never_fatal() -> None:
    entities: Entities = {("todo", "keep"): 0}
    others: list[Any] = [
        1,
        "text",
        None,
        [change("insert", "nested", 1)],
        {"type": "todo", "key": "a", "value": 1},  # no headers
        {"headers": "insert"},
        {"type": "todo", "key": "a", "value": 1, "headers": {"operation": "merge"}},
        {"key": "a", "value": 1, "headers": {"operation": "insert"}},  # no type
        {"type": "todo", "key": "", "value": 1, "headers": {"operation": "insert"}},
        {"type": "todo", "key": 7, "value": 1, "headers": {"operation": "upsert"}},
        {"type": "todo", "key": "a", "headers": {"operation": "insert"}},  # no value
        {"headers": {"control": "truncate"}},
        {"headers": {"control": "snapshot-start", "operation": "insert"}},
        {"headers": {"control": "reset", "operation": "delete"}},
    ]
    assert fold(entities, others) == len(others)
    assert entities == {("todo", "keep"): 0}


def test_a_snapshot_is_told_by_its_first_message() -> None:
    assert is_snapshot_start(control("snapshot-start"))
    assert not is_snapshot_start(control("snapshot-end"))
    assert not is_snapshot_start(change("insert", "a", 1))
    assert not is_snapshot_start([control("snapshot-start")])


def test_changes_are_deterministic_valid_and_insert_each_key_first() -> None:
    messages = list(changes(5000, 50))
    assert messages == list(changes(5000, 50))
    assert messages != list(changes(5000, 50, seed=12))
    live: set[str] = set()
    operations: set[str] = set()
    for message in messages:
        operation, key = message["headers"]["operation"], message["key"]
        operations.add(operation)
        # Semantically valid: insert only when absent, update / upsert / delete when present.
        assert (operation == "insert") == (key not in live)
        if operation == "delete":
            live.discard(key)
            assert "value" not in message
        else:
            live.add(key)
            assert 40 <= len(json.dumps(message["value"], separators=(",", ":"))) <= 80
    assert operations == {"insert", "update", "upsert", "delete"}
    entities: Entities = {}
    assert fold(entities, messages) == 0
    assert {key for _, key in entities} == live


def test_batches_are_the_messages_in_order_and_fold_the_expected_state() -> None:
    expected: Entities = {}
    bodies = list(batches(changes(2500, 100), 1000, expected))
    assert [len(json.loads(body)) for body in bodies] == [1000, 1000, 500]
    assert [m for body in bodies for m in json.loads(body)] == list(changes(2500, 100))
    replayed: Entities = {}
    for body in bodies:
        fold(replayed, json.loads(body))
    assert replayed == expected and difference(expected, replayed) == ""
    live: Entities = {}
    list(batches(inserts(1500), 1000, live))
    assert len(live) == 1500


def test_difference_says_what_is_missing_extra_or_different() -> None:
    expected = {("t", "a"): 1, ("t", "b"): 2, ("t", "c"): 3}
    got = {("t", "a"): 1, ("t", "b"): 20, ("t", "d"): 4}
    said = difference(expected, got)
    assert "1 missing (e.g. ('t', 'c'))" in said
    assert "1 extra (e.g. ('t', 'd'))" in said
    assert "('t', 'b'): expected 2, got 20" in said


def test_the_wrk_body_leaves_the_state_the_harness_expects() -> None:
    """The Lua body of `append.lua`'s "state" kind, rendered here, folds to `wrk_changes`."""
    found = re.search(r"local change = '([^']*)'", LUA.read_text())
    assert found is not None
    body = "[" + ",".join(found.group(1) % (i, i, i) for i in range(1, 11)) + "]"
    entities: Entities = {}
    assert fold(entities, json.loads(body)) == 0
    assert entities == wrk_changes(10)


def _read(seconds: float, wire: int, responses: int, snapshot: bool) -> dict[str, Any]:
    return {
        "entities": 981,
        "seconds": seconds,
        "wire_bytes": wire,
        "body_bytes": wire - 100,
        "responses": responses,
        "snapshot": snapshot,
        "skipped": 0,
    }


def _append(plain: float, view: float, resident: bool) -> dict[str, Any]:
    return {
        "view_resident": resident,
        "plain": {"rps": plain, "errors": 0},
        "view": {"rps": view, "errors": 0},
        "ratio": view / plain,
    }


RESULTS: dict[str, dict[str, Any]] = {
    "trio-durable": {
        "state-late-joiner": {
            "replay": _read(4.0, 123_000_000, 118, False),
            "snapshot": _read(0.01, 120_000, 1, True),
        },
        "state-snapshot": {
            "entities": 100_000,
            "snapshot": True,
            "body_bytes": 12_000_000,
            "requests": 50,
            "p50_ms": 95.0,
            "p99_ms": 130.0,
            "max_ms": 130.0,
        },
        "state-view-append": _append(1000.0, 700.0, True),
        "state-compaction": {
            "compacted_bytes": 2_000_000,
            "uncompacted_bytes": 25_000_000,
            "compacted": True,
        },
    },
    "node-file": {"state-late-joiner": {"replay": _read(8.0, 168_000_000, 1, False)}},
    "trio-memory": {
        "state-late-joiner": {
            "replay": _read(4.0, 123_000_000, 118, False),
            "snapshot": _read(4.1, 123_000_000, 118, False),  # today's server: a plain read
        },
        "state-view-append": _append(1000.0, 990.0, False),
    },
}


def test_report_shows_ratios_goals_and_na_where_the_server_lacks_the_feature() -> None:
    table = report_state.table(RESULTS, FULL)
    assert "| Late joiner, 1M changes over 1k keys: full replay" in table
    assert "| 123.0 MB in 4,000 ms (118) | 168.0 MB in 8,000 ms (1) |" in table
    assert "| 120.0 kB in 10.0 ms (1) | — | n/a (answered a plain read) | — |" in table
    assert "| 1,025x / 400x | — | n/a | — |" in table  # full replay ÷ snapshot
    assert "| 1,400x / 800x | — | — | — |" in table  # Node file ÷ ours; no Node memory run
    assert "| 95.0 / 130.0 (50, 12.0 MB) | — | — | — |" in table
    assert "| 1,000 / 700 (0.70x) | — | 1,000 / 990 (n/a: no view) | — |" in table
    assert "| 25.0 MB / 2.0 MB (12x smaller) | — | — | — |" in table
    goals = report_state.goals(RESULTS)
    assert "fewer bytes than a full replay | trio file-durable | 1,025x | met |" in goals
    assert "less time than a full replay | trio file-durable | 400x | met |" in goals
    assert "the rate without | trio file-durable | 0.70x | **not met** |" in goals
    assert "fewer bytes than a full replay | trio memory | n/a | n/a |" in goals
    assert "the rate without | trio memory | n/a | n/a |" in goals
    assert "Node" not in goals


def test_report_section_only_with_results_and_a_skeleton_of_every_row() -> None:
    assert report_state.section({}, QUICK) == []
    assert report_state.section(RESULTS, QUICK)[0] == "## State Protocol (issue 11)"
    skeleton = report_state.table({}, FULL, skeleton=True)
    assert skeleton.count("\n") == 1 + 7
    assert "| — | — | — | — |" in skeleton
