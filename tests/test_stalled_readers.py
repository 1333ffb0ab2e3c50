"""Clients that stop reading, against the real server (hypercorn writes inside a shielded
cancel scope, so only closing the socket frees such a send): the server resets the connection
after DS_SERVER__SEND_TIMEOUT_SECS, or for SSE at the reconnect interval, and stays healthy.

A reset arrives even though the client never reads, which a graceful close (a FIN queued behind
the unread data) would not; and hypercorn closes the socket only once the request's task has
ended, so the reset also shows that nothing was left hanging.
"""

from __future__ import annotations

import select
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.server import running_server

RECORD = 8 * 1024 * 1024  # far more than the socket buffers take: the server's send stalls
WAIT = 60.0  # bound on the wait for the reset; the server's timeouts below are 1 s


def stalled_client(base_url: str, query: str) -> socket.socket:
    """Send one GET and never read: a small receive buffer, so the window closes soon."""
    host, port = base_url.removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, int(port)))
    sock.sendall(f"GET /v1/stream/big?{query} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    return sock


def closed_by_server(sock: socket.socket) -> bool:
    """Wait (bounded) for the server to end the connection, without reading what it sent:
    a reset shows as POLLERR/POLLHUP, a shutdown as POLLRDHUP."""
    poller = select.poll()
    poller.register(sock, select.POLLRDHUP)  # POLLERR and POLLHUP are always reported
    events = poller.poll(WAIT * 1000)
    return bool(events) and bool(
        events[0][1] & (select.POLLERR | select.POLLHUP | select.POLLRDHUP)
    )


def assert_healthy(base_url: str) -> None:
    with httpx.Client(base_url=base_url, timeout=10) as http:
        assert http.get("/healthz").status_code == 200
        response = http.get("/v1/stream/big", params={"offset": "-1"})
        assert response.status_code == 200 and len(response.content) == RECORD


@pytest.fixture
def server(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    env = {
        "DS_SERVER__SEND_TIMEOUT_SECS": "1",
        "DS_SERVER__SSE_RECONNECT_INTERVAL_SECS": "3600",
        **request.param,
    }
    with running_server(tmp_path / "data", env) as base_url:
        with httpx.Client(base_url=base_url, timeout=30) as http:
            headers = {"Content-Type": "application/octet-stream"}
            assert http.put("/v1/stream/big", headers=headers).status_code == 201
            record = bytes(range(256)) * (RECORD // 256)
            assert http.post("/v1/stream/big", content=record, headers=headers).status_code == 204
        yield base_url


@pytest.mark.parametrize("server", [{}], indirect=True)
@pytest.mark.parametrize("query", ["offset=-1", "offset=-1&live=sse"])
def test_a_client_that_stops_reading_is_disconnected_after_the_send_timeout(
    server: str, query: str
) -> None:
    sock = stalled_client(server, query)
    try:
        assert closed_by_server(sock)
    finally:
        sock.close()
    assert_healthy(server)


@pytest.mark.parametrize(
    "server",
    [{"DS_SERVER__SEND_TIMEOUT_SECS": "3600", "DS_SERVER__SSE_RECONNECT_INTERVAL_SECS": "1"}],
    indirect=True,
)
def test_sse_to_a_client_that_stops_reading_ends_at_the_reconnect_interval(server: str) -> None:
    sock = stalled_client(server, "offset=-1&live=sse")
    try:
        assert closed_by_server(sock)
    finally:
        sock.close()
    assert_healthy(server)
