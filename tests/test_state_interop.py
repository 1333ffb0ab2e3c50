"""The official StreamDB (`@durable-streams/state` 0.3.1 on `@tanstack/db`, pinned in
tests/state_interop/package-lock.json) against the real server: a StreamDB loaded through
`?state=snapshot` and one replaying the whole stream end in the same rows, before and after
live appends and across compactions (tests/state_interop/state.test.mjs)."""

from __future__ import annotations

from pathlib import Path

from tests import vitest
from tests.server import running_server

SUITE = Path(__file__).parent / "state_interop"
TESTS = 8  # state.test.mjs: four scenarios, each with live=long-poll and live=sse

pytestmark = vitest.installed(SUITE)


def test_streamdb_interop(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    env = {"DS_STORAGE__MODE": "file-durable", "DS_SERVER__LONG_POLL_TIMEOUT_SECS": "2"}
    with running_server(tmp_path / "data", env) as base_url:
        urls = {"STATE_INTEROP_URL": base_url, "NO_COLOR": "1"}
        ran = vitest.run(SUITE, urls, report, timeout=120)
    assert ran.failures == [], "\n".join(ran.failures) + "\n" + ran.output
    results = ran.results
    assert results["numPassedTests"] == results["numTotalTests"] == TESTS, ran.output
