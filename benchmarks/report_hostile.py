"""The `Hostile clients (issue 9)` section of docs/benchmarks.md: its table, the issue's goals
and how each number is measured. Our server only: the others have no such limits."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from benchmarks.scenarios import Plan

Results = dict[str, dict[str, Any]]
COLUMNS = (("trio-durable", "trio file-durable"), ("trio-memory", "trio memory"))
KEYS = ("json-flood", "stalled-sse", "reopen")
GOAL_MS = 100.0  # /healthz p99 during the flood (and, by the "not block the loop", reopen)
GOAL_ABOVE_IDLE = 50e6  # RSS with the stalled readers, above idle


def _mb(value: float) -> str:
    return f"{value / 1e6:,.0f}"


def _ms(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "—"
    return f"{value:.2f}" if value < 10 else f"{value:.1f}" if value < 100 else f"{value:,.0f}"


def count(value: int) -> str:
    """1M, 200k, 1.5M."""
    return f"{value / 1e6:g}M" if value >= 1_000_000 else f"{value / 1000:g}k"


def _probes(entry: dict[str, Any]) -> str:
    h = entry["healthz"]
    flag = " ⚠" if entry.get("bad") else ""
    return f"{_ms(h['p50_ms'])} / {_ms(h['p99_ms'])} / {_ms(h['max_ms'])} ({h['count']:,}){flag}"


def _rss(entry: dict[str, Any]) -> str:
    since = "" if entry.get("peak_since") == "scenario" else " (peak since start)"
    return f"{_mb(entry['rss_before'])} → {_mb(entry['rss_peak'])}{since}"


def _readers(entry: dict[str, Any]) -> str:
    grown = entry["rss_readers"] - entry["rss_idle"]
    note = "" if entry["settled"] else f", still growing after {entry['settle_seconds']:.0f} s"
    if entry["rss_readers"] > entry.get("rss_cap", math.inf):
        note = f", over the {_mb(entry['rss_cap'])} MB cap after {entry['settle_seconds']:.0f} s"
    return f"{_mb(entry['rss_idle'])} → {_mb(entry['rss_readers'])} (+{_mb(grown)}){note}"


def _answered(entry: dict[str, Any]) -> str:
    return (
        f"{entry['answered']} of {entry['readers']}; {_mb(entry['queued_bytes'])} MB; "
        f"{_ms(entry['healthz_ms'])} ms"
    )


Row = tuple[str, str, Callable[[dict[str, Any]], str]]


def _rows(plan: Plan) -> list[Row]:
    flood = f"{count(plan.flood_messages)} messages ({2 * plan.flood_messages / 1e6:.0f} MB)"
    readers = f"{plan.stalled_readers} SSE readers that never read, one {plan.stalled_record_mib}"
    return [
        (
            f"`/healthz` during one JSON POST of {flood}: p50 / p99 / max ms (probes)",
            "json-flood",
            _probes,
        ),
        (
            f"↳ p99 as a probe every {plan.probe_interval * 1000:g} ms would see it, ms",
            "json-flood",
            lambda e: _ms(e["healthz"]["fixed_rate_p99_ms"]),
        ),
        (
            "↳ the POST: status in seconds",
            "json-flood",
            lambda e: f"{e['post_status']} in {e['post_seconds']:.1f} s",
        ),
        ("↳ RSS before → peak, MB", "json-flood", _rss),
        (
            f"RSS with {readers} MiB record: idle → with readers (+ above idle), MB",
            "stalled-sse",
            _readers,
        ),
        (
            "↳ readers that got bytes; bytes unread in their sockets; one `/healthz` then",
            "stalled-sse",
            _answered,
        ),
        (
            "↳ RSS peak (until 2 s after the readers closed); then, MB",
            "stalled-sse",
            lambda e: f"{_mb(e['rss_peak'])}; {_mb(e['rss_after_close'])}",
        ),
        (
            f"Reopen a log of {count(plan.reopen_records)} one-byte records: "
            "first request (HEAD) s, log MB (once resident: ms)",
            "reopen",
            lambda e: (
                f"{e['head_seconds']:.2f} s, {_mb(e['log_bytes'])} MB "
                f"({_ms(e['warm_head_ms'])} ms)" + (" ⚠" if e.get("missed") else "")
            ),
        ),
        (
            "↳ the same log reopened from its checkpoint, after the actor stopped idle: ms",
            "reopen",
            lambda e: _ms(e["checkpoint_head_ms"]) if "checkpoint_head_ms" in e else "—",
        ),
        ("↳ `/healthz` during the reopen: p50 / p99 / max ms (probes)", "reopen", _probes),
        (
            f"↳ p99 as a probe every {plan.probe_interval * 1000:g} ms would see it, ms",
            "reopen",
            lambda e: _ms(e["healthz"]["fixed_rate_p99_ms"]),
        ),
        ("↳ RSS before → peak, MB", "reopen", _rss),
    ]


def _entry(results: Results, server: str, key: str) -> dict[str, Any] | None:
    value = results.get(server, {}).get(key)
    return value if isinstance(value, dict) else None


def has_results(results: Results) -> bool:
    return any(_entry(results, server, key) for server, _ in COLUMNS for key in KEYS)


def table(results: Results, plan: Plan) -> str:
    lines = [
        "| Scenario | " + " | ".join(label for _, label in COLUMNS) + " |",
        "|---|" + "---|" * len(COLUMNS),
    ]
    for label, key, cell in _rows(plan):
        entries = [_entry(results, server, key) for server, _ in COLUMNS]
        if any(entries):
            cells = [cell(e) if e is not None else "—" for e in entries]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def goals(results: Results) -> str:
    """The goals of issue 9, for each of our servers measured."""

    def check(ok: bool) -> str:
        return "met" if ok else "**not met**"

    lines = ["| Goal (issue 9) | Server | Measured | Status |", "|---|---|---|---|"]
    for server, label in COLUMNS:
        entry = _entry(results, server, "json-flood")
        if entry is not None:
            p99 = entry["healthz"]["fixed_rate_p99_ms"]
            lines.append(
                f"| `/healthz` p99 < {GOAL_MS:g} ms during the 16 MB JSON POST | {label} | "
                f"{_ms(p99)} ms | {check(p99 < GOAL_MS)} |"
            )
        entry = _entry(results, server, "stalled-sse")
        if entry is not None:
            above = entry["rss_readers"] - entry["rss_idle"]
            lines.append(
                f"| RSS with {entry['readers']} stalled SSE readers < {_mb(GOAL_ABOVE_IDLE)} MB "
                f"above idle | {label} | +{_mb(above)} MB | {check(above < GOAL_ABOVE_IDLE)} |"
            )
        entry = _entry(results, server, "reopen")
        if entry is not None:
            p99 = entry["healthz"]["fixed_rate_p99_ms"]
            lines.append(
                f"| Reopen does not block the loop: `/healthz` p99 < {GOAL_MS:g} ms | {label} | "
                f"{_ms(p99)} ms | {check(p99 < GOAL_MS)} |"
            )
    return "\n".join(lines)


def section(results: Results, plan: Plan) -> list[str]:
    """The section's lines: intro, table, goals."""
    if not has_results(results):
        return []
    return [
        "## Hostile clients (issue 9)",
        "",
        "Our server only (the Node server and the raw ASGI app have no such limits), each "
        "scenario on a freshly started server so that the RSS is its own. RSS is VmRSS of the "
        "process tree in MB (10^6 B); the peak is VmHWM, reset (`/proc/<pid>/clear_refs`) "
        "just before the measured request. ⚠ marks a cell whose run saw errors.",
        "",
        table(results, plan),
        "",
        goals(results),
        "",
    ]


def measured(plan: Plan) -> list[str]:
    """Bullets for `How each number is measured`."""
    probe = (
        f"`/healthz` is probed on its own keep-alive connection, one GET at a time, "
        f"{plan.probe_interval * 1000:g} ms apart, from the start of the measured request "
        f"until {plan.probe_tail:g} s after its answer (a probe in flight then is waited for). "
        "One probe stuck for 10 s is one sample, so the goal is checked against the p99 a "
        f"checker probing every {plan.probe_interval * 1000:g} ms would have seen: each "
        "sample L also counts L - interval, L - 2 interval, ... (coordinated omission "
        "corrected as HdrHistogram does)."
    )
    return [
        f"- **Hostile: JSON flood**: one `POST` of `[1,1,...,1]` ({plan.flood_messages:,} "
        "messages, 2 B each) to an empty `application/json` stream on one connection; "
        "its status and time from the first byte sent to the answer. " + probe,
        f"- **Hostile: stalled SSE readers**: a stream holding one {plan.stalled_record_mib} MiB "
        f"`application/octet-stream` record; RSS at rest once two samples 1 s apart differ by "
        f"< 1 MB (at most {plan.settle_bound:g} s); then {plan.stalled_readers} raw sockets "
        "each send `GET ?offset=-1&live=sse` and never read; RSS the same way (if it has not "
        "settled by then, the last sample, marked still growing; sampling also stops once RSS "
        f"passes {plan.rss_cap / 1e6:,.0f} MB, as this VM has no swap). Then: how many sockets "
        "hold answer bytes and how many bytes wait in them (FIONREAD: kernel memory, not in "
        "the server's RSS), one `/healthz`; the sockets close, and RSS 2 s later.",
        f"- **Hostile: reopen**: before the server starts, its data dir gets one stream of "
        f"{plan.reopen_records:,} one-byte appends, made in-process through the registry "
        "and actor (file-fast, group commits), so the log is what the server itself writes. "
        "The server starts (nothing reads the log yet); the first `HEAD` of the stream makes "
        "its actor open the log and rebuild its state: that request's time, `/healthz` "
        "meanwhile (as above), RSS before and at peak. A second `HEAD` (actor resident) and "
        "a read at the tail check that every record came back; a third, 12 s later (the "
        "actor stopped idle and wrote its checkpoint), times the reopen from the checkpoint.",
    ]
