"""Metrics, the access log and request ids together with auth, CORS origins and shutdown:
a request refused by any of them is counted, logged and answered with its request id."""

from __future__ import annotations

import logging

from streams.config import Settings
from tests.ops import call, scrape, started_app, value
from tests.test_access_log import Collect

TEXT = {"Content-Type": "text/plain"}
SECRET = "a test secret of at least 32 bytes, never a real one"


async def test_auth_refusals_are_counted_logged_and_carry_the_request_id() -> None:
    records: list[logging.LogRecord] = []
    settings = Settings(storage_mode="memory", auth_mode="jwt", auth_jwt_secret=SECRET)
    async with started_app(settings) as app:
        logging.getLogger("streams.access").addHandler(Collect(records))
        refused = await call(app, "PUT", "/v1/stream/s", {**TEXT, "X-Request-Id": "req-a"}, b"x")
        after = await scrape(app)  # /metrics has its own token (DS_METRICS__TOKEN), not a JWT
    assert refused.status == 401
    assert refused.headers["x-request-id"] == "req-a"
    (line,) = [r.getMessage() for r in records if "/v1/stream/s" in r.getMessage()]
    assert line.startswith('127.0.0.1 "PUT /v1/stream/s" 401 ')
    assert line.endswith("ms create req-a")
    assert value(after, "durable_streams_requests_total", operation="create", status="401") == 1
    assert value(after, "durable_streams_errors_total", code="UNAUTHORIZED", status="401") == 1


async def test_shutdown_refusals_are_counted_logged_and_carry_the_request_id() -> None:
    records: list[logging.LogRecord] = []
    async with started_app(Settings(storage_mode="memory")) as app:
        logging.getLogger("streams.access").addHandler(Collect(records))
        assert (await call(app, "GET", "/readyz")).status == 200
        app.stop()
        ready = await call(app, "GET", "/readyz", {"X-Request-Id": "req-r"})
        refused = await call(app, "POST", "/v1/stream/s", {**TEXT, "X-Request-Id": "req-b"}, b"x")
        after = await scrape(app)
    assert (ready.status, ready.body) == (503, b"not ready: shutting down\n")
    assert ready.headers["x-request-id"] == "req-r"
    assert refused.status == 503
    assert refused.problem()["code"] == "SHUTTING_DOWN"
    assert refused.headers["x-request-id"] == "req-b"
    logged = [record.getMessage() for record in records]
    assert any(m.startswith('127.0.0.1 "GET /readyz" 503 ') and m.endswith("req-r") for m in logged)
    (line,) = [m for m in logged if "/v1/stream/s" in m]
    assert line.startswith('127.0.0.1 "POST /v1/stream/s" 503 ')
    assert line.endswith("ms append req-b")
    assert value(after, "durable_streams_requests_total", operation="append", status="503") == 1
    assert value(after, "durable_streams_errors_total", code="SHUTTING_DOWN", status="503") == 1


async def test_listed_cors_origins_may_read_the_request_id() -> None:
    settings = Settings(storage_mode="memory", cors_origins=("https://app.example",))
    async with started_app(settings) as app:
        allowed = await call(app, "HEAD", "/v1/stream/s", {"Origin": "https://app.example"})
        other = await call(app, "HEAD", "/v1/stream/s", {"Origin": "https://evil.example"})
    assert allowed.headers["access-control-allow-origin"] == "https://app.example"
    assert "X-Request-Id" in allowed.headers["access-control-expose-headers"]
    assert "x-request-id" in allowed.headers and "x-request-id" in other.headers
    assert "access-control-allow-origin" not in other.headers
