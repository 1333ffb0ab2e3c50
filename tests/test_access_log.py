"""The access log (a line per request, as it ends) and request ids (X-Request-Id)."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from typing import Any

import pytest
import trio
import trio.testing

from actors.registry import Registry
from actors.service import Streams
from actors.storage.memory import MemoryStorage
from streams import access
from streams.config import Settings
from streams.http import StreamsHTTP
from tests.ops import call, exchange, started_app

TEXT = {"Content-Type": "text/plain"}
GENERATED = re.compile(r"[0-9a-f]{32}")


class Collect(logging.Handler):
    def __init__(self, records: list[logging.LogRecord]) -> None:
        super().__init__()
        self.records = records

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def lines() -> Iterator[list[logging.LogRecord]]:
    """The access log's records (its logger does not propagate once an app has started)."""
    logger = logging.getLogger("streams.access")
    saved = (list(logger.handlers), logger.propagate, logger.level)
    records: list[logging.LogRecord] = []
    logger.handlers[:] = [Collect(records)]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    yield records
    logger.handlers[:], logger.propagate = saved[0], saved[1]
    logger.setLevel(saved[2])


def protocol(**settings: Any) -> tuple[StreamsHTTP, Registry]:
    registry = Registry(MemoryStorage())
    return StreamsHTTP(Streams(registry), Settings(storage_mode="memory", **settings)), registry


async def test_a_line_per_request_with_its_fields(lines: list[logging.LogRecord]) -> None:
    app, registry = protocol()
    async with trio.open_nursery() as nursery:
        await nursery.start(registry.run)
        created = await call(app, "PUT", "/v1/stream/s", {**TEXT, "X-Request-Id": "req-1"}, b"hi")
        read = await call(app, "GET", "/v1/stream/s?offset=-1")
        missing = await call(app, "HEAD", "/v1/stream/nope")
        nursery.cancel_scope.cancel()
    assert (created.status, read.status, missing.status) == (201, 200, 404)
    put, get, head = (record.getMessage() for record in lines)
    assert put.startswith('127.0.0.1 "PUT /v1/stream/s" 201 0 ')
    assert put.endswith("ms create req-1")
    assert get.startswith('127.0.0.1 "GET /v1/stream/s?offset=-1" 200 2 ')
    assert get.endswith(f"ms read {read.headers['x-request-id']}")
    assert head.startswith('127.0.0.1 "HEAD /v1/stream/nope" 404 0 ')
    duration = float(head.split()[5].removesuffix("ms"))
    assert duration >= 0


async def test_json_lines_parse(lines: list[logging.LogRecord]) -> None:
    app, registry = protocol()
    async with trio.open_nursery() as nursery:
        await nursery.start(registry.run)
        await call(app, "PUT", "/v1/stream/s", TEXT, b"hello")
        await call(app, "GET", "/v1/stream/s?offset=-1", {"X-Request-Id": "abc"})
        nursery.cancel_scope.cancel()
    formatter = access.JSONFormatter()
    put, get = (json.loads(formatter.format(record)) for record in lines)
    assert set(get) == {"time", *access.FIELDS}
    assert get["client"] == "127.0.0.1"
    assert (get["method"], get["target"], get["status"]) == ("GET", "/v1/stream/s?offset=-1", 200)
    assert (get["bytes"], get["op"], get["request_id"]) == (5, "read", "abc")
    assert isinstance(get["duration_ms"], float)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", get["time"])
    assert (put["method"], put["status"], put["op"]) == ("PUT", 201, "create")


async def test_the_log_format_setting_picks_the_handler_format() -> None:
    logger = logging.getLogger("streams.access")
    saved = (list(logger.handlers), logger.propagate, logger.level)
    out = io.StringIO()
    try:
        for log_format in ("json", "text"):
            access.configure(log_format, out)
            access.AccessLog().log(
                {"method": "GET", "path": "/healthz", "client": ("::1", 1)}, 200, 3, 0.0, "x", "i"
            )
    finally:
        logger.handlers[:], logger.propagate = saved[0], saved[1]
        logger.setLevel(saved[2])
    as_json, as_text = out.getvalue().splitlines()
    assert access.TextFormatter().timestamp(86400.0625) == "1970-01-02T00:00:00.062Z"
    assert json.loads(as_json)["target"] == "/healthz"
    line = r'[\d-]{10}T[\d:]{8}\.\d{3}Z ::1 "GET /healthz" 200 3 [\d.]+ms x i'
    assert re.fullmatch(line, as_text)


async def test_control_characters_are_escaped(lines: list[logging.LogRecord]) -> None:
    app, registry = protocol()
    sent = exchange("GET", '/v1/stream/a\nforged\r "q\\', query="offset=-1&x=\x1b[31m")
    assert "raw_path" not in sent.scope  # only the decoded path: it holds the controls
    sent.feed(b"", more=False)
    raw = exchange("HEAD", "/v1/stream/b")
    raw.scope["raw_path"] = b"/v1/stream/b\x00\x7f\xff"
    raw.feed(b"", more=False)
    async with trio.open_nursery() as nursery:
        await nursery.start(registry.run)
        await sent.serve(app)
        await raw.serve(app)
        nursery.cancel_scope.cancel()
    first, second = (record.getMessage() for record in lines)
    assert '"GET /v1/stream/a\\x0aforged\\x0d\\x20\\x22q\\x5c?offset=-1&x=\\x1b[31m"' in first
    assert '"HEAD /v1/stream/b\\x00\\x7f\\xff"' in second
    for line in (first, second):
        assert line.isprintable()
    as_json = json.loads(access.JSONFormatter().format(lines[0]))
    assert as_json["target"].startswith("/v1/stream/a\\x0aforged")


async def test_tokens_are_never_logged(lines: list[logging.LogRecord]) -> None:
    app, registry = protocol()
    secret = "s3cret-value"
    async with trio.open_nursery() as nursery:
        await nursery.start(registry.run)
        headers = {"Authorization": f"Bearer {secret}", "Cookie": secret}
        query = f"?offset=-1&token={secret}&access_token={secret}&TOKEN={secret}"
        await call(app, "GET", "/v1/stream/s" + query, headers)
        nursery.cancel_scope.cancel()
    (record,) = lines
    formatted = [record.getMessage(), access.JSONFormatter().format(record)]
    for line in formatted:
        assert secret not in line
        assert "Bearer" not in line
    assert "offset=-1&token=[redacted]&access_token=[redacted]&TOKEN=[redacted]" in formatted[0]


async def test_the_access_log_can_be_turned_off(lines: list[logging.LogRecord]) -> None:
    app, registry = protocol(access_log=False)
    async with trio.open_nursery() as nursery:
        await nursery.start(registry.run)
        assert (await call(app, "PUT", "/v1/stream/s", TEXT)).status == 201
        nursery.cancel_scope.cancel()
    assert lines == []


async def test_live_reads_are_logged_when_they_end(lines: list[logging.LogRecord]) -> None:
    app, registry = protocol()
    async with trio.open_nursery() as nursery:
        await nursery.start(registry.run)
        await call(app, "PUT", "/v1/stream/s", TEXT)
        sse = exchange("GET", "/v1/stream/s", query="offset=-1&live=sse")
        sse.feed(b"", more=False)
        nursery.start_soon(sse.serve, app)
        await trio.testing.wait_all_tasks_blocked()
        assert sse.response.status == 200
        assert len(lines) == 1  # the create's; the SSE response goes on
        await call(app, "POST", "/v1/stream/s", TEXT, b"data")
        sse.disconnect()
        await sse.done.wait()
        nursery.cancel_scope.cancel()
    ended = lines[-1].getMessage()
    assert ended.startswith('127.0.0.1 "GET /v1/stream/s?offset=-1&live=sse" 200 ')
    assert int(ended.split()[4]) == len(sse.response.body) > 0
    assert " read-sse " in ended


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        ("abc-123_x.y:z", True),
        ("A" * 128, True),
        ("A" * 129, False),  # too long
        ("has space", False),
        ("new\nline", False),
        ("ünï", False),
        ("", False),
        (None, False),  # absent
    ],
)
async def test_request_ids_are_echoed_if_valid_else_generated(
    sent: str | None, kept: bool, lines: list[logging.LogRecord]
) -> None:
    app, registry = protocol()
    headers = {} if sent is None else {"X-Request-Id": sent}
    async with trio.open_nursery() as nursery:
        await nursery.start(registry.run)
        first = await call(app, "HEAD", "/v1/stream/none", headers)
        second = await call(app, "HEAD", "/v1/stream/none", headers)
        nursery.cancel_scope.cancel()
    ids = [first.headers["x-request-id"], second.headers["x-request-id"]]
    if kept:
        assert ids == [sent, sent]
    else:
        assert all(GENERATED.fullmatch(rid) for rid in ids)
        assert ids[0] != ids[1]
    assert [record.getMessage().rsplit(" ", 1)[1] for record in lines] == ids


async def test_every_protocol_response_carries_the_request_id() -> None:
    app, registry = protocol()
    async with trio.open_nursery() as nursery:
        await nursery.start(registry.run)
        responses = [
            await call(app, "PUT", "/v1/stream/s", TEXT),
            await call(app, "POST", "/v1/stream/s", TEXT, b"x"),
            await call(app, "GET", "/v1/stream/s?offset=-1"),
            await call(app, "GET", "/v1/stream/s?offset=bogus"),
            await call(app, "OPTIONS", "/v1/stream/s", {"Origin": "https://a.example"}),
            await call(app, "PATCH", "/v1/stream/s"),
        ]
        nursery.cancel_scope.cancel()
    assert [r.status for r in responses] == [201, 204, 200, 400, 204, 405]
    for response in responses:
        assert GENERATED.fullmatch(response.headers["x-request-id"])
    assert "X-Request-Id" in responses[4].headers["access-control-expose-headers"]


async def test_health_readiness_and_metrics_carry_a_request_id_and_are_logged() -> None:
    lines: list[logging.LogRecord] = []
    async with started_app(Settings(storage_mode="memory")) as app:
        # Start-up gave the logger its handler (stderr): the test's replaces it.
        logging.getLogger("streams.access").handlers[:] = [Collect(lines)]
        healthz = await call(app, "GET", "/healthz", {"X-Request-Id": "probe-1"})
        readyz = await call(app, "GET", "/readyz")
        metrics = await call(app, "GET", "/metrics")
    assert healthz.headers["x-request-id"] == "probe-1"
    assert GENERATED.fullmatch(readyz.headers["x-request-id"])
    assert GENERATED.fullmatch(metrics.headers["x-request-id"])
    logged = [record.getMessage() for record in lines]
    assert logged[0].startswith('127.0.0.1 "GET /healthz" 200 3 ')
    assert logged[0].endswith("ms healthz probe-1")
    assert " readyz " in logged[1] and " metrics " in logged[2]
