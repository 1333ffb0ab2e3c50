"""SIGTERM with browsers connected: idle keep-alive connections and SSE readers that reconnect
at once when their response ends. The process drains and exits long before hypercorn's
graceful timeout (90% of the grace), which used to hold it whenever a reconnect arrived as
its connection was closing (streams.serve.close_paused_connections)."""

from __future__ import annotations

import concurrent.futures
import shutil
import signal
import socket
from pathlib import Path

import httpx
import pytest

from tests.server import running_process

CONNECTIONS = 16  # of each kind
GRACE = 60  # seconds; hypercorn's graceful timeout is 54 s of it
BOUND = 20  # seconds: the process is gone well before that timeout
TEXT = {"Content-Type": "text/plain"}


def sse_request(port: int) -> bytes:
    target = "/v1/stream/s?offset=-1&live=sse"
    return f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()


def receive_until(sock: socket.socket, received: bytes, end: bytes) -> bytes:
    """What the server sent up to `end`, or up to its closing the connection."""
    while end not in received:
        chunk = sock.recv(65536)
        if not chunk:
            break
        received += chunk
    return received


def open_idle(port: int) -> socket.socket:
    """A keep-alive connection that has had one request answered, left open."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    sock.sendall(f"GET /v1/stream/s?offset=-1 HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
    head = receive_until(sock, b"", b"\r\n\r\nx")  # headers, and the body: x
    assert head.startswith(b"HTTP/1.1 200") and head.endswith(b"\r\n\r\nx"), head
    return sock


def reconnecting_reader(port: int, parked: concurrent.futures.Future[None]) -> list[bytes]:
    """An SSE reader that, as a browser's, asks again when its response ends: on the same
    connection while it stays open, then on a new one. Its first reconnect is sent early,
    before the end, so it is surely there as the server finishes the response (a browser's
    only sometimes is). The old code hung in about 4 runs of 5 this way.
    Returns the status lines of the answers after the first (b"" where the server closed,
    b"refused" where nothing listens)."""
    answers: list[bytes] = []
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    try:
        sock.sendall(sse_request(port))
        first = receive_until(sock, b"", b"\n\n")  # headers and the first event: it is live
        assert first.startswith(b"HTTP/1.1 200"), first
        sock.sendall(sse_request(port))  # the reconnect, early
        parked.set_result(None)
        receive_until(sock, first, b"\r\n0\r\n\r\n")  # the end of the chunked response
        for attempt in range(10):  # bounded: each answer is a refusal or a close
            try:
                if attempt:
                    sock.sendall(sse_request(port))
                answer = receive_until(sock, b"", b"\r\n\r\n")
            except OSError:
                answer = b""
            answers.append(answer.split(b"\r\n")[0])
            if answer == b"" or b"connection: close" in answer.lower():
                sock.close()
                try:
                    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
                except ConnectionRefusedError:
                    answers.append(b"refused")
                    return answers
        return answers
    finally:
        sock.close()


@pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss (iproute2)")
def test_sigterm_with_idle_and_reconnecting_clients_exits_once_drained(tmp_path: Path) -> None:
    env = {
        "DS_SERVER__SHUTDOWN_GRACE_SECS": str(GRACE),
        "DS_SERVER__SSE_RECONNECT_INTERVAL_SECS": "600",
    }
    with (
        running_process(tmp_path / "data", env, serve=True) as (base, process),
        concurrent.futures.ThreadPoolExecutor(CONNECTIONS) as pool,
    ):
        port = int(base.rsplit(":", 1)[1])
        assert httpx.put(f"{base}/v1/stream/s", headers=TEXT).status_code == 201
        assert httpx.post(f"{base}/v1/stream/s", content=b"x", headers=TEXT).is_success
        idle = [open_idle(port) for _ in range(CONNECTIONS)]
        parked = [concurrent.futures.Future[None]() for _ in range(CONNECTIONS)]
        readers = [pool.submit(reconnecting_reader, port, ready) for ready in parked]
        for ready in parked:
            ready.result(timeout=60)

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=BOUND) == 0  # drained: not held to the graceful timeout
        for sock in idle:
            assert sock.recv(65536) == b""  # closed, not answered
            sock.close()
        for reader in readers:
            answers = reader.result(timeout=BOUND)
            assert answers and answers[-1] in (b"", b"refused"), answers
            assert all(a in (b"", b"refused") or a.startswith(b"HTTP/1.1 503") for a in answers)
    log = (tmp_path / f"server-{port}.log").read_text()
    assert "shutdown cut short" not in log
