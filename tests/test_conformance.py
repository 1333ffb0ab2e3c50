"""The official conformance suite, run against the real server in each storage mode, started
as the README starts it (`streams serve`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import vitest
from tests.server import running_server

SUITE = Path(__file__).parent / "conformance"
FAST_LONG_POLL = {"DS_SERVER__LONG_POLL_TIMEOUT_SECS": "2"}  # the suite's tests time out at 5 s

pytestmark = vitest.installed(SUITE)


@pytest.mark.parametrize("mode", ["file-durable", "memory", "postgres"])
def test_conformance_suite(mode: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    report = tmp_path / "report.json"
    env = {"DS_STORAGE__MODE": mode, **FAST_LONG_POLL}
    suite_env = {"CONFORMANCE_SUBSCRIPTIONS": "1"}  # its subscription tests too (issue 15)
    if mode == "postgres":  # one server process on a new database of the session's server
        env["DS_STORAGE__POSTGRES_URL"] = request.getfixturevalue("postgres_url")
    with running_server(tmp_path / "data", env, serve=True) as base_url:
        ran = vitest.run(SUITE, {"CONFORMANCE_TEST_URL": base_url, **suite_env}, report, 600)
    results = ran.results
    print(
        f"{mode}: {results['numPassedTests']} passed, {results['numFailedTests']} failed, "
        f"{results['numPendingTests']} skipped"
    )
    assert ran.failures == []
    assert results["numPassedTests"] == results["numTotalTests"] - results["numPendingTests"]
    assert results["numPassedTests"] >= 338
