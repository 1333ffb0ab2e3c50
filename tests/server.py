"""Runs the real server in a subprocess, on a free loopback port: under hypercorn's command,
or as `streams serve` (the README's first command)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import ssl
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


def serve_command(*options: str) -> list[str]:
    """`streams serve` (bound from DS_SERVER__HOST and DS_SERVER__PORT)."""
    return [sys.executable, "-m", "streams", "serve", *options]


def serve_env(port: int) -> dict[str, str]:
    return {"DS_SERVER__HOST": "127.0.0.1", "DS_SERVER__PORT": str(port)}


def listen_backlog(port: int) -> int:
    """The backlog of the socket listening on a loopback `port`: `ss` shows it as a listening
    socket's Send-Q (the kernel caps it at net.core.somaxconn)."""
    assert shutil.which("ss"), "needs ss (iproute2: apt-get install iproute2)"
    listening = subprocess.run(
        ["ss", "-ltnH", f"( sport = :{port} )"], capture_output=True, text=True, check=True
    ).stdout.split()
    return int(listening[2])  # State, Recv-Q, Send-Q, ...


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
    serve: bool = False,
    ready: str = "/readyz",
    options: Sequence[str] = (),
) -> Iterator[str]:
    """Yields the base URL once `ready` (/readyz) answers 200; stops the server on exit.
    `wrapper` is a command the server runs under (e.g. `setpriv` with fewer capabilities);
    `serve` runs `streams serve` instead of hypercorn's command; `options` go to either."""
    with running_process(data_dir, env, port, wrapper, serve, ready, options) as (base_url, _):
        yield base_url


@contextlib.contextmanager
def running_process(
    data_dir: Path,
    env: Mapping[str, str] = {},
    port: int | None = None,
    wrapper: Sequence[str] = (),
    serve: bool = False,
    ready: str = "/readyz",
    options: Sequence[str] = (),
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`running_server`, also yielding the server's process (to signal it, or wait for it)."""
    port = port or free_port()
    environment = {
        **os.environ,
        "DS_STORAGE__DATA_DIR": str(data_dir),
        **(serve_env(port) if serve else {}),
        **env,
    }
    command = serve_command(*options) if serve else hypercorn_command(port, *options)
    log_path = data_dir.parent / f"server-{port}.log"
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            [*wrapper, *command],
            env=environment,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        base_url = f"http://127.0.0.1:{port}"
        try:
            wait_ready(base_url, process, log_path, ready=ready)
            yield base_url, process
        finally:
            stop(process)


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, and SIGKILL if it has not exited within 10 s."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def wait_ready(
    base_url: str,
    process: subprocess.Popen[bytes],
    log_path: Path,
    context: ssl.SSLContext | None = None,
    ready: str = "/readyz",
) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited: {log_path.read_text()[-2000:]}")
        try:
            url = f"{base_url}{ready}"
            with urllib.request.urlopen(url, timeout=1, context=context) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.05)  # polling a subprocess's port; no Trio clock to drive here
    raise RuntimeError(f"server not ready: {log_path.read_text()[-2000:]}")
