"""examples/state_todos.py against the real server: it ends on its own, and its two writers
and its late joiner (one `?state=snapshot&live=sse` request) end with the same rows, which
are the server's snapshot and the fold of the whole stream."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from state.view import View
from tests.server import running_server

EXAMPLE = Path(__file__).parent.parent / "examples" / "state_todos.py"


def rows_of(messages: list[Any]) -> list[list[Any]]:
    """The rows a fold of `messages` ends with, as the example prints them."""
    view = View(max_entities=1000, max_bytes=1 << 20)
    for message in messages:
        view.apply(message, 0)
    return sorted([t, k, e.value()] for (t, k), e in view.entities.items())


def test_the_state_example_ends_with_three_clients_that_agree(tmp_path: Path) -> None:
    with running_server(tmp_path / "data") as base_url:
        result = subprocess.run(
            [sys.executable, str(EXAMPLE), base_url],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        lines = result.stdout.splitlines()
        url = next(line.split()[1] for line in lines if line.startswith("created "))
        rows = {
            name: json.loads(text)
            for _, name, text in (line.split(" ", 2) for line in lines if line.startswith("rows "))
        }
        live = next(line for line in lines if line.startswith("carol received "))
        with httpx.Client(timeout=30) as client:
            snapshot = client.get(url, params={"state": "snapshot"}).json()
            history = client.get(url, params={"offset": "-1"}).json()
    assert rows.keys() == {"alice", "bob", "carol"}
    assert rows["alice"] == rows["bob"] == rows["carol"] == rows_of(history) != []
    assert rows["carol"] == rows_of(snapshot)
    assert int(live.split()[2]) > 0  # changes made after carol joined reached her live
    assert "alice, bob and carol agree" in lines
