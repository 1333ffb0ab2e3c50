"""The `Scale-out on PostgreSQL (issue 16)` section of docs/benchmarks.md: appends against one
and two server processes, cross-process SSE delivery, and the commits/s of our transaction
shape. A separate run of the group (`--scenarios scale`) merges its section into the page
(`merge`) and leaves the other sections as they are."""

from __future__ import annotations

import math
from typing import Any

from benchmarks.scale import SETUPS
from benchmarks.scenarios import FULL, QUICK, Plan

HEADING = "## Scale-out on PostgreSQL (issue 16)"
BEFORE = "## Problems seen in this run"  # a merged section goes before this one
Results = dict[str, dict[str, Any]]
VARIANTS = {
    ("notify", "on"): "ours: `pg_notify` in the transaction",
    ("no-notify", "on"): "the same without `pg_notify`",
    ("notify-after", "on"): "`pg_notify` in a transaction of its own after the commit, "
    "that one at `synchronous_commit=off`",
    ("notify", "off"): "ours, at `synchronous_commit=off`",
}


def _num(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "—"
    return f"{value:,.0f}"


def _ms(value: float) -> str:
    if math.isnan(value):
        return "—"
    return f"{value:.2f}" if value < 10 else f"{value:.1f}" if value < 100 else f"{value:,.0f}"


def _ratio(value: float | None, base: float | None) -> str:
    if not value or not base:
        return "—"
    return f"{value / base:.2f}x"


def has_results(results: Results) -> bool:
    scale = results.get("scale", {})
    return bool(scale.get("appends") or scale.get("sse") or scale.get("commits"))


def _cores(entry: dict[str, Any]) -> str:
    cores = entry["cores"]
    return ", ".join(f"{role} {value:.2f}" for role, value in cores.items())


def appends_table(results: Results) -> str:
    appends = results.get("scale", {}).get("appends", {})
    base = appends.get("pg-1", {}).get("rps")
    file = appends.get("file-1", {}).get("rps")
    lines = [
        "| Setup | Appends/s (p50 / p99 ms) | ÷ postgres, 1 process | ÷ file-durable | "
        "Commits/s (per append) | CPU used, in cores | CPU per append, µs: "
        "servers / PostgreSQL |",
        "|---|---|---|---|---|---|---|",
    ]
    for setup in SETUPS:
        entry = appends.get(setup.key)
        if entry is None:
            lines.append(f"| {setup.label} | not measured (see Problems) | | | | | |")
            continue
        flag = " ⚠" if entry.get("errors") else ""
        rate = f"{_num(entry['rps'])} ({_ms(entry['p50_ms'])} / {_ms(entry['p99_ms'])}){flag}"
        commits = entry.get("commits_per_s") if setup.postgres else None
        committed = (
            f"{_num(commits)} ({entry['commits_per_append']:.2f})" if commits else "— (no database)"
        )
        per = entry["us_per_append"]
        postgres = f"{per['postgres']:,.0f}" if setup.postgres else "—"
        lines.append(
            f"| {setup.label} | {rate} | {_ratio(entry['rps'], base)} | "
            f"{_ratio(entry['rps'], file)} | {committed} | {_cores(entry)} | "
            f"{per['servers']:,.0f} / {postgres} |"
        )
    return "\n".join(lines)


def sse_table(results: Results) -> str:
    sse = results.get("scale", {}).get("sse", {})
    lines = [
        "| SSE readers on process B, the writer's POST on | delivery p50 / p99 ms | "
        "the POST's own p50 / p99 ms | deliveries (missed) |",
        "|---|---|---|---|",
    ]
    labels = (("cross", "process A (another process)"), ("same", "process B (the same one)"))
    for key, label in labels:
        entry = sse.get(key)
        if entry is None:
            continue
        flag = " ⚠" if entry.get("errors") else ""
        lines.append(
            f"| {label} | {_ms(entry['p50_ms'])} / {_ms(entry['p99_ms'])}{flag} | "
            f"{_ms(entry['post_p50_ms'])} / {_ms(entry['post_p99_ms'])} | "
            f"{entry['samples']:,} ({entry['missed']}) |"
        )
    if "cross" in sse and "same" in sse:
        cross, same = sse["cross"], sse["same"]
        lines.append(
            f"| cross ÷ same | {_ratio(cross['p50_ms'], same['p50_ms'])} / "
            f"{_ratio(cross['p99_ms'], same['p99_ms'])} | | |"
        )
    return "\n".join(lines)


def commits_table(results: Results) -> str:
    rates = results.get("scale", {}).get("commits") or []
    clients = sorted({rate["clients"] for rate in rates})
    lines = [
        "| Transaction (pgbench) | "
        + " | ".join(f"{c} client{'s' if c > 1 else ''}" for c in clients)
        + " |",
        "|---|" + "---|" * len(clients),
    ]
    for (variant, sync), label in VARIANTS.items():
        found = {
            rate["clients"]: rate
            for rate in rates
            if rate["variant"] == variant and rate["synchronous_commit"] == sync
        }
        if not found:
            continue
        cells = [
            f"{_num(found[c]['tps'])} ({found[c]['postgres_cores']:.2f})" if c in found else "—"
            for c in clients
        ]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def intro(plan: Plan) -> list[str]:
    return [
        HEADING,
        "",
        f"Appends of 100 B at {plan.scale_connections} connections spread over "
        f"{plan.scale_streams} streams (each connection's next request to the next stream), "
        "against postgres mode with one server process and with two (two `streams serve` "
        "processes behind HAProxy, round-robin per request, as docs/deployment.md deploys "
        "them, or by stream: `balance uri` with `hash-type consistent`, each stream's "
        "requests to one process; and `hypercorn --workers 2` with the README's hypercorn "
        "command), against "
        "file-durable with one, and postgres at `synchronous_commit=off` (set for the "
        "servers' sessions in the connection string, `options='-c synchronous_commit=off'`), "
        "in one run, each started fresh on a database of its own. PostgreSQL is a throwaway "
        "cluster with the settings a user runs (its defaults: `fsync` on, "
        "`synchronous_commit` on) on a Unix socket, its data on the same disk as the data "
        "dirs. **Nothing is pinned**: on this 2-core machine the servers, PostgreSQL, HAProxy "
        "and wrk share both cores, so read the ratios and the CPU each process used, not the "
        "absolute rates. Run it alone with `bash benchmarks/run.sh --scenarios scale` "
        f"(about {7 if plan == FULL else 2} minutes; `--quick`: pgbench at "
        f"{', '.join(map(str, QUICK.scale_clients))} clients only, one round).",
        "",
    ]


def section(
    results: Results,
    plan: Plan,
    separate: dict[str, Any] | None = None,
) -> list[str]:
    """The section's lines (nothing without results); `separate` (command, minutes, commit,
    loads, problems) says it comes from a run of its own, merged into the page."""
    if not has_results(results):
        return []
    scale = results["scale"]
    lines = [HEADING, ""]
    if separate is not None:
        problems = separate["problems"]
        lines += [
            "This section comes from a separate run of the scale group: "
            f"`{separate['command']}`, {separate['minutes']:.1f} minutes, this server at "
            f"commit {separate['commit']}, load average before / after "
            f"{separate['load_before']} / {separate['load_after']}; the rest of this page is "
            "the run above. Problems seen in it: "
            + ("; ".join(problems) if problems else "none (every request answered 2xx).")
            + "",
            "",
        ]
    lines += intro(plan)[2:]
    fsync = scale.get("fdatasync_us")
    disk = f"; an fdatasync of 8 kB on its disk takes {fsync:g} µs" if fsync else ""
    lines += [
        f"PostgreSQL: {scale.get('postgres', '?')}{disk} (pg_test_fsync).",
        "",
        appends_table(results),
        "",
        sse_table(results),
        "",
        "Commits/s of our transaction shape alone (the database's ceiling for appends, each "
        "append one transaction; in brackets the cores PostgreSQL used):",
        "",
        commits_table(results),
        "",
        *measured(plan),
        "",
    ]
    return lines


def measured(plan: Plan) -> list[str]:
    return [
        f"- **Appends**: wrk, one thread, {plan.duration:g} s after a {plan.warmup:g} s "
        "warm-up, `POST` of 100 B `application/octet-stream` bodies; req/s and wrk's "
        f"p50 / p99. {plan.append_rounds} round(s), the setups taking turns (in reverse order "
        "every other round); each row is the round with the median rate. **CPU** is "
        "utime + stime from `/proc/<pid>/stat` over the measurement, of each server process "
        "(a hypercorn worker apart from its master), of PostgreSQL's postmaster and all its "
        "backends, of HAProxy, and of wrk (`RUSAGE_CHILDREN`), divided by its length: 1.00 "
        "is one core busy. **Commits**: `pg_stat_database.xact_commit` of the setup's database "
        "from before its servers started until they had stopped (a busy backend reports its "
        "commits at most once a second, an idle one 10 s later or as it exits), per append "
        "made meanwhile (warm-up and measurement; the creates and start-up count too, a "
        "few dozen), times the measured rate. It counts every transaction, read-only ones "
        "too: the append's own, and the one each listening process's backend runs to read "
        "a notification from the queue, and the refreshes a notification causes in other "
        "processes.",
        f"- **SSE across processes**: two `streams serve` processes on one database; "
        f"{plan.scale_sse_readers} SSE readers of one stream on process B, and a writer that "
        f"POSTs 100 B carrying a round marker, {plan.scale_sse_rounds} rounds after 2 warm-up "
        "rounds, first on process A (the reader learns of it through `LISTEN`/`NOTIFY` and "
        "reads the records from the database), then on B itself; timed as the fan-out rows "
        "above (just before the POST is written to the first bytes carrying the marker).",
        "- **Commits/s of our transaction shape**: pgbench (`-M prepared`, two threads) for "
        f"{plan.duration:g} s at each client count, on a database with the server's schema "
        f"and {plan.scale_streams} stream rows, each transaction the one an append commits "
        "in (`actors/storage/pg_log.py`): `BEGIN`; the stream's row `SELECT ... FOR "
        "UPDATE`; one statement that does the `UPDATE` of its tail and last access, the "
        "`INSERT` of one 100 B record and `pg_notify('ds_tail', ...)`; `COMMIT`, on a "
        "random stream of the "
        f"{plan.scale_streams}. Beside it, without the `pg_notify`, and with it moved to a "
        "transaction of its own after the commit that does not wait for its flush.",
    ]


def merge(page: str, lines: list[str]) -> str:
    """`page` with its scale section replaced by `lines` (or, if it has none, `lines`
    inserted before `## Problems seen in this run`, or at the end)."""
    text = "\n".join(lines).rstrip("\n") + "\n\n"
    at = page.find(HEADING + "\n")
    if at >= 0:
        end = page.find("\n## ", at + len(HEADING))
        return page[:at] + text + (page[end + 1 :] if end >= 0 else "")
    at = page.find(BEFORE + "\n")
    if at >= 0:
        return page[:at] + text + page[at:]
    return page.rstrip("\n") + "\n\n" + text
