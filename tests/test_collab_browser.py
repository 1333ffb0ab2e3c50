"""The collab example (examples/collab/) in a real browser: Debian's Chromium, driven by
examples/collab/test/browser.mjs through puppeteer-core, against `streams serve` with the
example on, file-durable, which this test stops and starts again when the script asks
(see the script for the scenario). tests/run.sh installs Chromium and builds the page."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from tests.server import free_port, running_server

COLLAB = Path(__file__).parent.parent / "examples" / "collab"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOT = COLLAB / "screenshot.png"
COMMAND = ("--example", "collab")  # `streams serve --example collab`, the README's command
TIMEOUT = 300  # seconds for the whole script; it gives up on its own before that

pytestmark = pytest.mark.skipif(
    not (COLLAB / "node_modules").exists()
    or not (COLLAB / "dist" / "app.js").exists()
    or not Path(CHROMIUM).exists(),
    reason="needs Chromium and the built page (tests/run.sh installs and builds them)",
)


def test_two_windows_type_share_todos_join_late_and_survive_a_restart(tmp_path: Path) -> None:
    port = free_port()
    env = {
        "DS_STORAGE__MODE": "file-durable",
        "DS_YJS__COMPACTION_THRESHOLD_BYTES": "1024",  # a snapshot for the late joiner
    }
    # The screenshot in the README is written only when asked: each run's differs by a few
    # pixels, and a test should not leave the checkout changed.
    shot = SCREENSHOT if os.environ.get("COLLAB_UPDATE_SCREENSHOT") else tmp_path / "shot.png"
    stderr = tmp_path / "browser.log"
    with contextlib.ExitStack() as server, open(stderr, "wb") as log:
        base_url = server.enter_context(
            running_server(tmp_path / "data", env, port, serve=True, options=COMMAND)
        )
        script = subprocess.Popen(
            ["node", "test/browser.mjs"],
            cwd=COLLAB,
            env={
                **os.environ,
                "COLLAB_URL": base_url,
                "COLLAB_CHROMIUM": CHROMIUM,
                "COLLAB_SCREENSHOT": str(shot),
            },
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        watchdog = threading.Timer(TIMEOUT, script.kill)
        watchdog.start()
        summary: dict[str, object] = {}
        try:
            assert script.stdout is not None and script.stdin is not None
            for line in script.stdout:
                message = json.loads(line)
                if message.get("stop"):
                    server.close()  # SIGTERM, and wait for it to exit
                    script.stdin.write("stopped\n")
                elif message.get("start"):
                    server.enter_context(
                        running_server(tmp_path / "data", env, port, serve=True, options=COMMAND)
                    )
                    script.stdin.write("started\n")
                else:
                    summary = message
                script.stdin.flush()
            script.wait()
        finally:
            watchdog.cancel()
            script.kill()
    output = stderr.read_text()[-4000:]
    assert summary.get("done") is True, f"{summary.get('error')}\n{output}"
    assert script.returncode == 0, output
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    print(json.dumps(summary))
