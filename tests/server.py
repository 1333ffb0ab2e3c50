"""Runs the real server under hypercorn in a subprocess, on a free loopback port."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path


def hypercorn_command(port: int, *options: str) -> list[str]:
    """The README's server command, on a loopback port."""
    return [
        sys.executable, "-m", "hypercorn", "streams.app:app",
        "--worker-class", "trio", "--workers", "0", "--bind", f"127.0.0.1:{port}", *options,
    ]  # fmt: skip


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def running_server(
    data_dir: Path,
    env: Mapping[str, str] = {},
    port: int | None = None,
    wrapper: Sequence[str] = (),
    ready: str = "/readyz",
) -> Iterator[str]:
    """Yields the base URL once `ready` (/readyz) answers 200; stops the server on exit.
    `wrapper` is a command the server runs under (e.g. `setpriv` with fewer capabilities)."""
    port = port or free_port()
    environment = {
        **os.environ,
        "DS_STORAGE__DATA_DIR": str(data_dir),
        **env,
    }
    log_path = data_dir.parent / f"server-{port}.log"
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            [*wrapper, *hypercorn_command(port)],
            env=environment,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        base_url = f"http://127.0.0.1:{port}"
        try:
            wait_ready(base_url, process, log_path, ready)
            yield base_url
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def wait_ready(
    base_url: str, process: subprocess.Popen[bytes], log_path: Path, ready: str = "/readyz"
) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited: {log_path.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{base_url}{ready}", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.05)  # polling a subprocess's port; no Trio clock to drive here
    raise RuntimeError(f"server not ready: {log_path.read_text()[-2000:]}")
