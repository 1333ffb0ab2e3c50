"""Behaviour of the real server over HTTP that the conformance suite does not cover."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from streams.app import EXIT_DATA_DIR_LOCKED
from tests.ops import samples, value
from tests.server import free_port, hypercorn_command, running_server

LIMITS = {
    "DS_LIMITS__MAX_APPEND_BYTES": "1000",
    "DS_SERVER__SSE_RECONNECT_INTERVAL_SECS": "1",
    "DS_SERVER__LONG_POLL_TIMEOUT_SECS": "1",
    "DS_LIMITS__BODY_TIMEOUT_SECS": "1",
}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("http") / "data"


@pytest.fixture(scope="module")
def client(data_dir: Path) -> Iterator[httpx.Client]:
    with (
        running_server(data_dir, LIMITS) as base_url,
        httpx.Client(base_url=f"{base_url}/v1/stream/", timeout=10) as http,
    ):
        yield http


def serve_until_exit(data_dir: Path, *options: str) -> subprocess.CompletedProcess[str]:
    """Run hypercorn to its own exit (bounded by the timeout)."""
    return subprocess.run(
        hypercorn_command(free_port(), *options),
        env={"DS_STORAGE__DATA_DIR": str(data_dir), "PATH": ""},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_second_process_on_the_same_data_dir_fails_fast(
    client: httpx.Client, data_dir: Path
) -> None:
    second = serve_until_exit(data_dir)
    assert second.returncode == EXIT_DATA_DIR_LOCKED
    assert "is in use by another process" in second.stderr
    assert client.put("still-served").status_code == 201


def test_two_workers_on_one_data_dir_stop_with_a_clear_error(tmp_path: Path) -> None:
    # Hypercorn's master exits with the status of the worker it terminates, read without
    # waiting: 0 if it is still running, 241 (-SIGTERM) if it has died. Only the message counts.
    completed = serve_until_exit(tmp_path, "--workers", "2")
    assert "is in use by another process" in completed.stdout + completed.stderr
    assert completed.returncode in (0, 256 - signal.SIGTERM)


def test_bodies_over_the_limit_get_413_and_change_nothing(client: httpx.Client) -> None:
    assert client.put("big", headers={"Content-Type": "text/plain"}).status_code == 201
    response = client.post("big", content=b"x" * 1001, headers={"Content-Type": "text/plain"})
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"

    def chunked() -> Iterator[bytes]:
        for _ in range(20):
            yield b"y" * 100

    response = client.post("big", content=chunked(), headers={"Content-Type": "text/plain"})
    assert response.status_code == 413
    assert client.get("big", params={"offset": "-1"}).content == b""


def test_a_body_that_stops_arriving_gets_408_and_the_connection_closes(
    client: httpx.Client,
) -> None:
    url = client.base_url
    assert url.host is not None and url.port is not None
    with socket.create_connection((url.host, url.port), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/stream/stalled HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
            b"Content-Length: 100\r\n\r\nonly part of it"
        )
        received = b""
        while chunk := sock.recv(65536):  # until the server closes the connection
            received += chunk
    assert received.startswith(b"HTTP/1.1 408")
    assert b"BODY_TIMEOUT" in received


@pytest.mark.parametrize(
    "path", ["..", "%2e%2e", "../../etc/passwd", "a/../../b", "%2F%2Fabs", "ü/名前", "x" * 900]
)
def test_names_stay_inside_the_data_dir(client: httpx.Client, data_dir: Path, path: str) -> None:
    response = client.put(path, content=path.encode(), headers={"Content-Type": "text/plain"})
    assert response.status_code in (201, 200, 404)
    for file in data_dir.rglob("*"):
        assert file.resolve().is_relative_to(data_dir.resolve())
    if response.status_code != 404:
        assert client.get(path, params={"offset": "-1"}).content == path.encode()


def test_unusual_names_are_rejected_or_kept_apart(client: httpx.Client) -> None:
    assert client.put("nul%00name").status_code == 400
    assert client.put("y" * 1025).status_code == 400
    assert client.put("__ds/x").status_code == 404  # reserved (subscriptions: their own routes)
    for name in ("café", "cafe\u0301", "CAFÉ"):  # composed, decomposed, upper case
        client.put(name, content=name.encode(), headers={"Content-Type": "text/plain"})
    for name in ("café", "cafe\u0301", "CAFÉ"):
        assert client.get(name, params={"offset": "-1"}).content == name.encode()


def test_bad_input_gets_problem_json(client: httpx.Client) -> None:
    response = client.put("ttl", headers={"Stream-TTL": "+5"})
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == 400
    assert client.head("ttl").status_code == 404  # nothing was created


def test_sse_closes_after_the_reconnect_interval(client: httpx.Client) -> None:
    client.put("sse", content=b"a", headers={"Content-Type": "text/plain"})
    with client.stream("GET", "sse", params={"offset": "-1", "live": "sse"}) as response:
        body = b"".join(response.iter_bytes())  # ends only when the server closes
    assert body.startswith(b"event: data\ndata:a\n\nevent: control\n")


def test_long_poll_times_out_with_204(client: httpx.Client) -> None:
    tail = client.put("lp").headers["Stream-Next-Offset"]
    response = client.get("lp", params={"offset": tail, "live": "long-poll"})
    assert response.status_code == 204
    assert response.headers["Stream-Up-To-Date"] == "true"
    assert "Stream-Cursor" in response.headers


def test_reads_are_record_granular(client: httpx.Client) -> None:
    """Upstream's Yjs server reads from one byte past the offsets it is given (its bug
    #397), as the reference server allows: inside a record, that record whole; past the
    tail, 200 and empty (tests/test_record_reads.py has the rest)."""
    octet = {"Content-Type": "application/octet-stream"}
    client.put("granular", content=b"abc", headers=octet)
    tail = client.post("granular", content=b"defg", headers=octet).headers["Stream-Next-Offset"]
    inside = client.get("granular", params={"offset": "0000000000000000_0000000000000004"})
    assert (inside.status_code, inside.content) == (200, b"defg")
    assert inside.headers["Stream-Next-Offset"] == tail
    past = "0000000000000000_0000000000000008"
    after = client.get("granular", params={"offset": past})
    assert (after.status_code, after.content) == (200, b"")
    assert after.headers["Stream-Next-Offset"] == past
    assert after.headers["Stream-Up-To-Date"] == "true"
    poll = client.get("granular", params={"offset": past, "live": "long-poll"})
    assert poll.status_code == 204 and poll.headers["Stream-Next-Offset"] == past


def test_early_answers_leave_the_connection_usable(client: httpx.Client) -> None:
    """Requests refused before their body is read, on any path, must not wedge the keep-alive
    connection (Quart's own 404 for paths outside /v1/stream/ did, now and then)."""
    assert client.put("usable").status_code in (200, 201)
    refused = [
        ("PUT", "__ds/x"),
        ("PUT", "nul%00x"),
        ("POST", "missing"),
        ("DELETE", "gone"),
        ("PUT", "../../../elsewhere"),
        ("POST", "big"),
    ]
    for _ in range(20):
        for method, path in refused:
            response = client.request(
                method, path, content=b"z" * 1001, headers={"Content-Type": "text/plain"}
            )
            assert 400 <= response.status_code < 500
            assert client.head("usable").status_code == 200  # the next one is answered


def test_cors_headers_go_to_browsers(client: httpx.Client) -> None:
    client.put("cors", headers={"Content-Type": "text/plain"})
    browser = client.get("cors", params={"offset": "-1"}, headers={"Origin": "https://app.test"})
    assert browser.headers["access-control-allow-origin"] == "*"
    assert "Stream-Next-Offset" in browser.headers["access-control-expose-headers"]
    plain = client.get("cors", params={"offset": "-1"})
    assert "access-control-allow-origin" not in plain.headers
    assert plain.headers["x-content-type-options"] == "nosniff"
    preflight = client.options(
        "cors",
        headers={
            "Origin": "https://app.test",
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "if-none-match, producer-id",
        },
    )
    assert preflight.status_code == 204
    allowed = preflight.headers["access-control-allow-headers"].lower()
    assert "if-none-match" in allowed and "producer-id" in allowed


@pytest.mark.parametrize(
    ("method", "headers"),
    [
        ("PUT", {"Stream-TTL": "9" * 5000}),
        ("PUT", {"Stream-Forked-From": "src", "Stream-Fork-Sub-Offset": "9" * 5000}),
        ("POST", {"Producer-Id": "p", "Producer-Epoch": "9" * 5000, "Producer-Seq": "0"}),
        ("POST", {"Producer-Id": "p", "Producer-Epoch": "0", "Producer-Seq": "9" * 5000}),
    ],
)
def test_numbers_past_pythons_digit_limit_are_400(
    client: httpx.Client, method: str, headers: dict[str, str]
) -> None:
    """More than 4300 digits made int() raise: a 500 with a traceback."""
    assert client.put("digits", headers={"Content-Type": "text/plain"}).status_code in (200, 201)
    client.put("src", headers={"Content-Type": "text/plain"})
    target = "digits-new" if method == "PUT" else "digits"
    response = client.request(
        method, target, content=b"x", headers={"Content-Type": "text/plain", **headers}
    )
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    assert client.head("digits-new").status_code == 404
    assert client.get("digits", params={"offset": "-1"}).content == b""


def test_a_cursor_past_pythons_digit_limit_is_ignored(client: httpx.Client) -> None:
    client.put("cursor", headers={"Content-Type": "text/plain"})
    response = client.get("cursor", params={"offset": "-1", "cursor": "9" * 4300})
    assert response.status_code == 200
    assert len(response.headers["Stream-Cursor"]) < 20


def test_names_that_are_not_utf8_are_400_and_kept_apart(client: httpx.Client) -> None:
    """Both were decoded to `a\ufffd`, so two different names were one stream."""
    for path in ("a%ff", "a%fe", "b%C3", "c%ED%A0%80"):
        response = client.put(path, content=b"x", headers={"Content-Type": "text/plain"})
        assert response.status_code == 400
        assert response.headers["content-type"] == "application/problem+json"
    assert client.head("a%EF%BF%BD").status_code == 404  # nothing was created as `a\ufffd`
    forked = client.put("f", headers={"Stream-Forked-From": "/v1/stream/a%ff"})
    assert forked.status_code == 400


def test_header_bytes_are_echoed_as_they_were_sent(client: httpx.Client) -> None:
    """A latin-1 byte in a request header was re-encoded as UTF-8 (0xff -> 0xc3 0xbf)."""
    content_type = b"text/plain; note=\xff"
    created = client.put("latin1", headers={b"Content-Type": content_type})
    assert created.status_code == 201
    response = client.get("latin1", params={"offset": "-1"})
    assert dict(response.headers.raw)[b"content-type"] == content_type
    assert dict(client.head("latin1").headers.raw)[b"content-type"] == content_type


def test_requests_are_logged_with_their_id_and_counted(
    client: httpx.Client, data_dir: Path
) -> None:
    root = str(client.base_url).removesuffix("/v1/stream/")

    def created() -> float:
        scraped = samples(client.get(f"{root}/metrics").text)
        return value(scraped, "durable_streams_requests_total", operation="create", status="201")

    before = created()
    headers = {"Content-Type": "text/plain", "X-Request-Id": "real-1"}
    response = client.put("logged", headers={**headers, "Authorization": "Bearer hidden-token"})
    assert (response.status_code, response.headers["x-request-id"]) == (201, "real-1")
    assert len(client.get(f"{root}/healthz").headers["x-request-id"]) == 32
    # Counted, so logged: a request is counted and logged in one step, after its response.
    assert created() == before + 1
    log = "".join(path.read_text() for path in data_dir.parent.glob("server-*.log"))
    assert re.search(r'127\.0\.0\.1 "PUT /v1/stream/logged" 201 0 [\d.]+ms create real-1\n', log)
    assert "hidden-token" not in log


def test_json_access_lines_and_a_guarded_metrics_endpoint(tmp_path: Path) -> None:
    settings = {"DS_LOG__FORMAT": "json", "DS_METRICS__TOKEN": "scrape-token"}
    with running_server(tmp_path / "data", settings) as base_url:
        assert httpx.put(f"{base_url}/v1/stream/j?token=t0k3n").status_code == 201
        assert httpx.get(f"{base_url}/metrics").status_code == 401
        bearer = {"Authorization": "Bearer scrape-token"}
        scraped = httpx.get(f"{base_url}/metrics", headers=bearer)
        assert scraped.status_code == 200
        # Counted, so logged (in one step, after the response).
        counted = {"operation": "create", "status": "201"}
        assert value(samples(scraped.text), "durable_streams_requests_total", **counted) == 1
    log = "".join(path.read_text() for path in tmp_path.glob("server-*.log"))
    access = [json.loads(line) for line in log.splitlines() if line.startswith('{"time"')]
    (put,) = (line for line in access if line["method"] == "PUT")
    assert (put["target"], put["status"], put["op"]) == (
        "/v1/stream/j?token=[redacted]",
        201,
        "create",
    )
    assert len(put["request_id"]) == 32
    assert "scrape-token" not in log and "t0k3n" not in log
