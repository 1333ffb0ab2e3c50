"""The Yjs benchmark's pure parts: lib0 framing, the edits it writes and the text they leave,
how a new client follows discovery's redirect, how append latencies are split around
compactions, the servers' command lines, and its report (no server, no timing asserted)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from benchmarks import report_yjs
from benchmarks.scenarios import FULL, QUICK
from benchmarks.servers import BENCH, NODE_MEMORY, TRIO_MEMORY, Server
from benchmarks.yjs import logged_windows
from benchmarks.yjs_doc import (
    Append,
    Reader,
    Writer,
    batches,
    follow,
    is_snapshot,
    offset_bytes,
    percentile,
    prepending,
    replay,
    snapshot_offset,
    split,
    typing,
    windows,
)
from streams.protocol.yjs import unframe


def test_edits_are_deterministic_and_stay_inside_the_text() -> None:
    edits = list(typing(5000))
    assert edits == list(typing(5000))
    assert edits != list(typing(5000, seed=14))
    for length, (position, char) in enumerate(edits):
        assert 0 <= position <= length and len(char) == 1
    assert len({position for position, _ in edits}) > 100  # the cursor jumps
    assert replay(prepending(3)) == "cba"
    assert replay([(0, "a"), (1, "c"), (1, "b"), (0, ">")]) == ">abc"


def test_each_edit_is_one_update_and_a_reader_of_any_batching_gets_the_text() -> None:
    edits = list(typing(3000))
    writer = Writer()
    updates = list(writer.updates(edits))
    assert len(updates) == len(edits)
    assert str(writer) == replay(edits)
    for size in (1, 7, 3000):
        reader = Reader()
        for body in batches(updates, size):
            reader.apply_framed(body)
        assert str(reader) == replay(edits) and reader.frames == len(edits)
    assert [len(unframe(body)) for body in batches(updates, 1000)] == [1000, 1000, 1000]


def test_a_snapshot_plus_the_updates_after_it_is_the_document() -> None:
    writer = Writer()
    first = list(writer.updates(prepending(500)))
    snapshot = writer.doc.get_update()
    rest = list(writer.updates(typing(200, seed=3)))
    reader = Reader()
    reader.apply_snapshot(snapshot)
    reader.apply_framed(b"".join(batches(rest, 50)))
    assert str(reader) == str(writer)
    assert len(first) == 500 and reader.frames == 200
    empty = Reader()
    empty.apply_snapshot(b"")
    assert str(empty) == ""


def test_following_discovery_resolves_the_location_against_the_document() -> None:
    doc = "/v1/yjs/bench/docs/a/b"
    assert follow(doc, "/v1/yjs/bench/docs/a/b?offset=0_12_snapshot") == (
        doc + "?offset=0_12_snapshot",
        "0_12_snapshot",
    )
    assert follow(doc, "?offset=-1") == (doc + "?offset=-1", "-1")
    assert follow(doc, "http://127.0.0.1:9/v1/yjs/x/docs/y?offset=-1&z=1") == (
        "/v1/yjs/x/docs/y?offset=-1&z=1",
        "-1",
    )
    with pytest.raises(ValueError):
        follow(doc, "/v1/yjs/bench/docs/a/b")
    assert is_snapshot("0_12_snapshot") and not is_snapshot("-1")
    assert snapshot_offset("0000_0012_snapshot") == "0000_0012"


def _appends(*rows: tuple[float, float, str]) -> list[Append]:
    return [Append(sent, answered, offset) for sent, answered, offset in rows]


def test_a_compaction_ran_from_the_append_that_passed_the_threshold_to_its_discovery() -> None:
    appends = _appends(
        (0.0, 1.0, "0_10"),
        (1.0, 2.0, "0_20"),  # 15 B past the first snapshot (0_5): may start a compaction
        (2.0, 3.0, "0_30"),
        (3.0, 9.0, "0_40"),  # slow: in flight while it ran; only 10 B past the next one
        (9.0, 10.0, "0_50"),  # 20 B past 0_30: may start the next
        (10.0, 11.0, "0_60"),
    )
    seen = [(8.5, "0_30"), (12.0, "0_50")]
    ran = windows(appends, seen, began=-1.0, threshold=15, covered="0_5")
    assert ran == [(1.0, 8.5), (9.0, 12.0)]
    during, outside = split(appends, ran)
    assert during == [1.0, 1.0, 6.0, 1.0, 1.0] and outside == [1.0]
    # No earlier snapshot: the bytes count from 0; an append answered before the previous
    # snapshot was seen cannot start the next compaction (one at a time).
    assert windows(appends, seen, began=-1.0, threshold=20) == [(1.0, 8.5), (9.0, 12.0)]
    assert windows(appends, seen, began=-1.0, threshold=25)[1] == (10.0, 12.0)
    early = [(3.5, "0_20"), (12.0, "0_50")]  # 0_30 was answered before 0_20's snapshot showed
    assert windows(appends, early, began=-1.0, threshold=10) == [(0.0, 3.5), (3.0, 12.0)]
    # No append qualifies (a threshold never reached): the merge's lower bound, the answer
    # to the last append at or below what the snapshot covers.
    assert windows(appends, seen, began=-1.0, threshold=10**6) == [(3.0, 8.5), (10.0, 12.0)]


def test_without_byte_offsets_a_compaction_ran_from_the_tail_it_merged() -> None:
    appends = _appends((0.0, 1.0, "a"), (1.0, 2.0, "b"), (2.0, 3.0, "c"), (3.0, 9.0, "d"))
    assert windows(appends, [(8.5, "c")], began=-1.0, threshold=1) == [(3.0, 8.5)]
    assert windows(appends, [(8.5, "0")], began=-1.0, threshold=1) == [(-1.0, 8.5)]
    # An append answered after the snapshot was seen cannot have been merged into it.
    assert windows(appends, [(2.5, "z")], began=0.0, threshold=1) == [(2.0, 2.5)]
    assert offset_bytes("0000000000000000_0000000000324775") == 324_775
    assert offset_bytes("-1") is None and offset_bytes("now") is None
    assert offset_bytes("a_b") is None
    during, outside = split(appends, [(2.5, 2.6)])  # inside one append
    assert during == [1.0] and len(outside) == 3


def test_percentiles_are_nearest_rank_in_ms() -> None:
    values = [i / 1000 for i in range(1, 101)]  # 1..100 ms
    assert percentile(values, 0.5) == pytest.approx(50)
    assert percentile(values, 0.99) == pytest.approx(99)
    assert percentile(values, 1.0) == pytest.approx(100)
    assert percentile([0.002], 0.99) == pytest.approx(2)
    assert math.isnan(percentile([], 0.5))


def test_the_yjs_servers_command_lines(tmp_path: Path) -> None:
    node = Server(NODE_MEMORY, tmp_path, tmp_path / "log", script="yjs-server.mjs", port=5)
    node.args = ["--compaction-threshold", "4096"]
    command = node.command()
    assert command[command.index("node") + 1] == str(BENCH / "node" / "yjs-server.mjs")
    assert command[-2:] == ["--compaction-threshold", "4096"]
    assert "--data-dir" not in command
    assert (BENCH / "node" / "yjs-server.mjs").exists()
    plain = Server(NODE_MEMORY, tmp_path, tmp_path / "log", port=5).command()
    assert plain[plain.index("node") + 1] == str(BENCH / "node" / "server.mjs")
    other = Server(TRIO_MEMORY, tmp_path, tmp_path / "log", checkout=tmp_path / "wt", port=5)
    assert other.command()[-4:] == [str(tmp_path / "wt/.venv/bin/python"), "-m", "streams", "serve"]


def _load(seconds: float, wire: int, snapshot: int, threshold: int) -> dict[str, Any]:
    return {
        "available": True,
        "threshold": threshold,
        "written_bytes": 326_000,
        "seconds": seconds,
        "wire_bytes": wire,
        "snapshot_bytes": snapshot,
        "update_bytes": wire - snapshot - 500,
        "responses": 3,
        "snapshot": snapshot > 0,
    }


def _latency(p99: float, during: int, runs: list[float]) -> dict[str, Any]:
    return {
        "available": True,
        "compaction_ms": runs,
        "during": {"count": during, "p50_ms": 9.0, "p99_ms": p99, "max_ms": p99},
        "outside": {"count": 3000, "p50_ms": 3.0, "p99_ms": 30.0, "max_ms": 90.0},
    }


ABSENT = {"available": False, "reason": "PUT answered 404: no Yjs endpoints"}
RESULTS: dict[str, dict[str, Any]] = {
    "trio-memory": {
        "yjs-load": _load(0.4, 327_000, 0, 1 << 30),
        "yjs-load-compacted": _load(0.025, 37_500, 35_000, 4096),
        "yjs-append": _latency(45.0, 167, [300.0, 250.0, 350.0]),
    },
    "node-memory": {
        "yjs-load": _load(0.5, 328_000, 0, 1 << 30),
        "yjs-load-compacted": _load(0.1, 60_000, 33_000, 4096),
        "yjs-append": _latency(150.0, 12, [240.0]),
    },
    "trio-durable": {"yjs-load": ABSENT, "yjs-load-compacted": ABSENT, "yjs-append": ABSENT},
}


def test_report_shows_loads_ratios_latencies_and_na_without_endpoints() -> None:
    table = report_yjs.table(RESULTS, QUICK)
    assert "20k one-character edits (10 updates per POST), without compaction" in table
    assert "| 327.0 kB in 400 ms (0 B + 326.5 kB) | 328.0 kB in 500 ms" in table
    assert "n/a (no Yjs endpoints) | — | 327.0 kB" in table  # trio-durable lacks them
    assert "without compaction (threshold 1 GiB)" in table
    assert "with compaction (threshold 4 KiB)" in table
    assert "| 37.5 kB in 25.0 ms (35.0 kB + 2.0 kB) |" in table
    assert "| n/a | — | 8.72x / 16x | 5.47x / 5.00x |" in table  # without ÷ with
    assert "| n/a | — | 0.62x / 0.25x | — |" in table  # ours ÷ the YjsServer
    assert "| 3.00 / 30.0 (3,000) |" in table
    assert "| 9.00 / 45.0 (167; 3 compactions, median 300 ms) |" in table
    assert "9.00 / 150 (12 ⚠ few; 1 compactions, median 240 ms)" in table
    assert "| n/a | — | 1.50x | 5.00x |" in table
    goals = report_yjs.goals(RESULTS)
    assert "while none runs | trio memory | 1.50x | met |" in goals
    assert "| YjsServer over Node memory | 5.00x | **not met** (12 appends" in goals
    assert "| trio file-durable | n/a | n/a |" in goals


def test_a_load_without_a_snapshot_below_the_threshold_is_flagged() -> None:
    broken = {"trio-memory": {"yjs-load-compacted": _load(0.4, 327_000, 0, 4096)}}
    assert "no snapshot ⚠" in report_yjs.table(broken, FULL)
    assert "one update per POST" in report_yjs.table(broken, FULL, skeleton=True)


def test_report_section_only_with_results_and_a_skeleton_of_every_row() -> None:
    assert report_yjs.section({}, QUICK) == []
    assert report_yjs.section(RESULTS, QUICK)[0] == "## Yjs documents (issue 13)"
    skeleton = report_yjs.table({}, FULL, skeleton=True)
    assert skeleton.count("\n") == 1 + 7
    assert "| — | — | — | — |" in skeleton
    assert any("4 KiB threshold" in line for line in report_yjs.measured(FULL))
    assert report_yjs.binary(3 << 20) == "3 MiB" and report_yjs.binary(3000) == "3,000 B"


def test_the_yjs_servers_logged_compactions_in_the_interval(tmp_path: Path) -> None:
    """yjs-server.mjs's lines (ms since the epoch), read back as the windows of those started
    while appends were measured; ours logs none of these, so None."""
    log = tmp_path / "log"
    log.write_text(
        "ready http://127.0.0.1:1 over http://127.0.0.1:2\n"
        "compaction start bench/a 1000\ncompaction end bench/a 1300\n"  # before the interval
        "[Compactor] Compacted bench/a: snapshot=10 bytes, offset=0_1\n"
        "compaction start bench/a 5000\ncompaction end bench/a 5250\n"
        "compaction start bench/a 7000\ncompaction end bench/a 7125\n"
        "compaction start bench/a 9000\n"  # still running when the measurement ended
    )
    node = Server(NODE_MEMORY, tmp_path, log)
    assert logged_windows(node, 2.0, 9.5) == [(5.0, 5.25), (7.0, 7.125), (9.0, 9.5)]
    assert logged_windows(node, 2.0, 8.0) == [(5.0, 5.25), (7.0, 7.125)]
    assert logged_windows(Server(TRIO_MEMORY, tmp_path, log), 2.0, 9.5) is None
