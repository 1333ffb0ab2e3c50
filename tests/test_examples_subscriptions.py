"""examples/subscription_worker.py against the real server, in both storage modes: it ends on
its own, having processed every order its producer appended exactly once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.server import running_server

EXAMPLE = Path(__file__).parent.parent / "examples" / "subscription_worker.py"


@pytest.mark.parametrize("mode", ["file-durable", "memory"])
def test_the_pull_wake_worker_processes_every_order_once(tmp_path: Path, mode: str) -> None:
    with running_server(tmp_path / "data", {"DS_STORAGE__MODE": mode}) as base_url:
        result = subprocess.run(
            [sys.executable, str(EXAMPLE), base_url],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert "processed 60 orders from 3 streams" in lines
    assert "every order processed exactly once" in lines
    assert any(line.startswith("wake ") for line in lines)
