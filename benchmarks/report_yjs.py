"""The `Yjs documents (issue 13)` section of docs/benchmarks.md: its table, the issue's goal
and how each number is measured. Our server's columns say n/a when it has no Yjs endpoints;
the Node columns are upstream's YjsServer over the Node reference server."""

from __future__ import annotations

import math
from typing import Any

from benchmarks.report_grid import Cell, Results, Row, grid
from benchmarks.report_grid import entry as _entry
from benchmarks.report_hostile import count
from benchmarks.scenarios import FULL, QUICK, Plan

COLUMNS = (
    ("trio-durable", "trio file-durable"),
    ("node-file", "YjsServer over Node file"),
    ("trio-memory", "trio memory"),
    ("node-memory", "YjsServer over Node memory"),
)
NODE_OF = {"trio-durable": "node-file", "trio-memory": "node-memory"}
KEYS = ("yjs-load", "yjs-load-compacted", "yjs-append")
GOAL_P99 = 2.0  # p99 of an append while a compaction runs ÷ while none runs, at most
FEW = 100  # fewer latencies than this: the p99 is their maximum, or close
NA = "n/a"


def _ms(value: float) -> str:
    return f"{value:.2f}" if value < 10 else f"{value:.1f}" if value < 100 else f"{value:,.0f}"


def _size(value: float) -> str:
    if value >= 1e6:
        return f"{value / 1e6:,.1f} MB"
    return f"{value / 1e3:,.1f} kB" if value >= 1e3 else f"{value:,.0f} B"


def binary(value: int) -> str:
    """A byte setting as it was given: 4 KiB, 1 GiB, 3000 B."""
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if value >= size and value % size == 0:
            return f"{value // size} {unit}"
    return f"{value:,} B"


def _times(value: float) -> str:
    return f"{value:,.0f}x" if value >= 10 else f"{value:.2f}x"


def _available(entry: dict[str, Any] | None) -> dict[str, Any] | None:
    return entry if entry is not None and entry.get("available") else None


def _load(e: dict[str, Any], results: Results, server: str) -> str:
    if not e["available"]:
        return f"{NA} (no Yjs endpoints)"
    parts = f"{_size(e['snapshot_bytes'])} + {_size(e['update_bytes'])}"
    flag = "" if e["snapshot"] or e["threshold"] > e["written_bytes"] else ", no snapshot ⚠"
    return f"{_size(e['wire_bytes'])} in {_ms(e['seconds'] * 1000)} ms ({parts}{flag})"


def ratios(without: dict[str, Any], with_: dict[str, Any]) -> tuple[float, float]:
    """(bytes, time) of one load ÷ another."""
    return (
        without["wire_bytes"] / max(1, with_["wire_bytes"]),
        without["seconds"] / max(1e-9, with_["seconds"]),
    )


def _pair(a: dict[str, Any] | None, b: dict[str, Any] | None) -> str:
    if a is None or b is None:
        return NA
    size, seconds = ratios(a, b)
    return f"{_times(size)} / {_times(seconds)}"


def _compaction_gain(e: dict[str, Any], results: Results, server: str) -> str:
    if not e["available"]:
        return NA
    return _pair(_available(_entry(results, server, "yjs-load")), e)


def _ours_vs_upstream(e: dict[str, Any], results: Results, server: str) -> str:
    if server not in NODE_OF:
        return "—"
    if not e["available"]:
        return NA
    return _pair(e, _available(_entry(results, NODE_OF[server], "yjs-load-compacted")))


def _latency(side: str) -> Cell:
    def cell(e: dict[str, Any], results: Results, server: str) -> str:
        if not e["available"]:
            return f"{NA} (no Yjs endpoints)"
        s = e[side]
        if not s["count"]:
            return f"{NA} (none)"
        few = " ⚠ few" if s["count"] < FEW else ""
        shown = f"{_ms(s['p50_ms'])} / {_ms(s['p99_ms'])} ({s['count']:,}{few}"
        if side == "during":
            ran = sorted(e["compaction_ms"])
            shown += f"; {len(ran)} compactions, median {_ms(ran[(len(ran) - 1) // 2])} ms"
        return shown + ")"

    return cell


def p99_ratio(e: dict[str, Any]) -> float | None:
    """p99 while a compaction ran ÷ p99 while none did; None if either has no latencies."""
    if not e.get("available") or not e["during"]["count"] or not e["outside"]["count"]:
        return None
    return float(e["during"]["p99_ms"] / max(1e-9, e["outside"]["p99_ms"]))


def _p99_ratio(e: dict[str, Any], results: Results, server: str) -> str:
    ratio = p99_ratio(e)
    return _times(ratio) if ratio is not None else NA


def _rows(plan: Plan) -> list[Row]:
    edits = count(plan.yjs_edits)
    batch = "one update per POST" if plan.yjs_batch == 1 else f"{plan.yjs_batch} updates per POST"
    return [
        (
            f"New client loads a document of {edits} one-character edits ({batch}), without "
            f"compaction (threshold {binary(plan.yjs_no_threshold)}): received in ms "
            "(snapshot + updates)",
            "yjs-load",
            _load,
        ),
        (
            f"↳ with compaction (threshold {binary(plan.yjs_threshold)}): received in ms "
            "(snapshot + updates)",
            "yjs-load-compacted",
            _load,
        ),
        ("↳ without ÷ with compaction: bytes / time", "yjs-load-compacted", _compaction_gain),
        (
            "↳ ours ÷ the YjsServer over Node (same storage), with compaction: bytes / time",
            "yjs-load-compacted",
            _ours_vs_upstream,
        ),
        (
            f"Append of one edit to a document of {count(plan.yjs_big_edits)} edits, while "
            "no compaction runs: p50 / p99 ms (appends)",
            "yjs-append",
            _latency("outside"),
        ),
        (
            "↳ while a compaction runs: p50 / p99 ms (appends; compactions, median duration)",
            "yjs-append",
            _latency("during"),
        ),
        (
            f"↳ p99 while one runs ÷ while none runs (goal ≤ {GOAL_P99:g}x)",
            "yjs-append",
            _p99_ratio,
        ),
    ]


def has_results(results: Results) -> bool:
    return any(_entry(results, server, key) for server, _ in COLUMNS for key in KEYS)


def table(results: Results, plan: Plan, skeleton: bool = False) -> str:
    """The rows something was measured for (every row with `skeleton`)."""
    return grid(COLUMNS, _rows(plan), results, skeleton)


def goals(results: Results) -> str:
    """Issue 13's goal for each server measured (upstream's too, for comparison)."""
    lines = ["| Goal (issue 13) | Server | Measured | Status |", "|---|---|---|---|"]
    for server, label in COLUMNS:
        entry = _entry(results, server, "yjs-append")
        if entry is None:
            continue
        ratio = p99_ratio(entry)
        if ratio is None or math.isnan(ratio):
            shown, status = NA, NA
        else:
            shown = _times(ratio)
            status = "met" if ratio <= GOAL_P99 else "**not met**"
            if entry["during"]["count"] < FEW:
                status += f" ({entry['during']['count']} appends during compactions: rough)"
        lines.append(
            f"| Append p99 while a compaction runs ≤ {GOAL_P99:g}x while none runs | {label} | "
            f"{shown} | {status} |"
        )
    return "\n".join(lines)


def intro(plan: Plan) -> list[str]:
    return [
        "## Yjs documents (issue 13)",
        "",
        "A new client loading a document of many small edits, without and with server-side "
        "compaction, and the latency of an append while a compaction runs. Ours serves "
        "`/v1/yjs/<service>/docs/<doc>` itself; the Node columns are upstream's `YjsServer` "
        "(`@durable-streams/y-durable-streams` 0.2.7) in front of the Node reference server, "
        f"in one process (`benchmarks/node/yjs-server.mjs`). {NA} marks a server without Yjs "
        "endpoints. Run these alone with `bash benchmarks/run.sh --scenarios yjs` "
        f"({count(FULL.yjs_edits)} edits, appends to a document of "
        f"{count(FULL.yjs_big_edits)} edits; `--quick`: {count(QUICK.yjs_edits)}, "
        f"{count(QUICK.yjs_big_edits)}); `--trio-checkout DIR` runs our server from another "
        "checkout.",
        "",
    ]


def section(results: Results, plan: Plan) -> list[str]:
    """The section's lines: intro, table, goals (nothing if no Yjs results)."""
    if not has_results(results):
        return []
    return [*intro(plan), table(results, plan), "", goals(results), ""]


def measured(plan: Plan) -> list[str]:
    """Bullets for `How each number is measured`."""
    return [
        f"- **Yjs: new client**: a pycrdt document gets {plan.yjs_edits:,} single-character "
        "inserts into one `Y.Text`, typed at a cursor that jumps to a random place 5% of the "
        "time; each edit's update is lib0-framed and POSTed "
        + ("alone" if plan.yjs_batch == 1 else f"{plan.yjs_batch} to a request")
        + " in order on one connection. Once snapshot discovery has named the same place for "
        f"{plan.yjs_quiet:g} s (compactions over), a new client reads on one keep-alive "
        "connection: `GET ?offset=snapshot`, follows the `307`, reads the snapshot if it "
        "names one (`{offset}_snapshot`), then the updates from its `Stream-Next-Offset` "
        "until `Stream-Up-To-Date`, applying everything to a pycrdt document, whose text must "
        "equal the text written or the scenario fails. Received bytes (headers included) and "
        "the time from connecting to the applied document, the median of "
        f"{plan.yjs_repeats}. Without compaction: the server's threshold is "
        f"{binary(plan.yjs_no_threshold)} (ours `DS_YJS__COMPACTION_THRESHOLD_BYTES`, the "
        "YjsServer's `compactionThreshold`); with: "
        f"{binary(plan.yjs_threshold)}, each on a fresh server.",
        f"- **Yjs: append latency** (on the server with the {binary(plan.yjs_threshold)} "
        f"threshold): a document of {plan.yjs_big_edits:,} one-character inserts at its "
        "start (each its own item, so merging it costs real time), written "
        f"{plan.yjs_seed_batch:,} updates to a POST; once compactions are over, single-edit "
        f"appends one after another on one connection (at most {plan.yjs_appends:,} or "
        f"{plan.yjs_append_seconds:g} s), while another connection runs snapshot discovery "
        f"every {plan.yjs_poll * 1000:g} ms. When compactions ran: the YjsServer's from its "
        "own log (our `yjs-server.mjs` wraps its compactor and logs each start and end); "
        "ours from the protocol: it runs one compaction of a document at a time, started by "
        "an append once the updates since the snapshot reach the threshold, so one ran at "
        "most from the sending of the first append answered after the previous snapshot "
        "showed whose `Stream-Next-Offset` is the threshold past the offset that snapshot "
        "covers until discovery first named the new snapshot. An append in flight at any "
        "moment of a compaction counts as during one, the others as not. results.json keeps "
        "the protocol's bound for both as `protocol_compaction_ms` beside the windows used, "
        "`compaction_ms`; it is loose for the YjsServer, which counts from the end of its "
        "previous compaction. Afterwards a new client must load the document's exact text.",
    ]
