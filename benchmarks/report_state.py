"""The `State Protocol (issue 11)` section of docs/benchmarks.md: its table, the issue's goals
and how each number is measured. "n/a" marks what the server measured lacks (no snapshot,
no view, no compaction): the scenario still ran, as a plain read."""

from __future__ import annotations

import math
from typing import Any

from benchmarks.report_grid import Results, Row, grid
from benchmarks.report_grid import entry as _entry
from benchmarks.report_hostile import count
from benchmarks.scenarios import FULL, QUICK, Plan

COLUMNS = (
    ("trio-durable", "trio file-durable"),
    ("node-file", "Node file"),
    ("trio-memory", "trio memory"),
    ("node-memory", "Node memory"),
)
NODE_OF = {"trio-durable": "node-file", "trio-memory": "node-memory"}
KEYS = ("state-late-joiner", "state-snapshot", "state-view-append", "state-compaction")
GOAL_BYTES = 100.0  # full replay ÷ snapshot, bytes received
GOAL_TIME = 50.0  # full replay ÷ snapshot, time to a consistent state
GOAL_APPEND = 0.75  # append rate with a view resident ÷ without
NA = "n/a"


def _ms(seconds: float) -> str:
    ms = seconds * 1000
    return f"{ms:.2f}" if ms < 10 else f"{ms:.1f}" if ms < 100 else f"{ms:,.0f}"


def _size(value: float) -> str:
    return f"{value / 1e6:,.1f} MB" if value >= 1e6 else f"{value / 1e3:,.1f} kB"


def _times(value: float) -> str:
    return f"{value:,.0f}x" if value >= 10 else f"{value:.2f}x"


def _read(entry: dict[str, Any]) -> str:
    return f"{_size(entry['wire_bytes'])} in {_ms(entry['seconds'])} ms ({entry['responses']:,})"


def _snapshot(joiner: dict[str, Any]) -> dict[str, Any] | None:
    """The late joiner's snapshot read, if the server answered it with a snapshot."""
    snapshot = joiner.get("snapshot")
    return snapshot if isinstance(snapshot, dict) and snapshot["snapshot"] else None


def ratios(replay: dict[str, Any], snapshot: dict[str, Any]) -> tuple[float, float]:
    """(bytes, time) of a full replay ÷ a snapshot read."""
    return (
        replay["wire_bytes"] / max(1, snapshot["wire_bytes"]),
        replay["seconds"] / max(1e-9, snapshot["seconds"]),
    )


def _snapshot_cell(e: dict[str, Any], results: Results, server: str) -> str:
    if "snapshot" not in e:
        return "—"
    snapshot = _snapshot(e)
    return _read(snapshot) if snapshot else f"{NA} (answered a plain read)"


def _ratio_cell(replay: dict[str, Any] | None, e: dict[str, Any]) -> str:
    snapshot = _snapshot(e)
    if replay is None or "snapshot" not in e:
        return "—"
    if snapshot is None:
        return NA
    size, seconds = ratios(replay, snapshot)
    return f"{_times(size)} / {_times(seconds)}"


def _node_replay(results: Results, server: str) -> dict[str, Any] | None:
    joiner = _entry(results, NODE_OF.get(server, ""), "state-late-joiner")
    return joiner["replay"] if joiner else None


def _snapshot_latency(e: dict[str, Any], results: Results, server: str) -> str:
    if not e["snapshot"]:
        return f"{NA} (answered a plain read)"
    return f"{e['p50_ms']:.1f} / {e['p99_ms']:.1f} ({e['requests']}, {_size(e['body_bytes'])})"


def _view_append(e: dict[str, Any], results: Results, server: str) -> str:
    plain, view = e["plain"]["rps"], e["view"]["rps"]
    ratio = f"{e['ratio']:.2f}x" if e["view_resident"] else f"{NA}: no view"
    flag = " ⚠" if e["plain"]["errors"] or e["view"]["errors"] else ""
    return f"{plain:,.0f} / {view:,.0f} ({ratio}){flag}"


def _disk(e: dict[str, Any], results: Results, server: str) -> str:
    plain, compacted = e["uncompacted_bytes"], e["compacted_bytes"]
    if not e["compacted"]:
        return f"{_size(plain)} / {NA} (not compacted: {_size(compacted)})"
    return f"{_size(plain)} / {_size(compacted)} ({_times(plain / max(1, compacted))} smaller)"


def _rows(plan: Plan) -> list[Row]:
    joiner = f"{count(plan.state_changes)} changes over {count(plan.state_keys)} keys"
    return [
        (
            f"Late joiner, {joiner}: full replay from `-1`, received in ms (responses)",
            "state-late-joiner",
            lambda e, r, s: _read(e["replay"]),
        ),
        (
            "↳ `?offset=-1&state=snapshot`: received in ms (responses)",
            "state-late-joiner",
            _snapshot_cell,
        ),
        (
            f"↳ full replay ÷ snapshot: bytes / time (goals ≥ {GOAL_BYTES:g}x / ≥ {GOAL_TIME:g}x)",
            "state-late-joiner",
            lambda e, r, s: _ratio_cell(e["replay"], e),
        ),
        (
            "↳ the Node server's full replay (same storage, same run) ÷ our snapshot: bytes / time",
            "state-late-joiner",
            lambda e, r, s: _ratio_cell(_node_replay(r, s), e),
        ),
        (
            f"`?state=snapshot` of {count(plan.snapshot_entities)} entities: p50 / p99 ms "
            "(requests, size)",
            "state-snapshot",
            _snapshot_latency,
        ),
        (
            f"JSON append of {plan.json_batch} changes, {plan.json_connections} conns: req/s "
            "without a view / with a view resident (ratio)",
            "state-view-append",
            _view_append,
        ),
        (
            f"Disk after {count(plan.disk_changes)} changes: uncompacted / "
            f"`Stream-State-Compaction: {plan.compaction_bytes}`",
            "state-compaction",
            _disk,
        ),
    ]


def has_results(results: Results) -> bool:
    return any(_entry(results, server, key) for server, _ in COLUMNS for key in KEYS)


def table(results: Results, plan: Plan, skeleton: bool = False) -> str:
    """The rows something was measured for (every row with `skeleton`)."""
    return grid(COLUMNS, _rows(plan), results, skeleton)


def goals(results: Results) -> str:
    """The goals of issue 11 for each of our servers measured; n/a where it lacks the
    feature."""

    def status(value: float | None, goal: float) -> str:
        if value is None or math.isnan(value):
            return NA
        return "met" if value >= goal else "**not met**"

    lines = ["| Goal (issue 11) | Server | Measured | Status |", "|---|---|---|---|"]
    for server, label in COLUMNS:
        joiner = _entry(results, server, "state-late-joiner")
        if joiner is not None and "snapshot" in joiner:
            snapshot = _snapshot(joiner)
            size, seconds = ratios(joiner["replay"], snapshot) if snapshot else (None, None)
            for goal, value, what in (
                (GOAL_BYTES, size, "fewer bytes"),
                (GOAL_TIME, seconds, "less time"),
            ):
                shown = _times(value) if value is not None else NA
                lines.append(
                    f"| Late joiner: snapshot ≥ {goal:g}x {what} than a full replay | {label} | "
                    f"{shown} | {status(value, goal)} |"
                )
        append = _entry(results, server, "state-view-append")
        if append is not None:
            ratio = append["ratio"] if append["view_resident"] else None
            lines.append(
                f"| Appends with a view resident ≥ {GOAL_APPEND:g}x the rate without | {label} | "
                f"{f'{ratio:.2f}x' if ratio is not None else NA} | {status(ratio, GOAL_APPEND)} |"
            )
    return "\n".join(lines)


def intro(plan: Plan) -> list[str]:
    return [
        "## State Protocol (issue 11)",
        "",
        "A late joiner reading the whole history vs one `?state=snapshot` request, snapshot "
        "latency, appends with a view resident, and the disk size of a compacted stream. The "
        "Node server has no State Protocol layer: it runs the full replay only. "
        f"{NA} marks a feature the server measured lacks (it answered a plain read). "
        "Run these alone with `bash benchmarks/run.sh --scenarios state` "
        f"({count(FULL.state_changes)} changes, {count(FULL.snapshot_entities)} entities; "
        f"`--quick`: {count(QUICK.state_changes)}, {count(QUICK.snapshot_entities)}); "
        "`--servers trio-durable,node-file` for one pair; `--output none` to leave this "
        "file alone.",
        "",
    ]


def section(results: Results, plan: Plan) -> list[str]:
    """The section's lines: intro, table, goals (nothing if no State Protocol results)."""
    if not has_results(results):
        return []
    return [*intro(plan), table(results, plan), "", goals(results), ""]


def measured(plan: Plan) -> list[str]:
    """Bullets for `How each number is measured`."""
    return [
        f"- **State: late joiner**: a fresh `application/json` stream gets "
        f"{plan.state_changes:,} State Protocol changes over {plan.state_keys:,} keys of one "
        "type (a key's first write an insert, then updates and upserts of about 60 B values, "
        f"2% deletes), as JSON arrays of {plan.state_batch:,} in order on one connection. A "
        "late joiner then reads on one keep-alive connection from `offset=-1`, following "
        "`Stream-Next-Offset`, parsing and folding every response (insert, update and upsert "
        "replace the value; delete removes it) until `Stream-Up-To-Date: true`: received "
        "bytes (headers included) and the time from connecting to the folded state. Full "
        "replay: no `state` parameter; snapshot: `&state=snapshot` on every request. Each "
        f"reader runs {plan.state_repeats} times (the median), and every fold must equal the "
        "state the appended changes make, or the scenario fails.",
        f"- **State: snapshot latency**: a stream of {plan.snapshot_entities:,} inserts of "
        f"distinct keys; {plan.snapshot_requests} sequential `GET ?offset=-1&state=snapshot` "
        "on one connection, each from sending to the last byte received (the first, folded, "
        "must equal the state).",
        f"- **State: view append**: as the JSON append, with {plan.json_batch} upserts "
        "per POST, to a fresh stream never read as state, and to a fresh stream read once "
        "with `?state=snapshot` first (its view then stays resident, updated on each commit); "
        f"{plan.view_rounds} round(s) alternating which goes first, the median of each; "
        "afterwards the last one's snapshot must still equal the state.",
        f"- **State: compaction** (file-durable only): {plan.disk_changes:,} changes "
        "appended alike to a stream created with `Stream-State-Compaction: "
        f"{plan.compaction_bytes}` and one without; the bytes of each stream's files in the "
        "data dir (named by the sha256 of the stream name) once the first is under half the "
        f"second (at most {plan.compaction_wait:g} s). Compacted means a read at the first "
        "append's offset answers `410`; the compacted stream's snapshot must equal the state.",
    ]
