"""Runs a pinned npm vitest suite (the conformance suite, the StreamDB interop) against a
server, and reads its JSON report."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import attrs
import pytest

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def installed(suite: Path) -> pytest.MarkDecorator:
    """Skip unless `npm ci` ran in `suite` (tests/run.sh does)."""
    return pytest.mark.skipif(
        not (suite / "node_modules").exists() or shutil.which("npx") is None,
        reason=f"{suite.name} not installed: run `npm ci` in tests/{suite.name}",
    )


@attrs.frozen
class Run:
    results: dict[str, Any]
    output: str  # the end of what vitest printed

    @property
    def failures(self) -> list[str]:
        """'suite > test :: first line of its failure' for each test that did not pass."""
        return [
            " > ".join([*test["ancestorTitles"], test["title"]])
            + " :: "
            + " | ".join(ANSI.sub("", m).splitlines()[0] for m in test["failureMessages"] if m)
            for file in self.results["testResults"]
            for test in file["assertionResults"]
            if test["status"] not in ("passed", "pending", "skipped", "todo")
        ]


def run(suite: Path, env: dict[str, str], report: Path, timeout: float) -> Run:
    completed = subprocess.run(
        [
            "npx",
            "vitest",
            "run",
            "--reporter=default",
            "--reporter=json",
            f"--outputFile.json={report}",
        ],
        cwd=suite,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    output = completed.stdout[-6000:] + completed.stderr[-4000:]
    assert report.exists(), output
    return Run(json.loads(report.read_text()), output)
