"""The official conformance suite, run against the real server in each storage mode."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.server import running_server

SUITE = Path(__file__).parent / "conformance"
FAST_LONG_POLL = {"DS_SERVER__LONG_POLL_TIMEOUT_SECS": "2"}  # the suite's tests time out at 5 s

pytestmark = pytest.mark.skipif(
    not (SUITE / "node_modules").exists() or shutil.which("npx") is None,
    reason="conformance suite not installed: run `npm ci` in tests/conformance",
)


@pytest.mark.parametrize("mode", ["file-durable", "memory"])
def test_conformance_suite(mode: str, tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    env = {"DS_STORAGE__MODE": mode, **FAST_LONG_POLL}
    with running_server(tmp_path / "data", env) as base_url:
        completed = subprocess.run(
            [
                "npx",
                "vitest",
                "run",
                "--reporter=default",
                "--reporter=json",
                f"--outputFile.json={report}",
            ],
            cwd=SUITE,
            env={**os.environ, "CONFORMANCE_TEST_URL": base_url},
            capture_output=True,
            text=True,
            timeout=600,
        )
    assert report.exists(), completed.stdout[-4000:] + completed.stderr[-4000:]
    results = json.loads(report.read_text())
    failures = [
        " > ".join([*test["ancestorTitles"][1:], test["title"]])
        + " :: "
        + (test["failureMessages"] or [""])[0].splitlines()[0]
        for file in results["testResults"]
        for test in file["assertionResults"]
        if test["status"] == "failed"
    ]
    print(
        f"{mode}: {results['numPassedTests']} passed, {results['numFailedTests']} failed, "
        f"{results['numPendingTests']} skipped"
    )
    assert failures == []
    assert results["numPassedTests"] == results["numTotalTests"] - results["numPendingTests"]
    assert results["numPassedTests"] >= 332
