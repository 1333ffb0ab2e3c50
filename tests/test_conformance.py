"""The official conformance suite, run against the real server in each storage mode, started
as the README starts it (`streams serve`); and in postgres mode across processes (issue 16):
two `streams serve` processes on one database behind HAProxy, round-robin per request, and
the README's hypercorn command with `--workers 2`."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import vitest
from tests.haproxy import running_haproxy
from tests.server import free_port, running_server

SUITE = Path(__file__).parent / "conformance"
FAST_LONG_POLL = {"DS_SERVER__LONG_POLL_TIMEOUT_SECS": "2"}  # the suite's tests time out at 5 s

ACROSS_PROCESSES = ("postgres-haproxy", "postgres-workers")
README_HYPERCORN = ("--config", "python:streams.hypercorn_config")  # the README's command

pytestmark = vitest.installed(SUITE)


@contextlib.contextmanager
def serving(mode: str, tmp_path: Path, env: dict[str, str]) -> Iterator[str]:
    """The server(s) of `mode`, as the base URL the suite talks to."""
    if mode == "postgres-haproxy":  # two processes, each request to the other one
        ports = [free_port(), free_port()]
        with contextlib.ExitStack() as stack:
            for index, port in enumerate(ports):
                (tmp_path / f"s{index}").mkdir()  # its log, and its data directory
                stack.enter_context(
                    running_server(tmp_path / f"s{index}" / "data", env, port, serve=True)
                )
            yield stack.enter_context(running_haproxy(ports))
    elif mode == "postgres-workers":  # hypercorn's two worker processes on one socket
        options = (*README_HYPERCORN, "--workers", "2")
        with running_server(tmp_path / "data", env, options=options) as base_url:
            yield base_url
    else:
        with running_server(tmp_path / "data", env, serve=True) as base_url:
            yield base_url


@pytest.mark.parametrize("mode", ["file-durable", "memory", "postgres", *ACROSS_PROCESSES])
def test_conformance_suite(mode: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    report = tmp_path / "report.json"
    storage_mode = "postgres" if mode in ACROSS_PROCESSES else mode
    env = {"DS_STORAGE__MODE": storage_mode, **FAST_LONG_POLL}
    suite_env = {"CONFORMANCE_SUBSCRIPTIONS": "1"}  # its subscription tests too (issue 15)
    if storage_mode == "postgres":  # on a new database of the session's server
        env["DS_STORAGE__POSTGRES_URL"] = request.getfixturevalue("postgres_url")
    with serving(mode, tmp_path, env) as base_url:
        ran = vitest.run(SUITE, {"CONFORMANCE_TEST_URL": base_url, **suite_env}, report, 600)
    results = ran.results
    print(
        f"{mode}: {results['numPassedTests']} passed, {results['numFailedTests']} failed, "
        f"{results['numPendingTests']} skipped"
    )
    assert ran.failures == []
    ran_tests = results["numTotalTests"] - results["numPendingTests"]
    assert results["numPassedTests"] == ran_tests
    assert ran_tests >= 338
