"""A real load balancer in front of several server processes: Debian's HAProxy (tests/run.sh
installs it) in HTTP mode, round-robin per request, so successive requests, even on one
keep-alive connection, go to alternating processes. Each response says which process
answered in `X-Backend` (`s0`, `s1`, ...).

Without the binary the tests that need it skip, except in CI (`CI` set), where they fail.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from tests.server import free_port, stop

# Long enough for any long-poll or SSE read the tests hold open through it.
TIMEOUTS = ("connect 5s", "client 300s", "server 300s", "tunnel 300s", "http-request 30s")


def config(port: int, backends: Sequence[int]) -> str:
    servers = "".join(
        f"    server s{index} 127.0.0.1:{backend}\n" for index, backend in enumerate(backends)
    )
    timeouts = "".join(f"    timeout {timeout}\n" for timeout in TIMEOUTS)
    return (
        "global\n    maxconn 4096\n"
        f"defaults\n    mode http\n{timeouts}"
        f"frontend streams\n    bind 127.0.0.1:{port}\n    default_backend servers\n"
        "backend servers\n    balance roundrobin\n"
        "    http-response set-header X-Backend %s\n"
        f"{servers}"
    )


@contextlib.contextmanager
def running_haproxy(backends: Sequence[int], port: int | None = None) -> Iterator[str]:
    """Yields the balancer's base URL once it answers; stops it on exit. The backends need
    not be up yet: a request to one that is down gets 503 from HAProxy."""
    binary = shutil.which("haproxy", path=f"{os.environ.get('PATH', '')}:/usr/sbin")
    if binary is None:
        missing = "HAProxy is not installed (apt-get install haproxy)"
        if os.environ.get("CI"):
            pytest.fail(f"{missing}; CI must run the load-balancer tests (tests/run.sh does)")
        pytest.skip(missing)
    port = port or free_port()
    with tempfile.TemporaryDirectory(prefix="ds-haproxy-") as directory:
        path = Path(directory) / "haproxy.cfg"
        path.write_text(config(port, backends))
        log = Path(directory) / "log"
        with open(log, "wb") as output:
            process = subprocess.Popen(
                [binary, "-db", "-f", str(path)], stdout=output, stderr=output
            )
        base_url = f"http://127.0.0.1:{port}"
        try:
            _wait_listening(base_url, process, log)
            yield base_url
        finally:
            stop(process)


def _wait_listening(base_url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"haproxy exited: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{base_url}/readyz", timeout=1):
                return
        except urllib.error.HTTPError:
            return  # it answers (a backend may be down: 503)
        except OSError:
            pass
        time.sleep(0.05)  # polling a subprocess's port; no Trio clock to drive here
    raise RuntimeError(f"haproxy not listening: {log.read_text()[-2000:]}")
