"""The hostile-client benchmark's arithmetic and report (no server, no timing asserted)."""

from __future__ import annotations

import math
from typing import Any

from benchmarks import report_hostile
from benchmarks.hostile import latency_summary
from benchmarks.scenarios import QUICK


def test_one_stalled_probe_counts_as_the_probes_it_kept_from_being_sent() -> None:
    # 99 probes of 1 ms and one of 1 s, 10 ms apart: one at a time, p99 is 1 ms; a checker
    # probing every 10 ms would have seen 99 more probes waiting 10 ms .. 990 ms.
    summary = latency_summary([0.001] * 99 + [1.0], interval=0.01)
    assert summary["count"] == 100
    assert summary["p50_ms"] == 1.0
    assert summary["p99_ms"] == 1.0
    assert summary["max_ms"] == 1000.0
    assert summary["fixed_rate_count"] == 199
    assert 900 < summary["fixed_rate_p99_ms"] < 1000


def test_no_probes_give_no_numbers() -> None:
    summary = latency_summary([], interval=0.01)
    assert summary["count"] == 0
    assert math.isnan(summary["p99_ms"]) and math.isnan(summary["fixed_rate_p99_ms"])


def _probes(p99_ms: float) -> dict[str, Any]:
    return {
        "count": 50,
        "p50_ms": 1.0,
        "p99_ms": p99_ms,
        "max_ms": p99_ms,
        "fixed_rate_p99_ms": p99_ms,
        "fixed_rate_count": 60,
        "statuses": {"200": 50},
        "bad": 0,
    }


RESULTS: dict[str, dict[str, Any]] = {
    "trio-durable": {
        "json-flood": {
            "post_status": 204,
            "post_seconds": 11.7,
            "healthz": _probes(11_540.0),
            "rss_before": 48e6,
            "rss_peak": 1_197e6,
            "peak_since": "scenario",
        },
        "stalled-sse": {
            "readers": 200,
            "rss_idle": 57e6,
            "rss_readers": 80e6,
            "settled": True,
            "settle_seconds": 3.0,
            "rss_cap": 6e9,
            "answered": 200,
            "queued_bytes": 25e6,
            "healthz_ms": 2.0,
            "rss_peak": 90e6,
            "rss_after_close": 60e6,
        },
        "reopen": {
            "head_seconds": 1.69,
            "log_bytes": 7.6e6,
            "warm_head_ms": 1.0,
            "missed": 0,
            "healthz": _probes(40.0),
            "rss_before": 48e6,
            "rss_peak": 143e6,
            "peak_since": "start",
        },
    },
}


def test_report_shows_each_scenario_and_checks_each_goal() -> None:
    table = report_hostile.table(RESULTS, QUICK)
    assert "| 1.00 / 11,540 / 11,540 (50) | — |" in table
    assert "57 → 80 (+23) | — |" in table
    assert "1.69 s, 8 MB (1.00 ms) | — |" in table
    assert "48 → 143 (peak since start)" in table
    goals = report_hostile.goals(RESULTS)
    assert "| trio file-durable | 11,540 ms | **not met** |" in goals
    assert "| trio file-durable | +23 MB | met |" in goals
    assert "| trio file-durable | 40.0 ms | met |" in goals
    assert "trio memory" not in goals
    assert report_hostile.section({}, QUICK) == []
