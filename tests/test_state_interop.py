"""The official StreamDB (`@durable-streams/state` 0.3.1 on `@tanstack/db`, pinned in
tests/state_interop/package-lock.json) against the real server: a StreamDB loaded through
`?state=snapshot` and one replaying the whole stream end in the same rows, before and after
live appends and across compactions (tests/state_interop/state.test.mjs)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.server import running_server

SUITE = Path(__file__).parent / "state_interop"
TESTS = 8  # state.test.mjs: four scenarios, each with live=long-poll and live=sse
ANSI = re.compile(r"\x1b\[[0-9;]*m")

pytestmark = pytest.mark.skipif(
    not (SUITE / "node_modules").exists() or shutil.which("npx") is None,
    reason="state interop suite not installed: run `npm ci` in tests/state_interop",
)


def test_streamdb_interop(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    env = {"DS_STORAGE__MODE": "file-durable", "DS_SERVER__LONG_POLL_TIMEOUT_SECS": "2"}
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
            env={**os.environ, "STATE_INTEROP_URL": base_url, "NO_COLOR": "1"},
            capture_output=True,
            text=True,
            timeout=120,
        )
    output = completed.stdout[-6000:] + completed.stderr[-4000:]
    assert report.exists(), output
    results = json.loads(report.read_text())
    failures = [
        " > ".join([*test["ancestorTitles"], test["title"]])
        + " :: "
        + " | ".join(ANSI.sub("", message).splitlines()[0] for message in test["failureMessages"])
        for file in results["testResults"]
        for test in file["assertionResults"]
        if test["status"] != "passed"
    ]
    assert failures == [], "\n".join(failures) + "\n" + output
    assert results["numPassedTests"] == results["numTotalTests"] == TESTS, output
