"""The table (absolute numbers and ratios), the issue's targets, and docs/benchmarks.md."""

from __future__ import annotations

import importlib.metadata
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import report_hostile, report_scale, report_state, report_yjs
from benchmarks.loadgen import wrk_version
from benchmarks.scenarios import FULL, QUICK, Plan
from benchmarks.servers import BENCH, ROOT

Results = dict[str, dict[str, Any]]
SERVERS = ("trio-durable", "node-file", "trio-memory", "node-memory", "raw")
DURABLE, NODE_FILE, MEMORY, NODE_MEMORY, RAW = (
    "trio-durable",
    "node-file",
    "trio-memory",
    "node-memory",
    "raw",
)


def _run(*command: str) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=ROOT)
    except OSError:
        return "?"
    return (done.stdout or done.stderr).strip()


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def machine(work: Path) -> dict[str, Any]:
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    memory = "?"
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            memory = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    package = BENCH / "node" / "node_modules" / "@durable-streams" / "server" / "package.json"
    node_server = json.loads(package.read_text())["version"] if package.exists() else "?"
    versions = {}
    for name in ("trio", "hypercorn", "h11", "quart-trio", "quart"):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "?"
    commit = _run("git", "rev-parse", "--short", "HEAD")
    if _run("git", "status", "--porcelain", "--untracked-files=no"):
        commit += " (with uncommitted changes)"
    filesystem = _run("df", "--output=fstype", str(work)).splitlines()[-1:]
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "kernel": f"{platform.system()} {platform.release()}",
        "memory": memory,
        "os": _os_name(),
        "python": sys.version.split()[0],
        "node": _run("node", "--version"),
        "node_server": node_server,
        "wrk": wrk_version(),
        "python_packages": versions,
        "commit": commit,
        "work_fs": filesystem[0] if filesystem else "?",
        "load_before": loadavg(),
        "calibration_s": calibrate(),
    }


def calibrate() -> float:
    """Seconds for 10M iterations of a Python loop: how fast this CPU is right now."""
    began = time.perf_counter()
    total = 0
    for i in range(10_000_000):
        total += i
    return time.perf_counter() - began


def cpu_check(cpu: str, iterations: int = 5_000_000) -> float:
    """Seconds for a Python loop pinned to `cpu` (before a server starts there): this VM's
    speed drifts several-fold over minutes, so each server's numbers come with one."""
    code = (
        "import time\nt = time.perf_counter()\ns = 0\n"
        f"for i in range({iterations}):\n    s += i\n"
        "print(time.perf_counter() - t)"
    )
    done = subprocess.run(
        ["taskset", "-c", cpu, sys.executable, "-c", code], capture_output=True, text=True
    )
    try:
        return float(done.stdout.strip())
    except ValueError:
        return float("nan")


def _os_name() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return "?"


# ---- cells --------------------------------------------------------------------------------


def _num(value: float, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:,.{digits}f}"


def _ms(value: float) -> str:
    if value is None or math.isnan(value):
        return "—"
    return f"{value:.2f}" if value < 10 else f"{value:.1f}" if value < 100 else f"{value:.0f}"


def _ratio(ours: float | None, theirs: float | None) -> str:
    if not ours or not theirs or math.isnan(ours) or math.isnan(theirs):
        return "—"
    value = ours / theirs
    return f"{value:.2f}x" if value < 10 else f"{value:.0f}x"


def _cpu_checks(results: Results, server: str) -> list[float]:
    """Before the append rounds and the load scenarios: when the compared numbers were made."""
    checks = results.get(server, {}).get("cpu-check", {})
    return [value for group, value in checks.items() if group.startswith(("appends", "load"))]


def _get(results: Results, server: str, key: str) -> dict[str, Any] | None:
    value = results.get(server, {}).get(key)
    return value if isinstance(value, dict) else None


Row = tuple[
    str,  # label
    Callable[[dict[str, Any]], str],  # cell
    Callable[[dict[str, Any]], float | None],  # number compared (ratio)
    str,  # key
    Callable[[dict[str, Any]], float | None] | None,  # second number compared (p99)
]


def _rows(plan: Plan) -> list[Row]:
    def rate(entry: dict[str, Any]) -> str:
        flag = " ⚠" if entry.get("errors") else ""
        return f"{_num(entry['rps'])} ({_ms(entry['p50_ms'])} / {_ms(entry['p99_ms'])}){flag}"

    def mbps(entry: dict[str, Any]) -> str:
        return _num(entry["mbps"]) + (" ⚠" if entry.get("errors") else "")

    def lat(entry: dict[str, Any]) -> str:
        flag = " ⚠" if entry.get("missed") or entry.get("errors") else ""
        return f"{_ms(entry['p50_ms'])} / {_ms(entry['p99_ms'])}{flag}"

    rows: list[Row] = []
    for c in plan.append_connections:
        rows.append(
            (
                f"Append 100 B, {c} conn{'s' if c > 1 else ''}: req/s (p50 / p99 ms)",
                rate,
                lambda e: e["rps"],
                f"append-c{c}",
                None,
            )
        )
    jc = plan.json_connections
    rows.append(
        (
            f"JSON append, {plan.json_batch}-message batch, {jc} conns: req/s (p50 / p99 ms)",
            rate,
            lambda e: e["rps"],
            f"json-c{jc}",
            None,
        )
    )
    for c in plan.read_connections:
        rows.append(
            (
                f"Catch-up read, 10k x 100 B stream, {c} conn{'s' if c > 1 else ''}: MB/s",
                mbps,
                lambda e: e["mbps"],
                f"catchup-small-c{c}",
                None,
            )
        )
    rows.append(
        (
            f"Catch-up read, {plan.big_mib} MiB stream (1 MiB appends), 1 conn: MB/s",
            mbps,
            lambda e: e["mbps"],
            "catchup-big-c1",
            None,
        )
    )

    def post(entry: dict[str, Any]) -> str:
        flag = " ⚠" if entry.get("errors") else ""
        return f"{_ms(entry['post_p50_ms'])} / {_ms(entry['post_p99_ms'])}{flag}"

    for k in plan.fanout_ks:
        for short, name in (("sse", "SSE"), ("lp", "long-poll")):
            rows.append(
                (
                    f"Fan-out {name}, K={k}: POST → delivery p50 / p99 ms",
                    lat,
                    lambda e: e["p50_ms"],
                    f"fanout-{short}-{k}",
                    lambda e: e["p99_ms"],
                )
            )
        rows.append(
            (
                f"Writer latency, K={k} SSE readers parked: POST → its 204, p50 / p99 ms",
                post,
                lambda e: e.get("post_p50_ms"),
                f"fanout-sse-{k}",
                lambda e: e.get("post_p99_ms"),
            )
        )

    def create_rate(entry: dict[str, Any]) -> str:
        done = "" if entry["completed"] else f" (only {entry['created']:,})"
        flag = " ⚠" if entry.get("bad") or entry.get("socket_errors") else ""
        return f"{_num(entry['rate'])}{done}{flag}"

    def rss(entry: dict[str, Any]) -> str:
        return f"{entry['rss_rest'] / 2**20:,.0f} MiB ({entry['per_stream_rest']:,.0f} B/stream)"

    n = f"{plan.create_streams // 1000}k"
    rows.append(
        (
            f"Create {n} empty streams, {plan.create_connections} conns: creates/s",
            create_rate,
            lambda e: e["rate"],
            "create",
            None,
        )
    )
    rows.append(
        (
            f"RSS with {n} streams, at rest (B per stream over a fresh server)",
            rss,
            lambda e: e["rss_rest"],
            "create",
            None,
        )
    )
    m = f"{plan.restart_streams // 1000}k" if plan.restart_streams >= 1000 else plan.restart_streams
    rows.append(
        (
            f"Restart to ready, {m} streams on disk: s (start with empty dir)",
            lambda e: f"{e['seconds']:.2f} ({e['empty_start_seconds']:.2f})",
            lambda e: e["seconds"],
            "restart",
            None,
        )
    )
    return rows


HEADER = (
    "Scenario",
    "trio file-durable",
    "Node file",
    "÷ Node",
    "trio memory",
    "Node memory",
    "÷ Node",
    "raw ASGI ceiling",
    "÷ raw",
)


def _ratio_cell(row: Row, ours: dict[str, Any] | None, theirs: dict[str, Any] | None) -> str:
    if ours is None or theirs is None:
        return "—"
    _, _, first, _, second = row
    cell = _ratio(first(ours), first(theirs))
    if second is not None:
        cell += " / " + _ratio(second(ours), second(theirs))
    return cell


def table(results: Results, plan: Plan) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for row in _rows(plan):
        label, cell, _, key, _ = row
        entries = {
            name: _get(results, name, key)
            for name in (DURABLE, NODE_FILE, MEMORY, NODE_MEMORY, RAW)
        }
        if not any(entries.values()):
            continue

        def show(entry: dict[str, Any] | None, cell: Callable[[dict[str, Any]], str] = cell) -> str:
            return cell(entry) if entry is not None else "—"

        raw = entries[RAW]
        memory = entries[MEMORY]
        raw_ratio = _ratio_cell(row, memory, raw)
        cells = [
            label,
            show(entries[DURABLE]),
            show(entries[NODE_FILE]),
            _ratio_cell(row, entries[DURABLE], entries[NODE_FILE]),
            show(entries[MEMORY]),
            show(entries[NODE_MEMORY]),
            _ratio_cell(row, memory, entries[NODE_MEMORY]),
            show(entries[RAW]),
            raw_ratio,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    checks = {
        name: statistics.median(times) if (times := _cpu_checks(results, name)) else None
        for name in SERVERS
    }
    if any(checks.values()):

        def check(name: str) -> str:
            value = checks[name]
            return "—" if value is None else f"{value:.2f}"

        def check_ratio(ours: str, theirs: str) -> str:
            return _ratio(checks[ours], checks[theirs])

        cells = [
            "CPU check on CPU 0 before each server's append rounds and load scenarios: median s "
            "for a 5M-step Python loop (lower = faster CPU at that time)",
            check(DURABLE),
            check(NODE_FILE),
            check_ratio(DURABLE, NODE_FILE),
            check(MEMORY),
            check(NODE_MEMORY),
            check_ratio(MEMORY, NODE_MEMORY),
            check(RAW),
            check_ratio(MEMORY, RAW),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def targets(results: Results) -> str:
    """The targets of issue 4, checked against this run."""

    def value(server: str, key: str, field: str) -> float | None:
        entry = _get(results, server, key)
        return None if entry is None else entry.get(field)

    def check(ok: bool | None) -> str:
        return "—" if ok is None else ("met" if ok else "**not met**")

    lines = ["| Target (issue 4) | Measured | Status |", "|---|---|---|"]

    def ratio_line(
        label: str, ours: float | None, theirs: float | None, goal: float, higher: bool = True
    ) -> None:
        if not ours or not theirs:
            lines.append(f"| {label} | — | — |")
            return
        r = ours / theirs
        lines.append(f"| {label} | {r:.2f}x | {check(r >= goal if higher else r <= goal)} |")

    for c in (16, 64):
        ratio_line(
            f"Durable appends, {c} conns: ≥ 3x Node file",
            value(DURABLE, f"append-c{c}", "rps"),
            value(NODE_FILE, f"append-c{c}", "rps"),
            3.0,
        )
        ratio_line(
            f"↳ the raw ASGI ceiling (no protocol, no disk), {c} conns: ≥ 3x Node file",
            value(RAW, f"append-c{c}", "rps"),
            value(NODE_FILE, f"append-c{c}", "rps"),
            3.0,
        )
    ratio_line(
        "Non-durable appends, 16 conns: ≥ 0.8x raw ASGI ceiling",
        value(MEMORY, "append-c16", "rps"),
        value(RAW, "append-c16", "rps"),
        0.8,
    )
    ratio_line(
        "Catch-up 10k x 100 B (1 conn): ≥ 5x Node file",
        value(DURABLE, "catchup-small-c1", "mbps"),
        value(NODE_FILE, "catchup-small-c1", "mbps"),
        5.0,
    )
    ratio_line(
        "Catch-up 10k x 100 B (1 conn): ≥ 0.8x Node memory",
        value(MEMORY, "catchup-small-c1", "mbps"),
        value(NODE_MEMORY, "catchup-small-c1", "mbps"),
        0.8,
    )
    for ours, theirs, label in ((MEMORY, NODE_MEMORY, "memory"), (DURABLE, NODE_FILE, "file")):
        ratio_line(
            f"SSE fan-out K=1000, p99 ({label}): ≤ 2x Node",
            value(ours, "fanout-sse-1000", "p99_ms"),
            value(theirs, "fanout-sse-1000", "p99_ms"),
            2.0,
            higher=False,
        )
    for k in (1000, 100):  # the K, else what a quick run has
        if value(MEMORY, f"fanout-sse-{k}", "post_p50_ms") is not None:
            ratio_line(
                f"POST p50 with {k} SSE readers parked (memory, issue 10): ≤ 2x Node",
                value(MEMORY, f"fanout-sse-{k}", "post_p50_ms"),
                value(NODE_MEMORY, f"fanout-sse-{k}", "post_p50_ms"),
                2.0,
                higher=False,
            )
            break
    ratio_line(
        "↳ the raw ASGI ceiling (an event per POST, no protocol): ≤ 2x Node memory",
        value(RAW, "fanout-sse-1000", "p99_ms"),
        value(NODE_MEMORY, "fanout-sse-1000", "p99_ms"),
        2.0,
        higher=False,
    )
    for server in (DURABLE, MEMORY):
        entry = _get(results, server, "create")
        if entry is None:
            continue
        mb = entry["rss_rest"] / 1e6
        label = f"100k idle streams ({server}): RSS ≤ 150 MB"
        if entry["created"] < 100_000:  # a burst's cost is bounded, so no extrapolation
            lines.append(f"| {label} | {mb:,.0f} MB with {entry['created']:,} | — |")
            continue
        lines.append(f"| {label} | {mb:,.0f} MB | {check(mb <= 150)} |")
    entry = _get(results, DURABLE, "restart")
    if entry is not None:
        lines.append(
            f"| Restart to ready with {entry['streams']:,} streams: < 1 s | "
            f"{entry['seconds']:.2f} s | {check(entry['seconds'] < 1)} |"
        )
    return "\n".join(lines)


def _machine_lines(machine: dict[str, Any]) -> list[str]:
    packages = ", ".join(f"{k} {v}" for k, v in machine["python_packages"].items())
    return [
        f"- CPUs: {machine['nproc']} x {machine['cpu']}; memory {machine['memory']}",
        f"- OS: {machine['os']}, kernel {machine['kernel']}; data dirs on {machine['work_fs']}",
        f"- Python {machine['python']} ({packages})",
        f"- Node {machine['node']}, `@durable-streams/server` {machine['node_server']}",
        f"- {machine['wrk']}",
        f"- This server at commit {machine['commit']}",
        f"- Load average before / after the run: {machine['load_before']} / "
        f"{machine.get('load_after', '?')}",
        f"- CPU speed check: a 10M-iteration Python loop took {machine['calibration_s']:.2f} s "
        "(compare runs made at different times with it)",
    ]


def markdown(
    results: Results,
    plan: Plan,
    machine: dict[str, Any],
    command: str,
    seconds: float,
    problems: list[str],
    quick: bool,
) -> str:
    mode = "quick mode" if quick else "full run"
    parts = [
        "# Benchmarks",
        "",
        "Generated by the benchmark harness in `benchmarks/` (do not edit by hand; run it again).",
        "It compares this server (Trio, `file-durable` and `memory`) with the Node reference "
        f"server `@durable-streams/server` {machine['node_server']} (file-backed and in-memory) "
        "and with a trivial raw ASGI app under `hypercorn --worker-class trio`, the ceiling of "
        "the HTTP stack. All on 127.0.0.1, one server at a time, each server pinned to CPU 0 "
        "and the load generator (wrk, our Python client) to CPU 1.",
        "",
        "## Command",
        "",
        "```sh",
        command,
        "```",
        "",
        f"This table comes from a {mode}; it took {seconds / 60:.1f} minutes. "
        f"`bash benchmarks/run.sh --quick` takes a few minutes (K={QUICK.fanout_ks[0]} fan-out "
        f"only, {QUICK.create_streams:,} creates, {QUICK.restart_streams:,} streams restarted, "
        f"{QUICK.duration:g} s per wrk measurement); the full run (about 25 minutes here) has "
        f"K = {', '.join(map(str, FULL.fanout_ks))}, {FULL.create_streams:,} creates, "
        f"{FULL.restart_streams:,} streams restarted and {FULL.duration:g} s per measurement; "
        f"the reopened log holds {report_hostile.count(QUICK.reopen_records)} records (quick) or "
        f"{report_hostile.count(FULL.reopen_records)}. "
        "`--help` lists the options (subsets of servers and scenarios, sizes).",
        "",
        "## Machine",
        "",
        *_machine_lines(machine),
        "",
        "## Results",
        "",
        "Ratios are ours ÷ Node (and memory ÷ the raw ASGI ceiling) for every metric: above 1x "
        "is better for rates and MB/s, worse for latencies, RSS and restart time. "
        "⚠ marks a cell whose run saw errors (listed under Problems).",
        "",
        table(results, plan),
        "",
        "## Targets of issue 4",
        "",
        targets(results),
        "",
        *report_hostile.section(results, plan),
        *report_state.section(results, plan),
        *report_yjs.section(results, plan),
        *report_scale.section(results, plan),
        "## Problems seen in this run",
        "",
        *(
            [f"- {p}" for p in problems]
            or ["None: every request answered 2xx, no server log errors."]
        ),
        "",
        "## How each number is measured",
        "",
        f"- **Appends** (wrk, 1 thread, {plan.duration:g} s each after a {plan.warmup:g} s "
        "warm-up): `POST` of the same 100 B `application/octet-stream` body to one stream, "
        "keep-alive connections; req/s and wrk's p50 / p99 latency. Durable compares "
        "`file-durable` (fdatasync before each 2xx) with Node's file store; non-durable compares "
        "`memory` with Node's in-memory store and the raw ASGI app (which only reads the body and "
        f"answers 204). {plan.append_rounds} round(s): in each, every server is started fresh "
        "and measured in turn (in reverse order every other round); each cell is the round "
        "with the median rate, and results.json keeps every round.",
        f"- **JSON append**: `POST` of a JSON array of {plan.json_batch} objects (about 95 B each) "
        "to an `application/json` stream, so the server validates and flattens it.",
        f"- **Catch-up read**: a stream of {plan.small_messages:,} appends of 100 B (1 MB) and one "
        f"of {plan.big_mib} appends of 1 MiB, read whole from `offset=-1`. If one response holds "
        "the whole stream, wrk repeats that GET; otherwise (our server answers at most about "
        "1 MiB per response) a Lua script follows `Stream-Next-Offset` until "
        "`Stream-Up-To-Date`. MB/s = whole reads x stream size (10^6 B) ÷ seconds. No "
        "`Accept-Encoding`, so nothing is compressed.",
        "- **Fan-out**: K readers (SSE, or long-poll re-polling at once) at the tail of one "
        "`text/plain` stream; a writer POSTs 100 B carrying a round marker. Latency is from just "
        "before the POST is written to the arrival of the first bytes carrying the marker at each "
        "reader, stamped by one epoll loop over all sockets (so no reader waits for others' "
        f"bookkeeping). 2 warm-up rounds, then {plan.fanout_rounds} rounds (long-poll with "
        f"K > 100: {plan.fanout_rounds_large}); between rounds the writer waits 0.3 s / 1 s, and "
        "at least 1.5x the round's slowest delivery (long-poll, so every reader is parked "
        "again), or 0.05 s / 0.2 s (SSE). The raw ASGI app serves fan-out too, as the "
        "stack's ceiling: every POST sets one `trio.Event` its readers wait on, and each SSE "
        "reader sends the body as one event (no offsets, cursors or control events).",
        "- **Writer latency**: in the SSE fan-out rounds, the writer's own POST latency, from "
        "just before the POST is written to the arrival of its answer (issue 10: a writer must "
        "not wait for its readers' wake-ups).",
        f"- **Creates**: wrk `PUT`s of new empty streams at {plan.create_connections} connections "
        f"until {plan.create_streams:,} were created (at most {plan.create_bound:g} s). RSS is "
        "VmRSS summed over the server's process tree (ours runs as one process, "
        "`--workers 0`), on a fresh server: before, right after, and "
        "at rest — for our server after "
        + (
            f"{plan.idle_wait:g} s with `DS_ACTORS__IDLE_TIMEOUT_SECS={plan.idle_timeout:g}`"
            if plan.idle_timeout is not None
            else f"{plan.idle_wait:g} s (the default idle timeout is 10 s)"
        )
        + ", so idle actors have stopped. B/stream = (at rest - before) ÷ streams.",
        f"- **Restart**: {plan.restart_streams:,} streams created with 100 B each on a fresh data "
        f"dir; then {plan.restarts}x SIGTERM and start again, timed from spawn until `/readyz` "
        "answers 200 (ours; Node has none, so any answer) and `HEAD` of the first stream "
        "answers 200; the median. In brackets: the first start, on an empty data dir.",
        *report_hostile.measured(plan),
        *report_state.measured(plan),
        *report_yjs.measured(plan),
        "- This server runs as the README starts it, `streams serve` (hypercorn's Trio worker, "
        "backlog 2048, no keep-alive request cap); the raw ASGI app under hypercorn with the "
        "same settings, `hypercorn.toml`, unless `--hypercorn-config` says otherwise. Node runs "
        "with `longPollTimeout` 20 s, like ours.",
        "- Everything shares one small VM: use the ratios, not the absolute numbers. Other "
        "work on the machine during the run shows in the load average above. The speed of "
        "this VM's CPUs drifts (a Python loop took from 0.5 s to 2 s for 10M steps within one "
        "hour), and the servers are measured one after another, so the last row of the table "
        "gives the speed of CPU 0 just before each server's load scenarios: a ratio between "
        "two columns whose CPU checks differ much is skewed by that much.",
        "",
    ]
    return "\n".join(parts)
