"""What clients send reaches the log escaped: a newline in a name cannot forge a log line."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import trio

from actors.registry import Registry
from actors.service import Streams
from actors.storage import Fold, Log, Restore
from actors.storage.memory import MemoryStorage
from streams.config import Settings
from streams.http import StreamsHTTP
from streams.protocol.errors import ProtocolError
from streams.protocol.machine import CreateRequest, Reply
from streams.protocol.records import StreamConfig

FORGED = "a\nERROR:forged:line\rb"
RAW_FORGED = b"/v1/stream/a%0AERROR:forged:line%0Db"


def one_line(records: list[logging.LogRecord]) -> str:
    assert len(records) == 1
    message = records[0].getMessage()
    assert "\n" not in message and "\r" not in message
    return message


async def test_a_request_path_with_newlines_is_logged_on_one_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Broken(Streams):
        async def head(self, name: str) -> Reply:
            raise RuntimeError("unexpected")

    app = StreamsHTTP(Broken(Registry(MemoryStorage())), Settings(storage_mode="memory"))
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(event: dict[str, Any]) -> None:
        sent.append(event)

    scope = {
        "type": "http",
        "method": "HEAD",
        "path": "/v1/stream/" + FORGED,
        "raw_path": RAW_FORGED,
        "query_string": b"",
        "headers": [],
    }
    with caplog.at_level(logging.INFO):
        await app(scope, receive, send)
    assert sent[0]["status"] == 500
    message = one_line([r for r in caplog.records if r.name == "streams.http"])
    assert repr("/v1/stream/" + FORGED) in message


class FailingOpen(MemoryStorage):
    async def open(self, name: str, fold: Fold, restore: Restore | None = None) -> Log | None:
        raise OSError("disk on fire")


async def test_a_failing_actor_logs_its_name_on_one_line(caplog: pytest.LogCaptureFixture) -> None:
    registry = Registry(FailingOpen())
    with caplog.at_level(logging.INFO):
        async with trio.open_nursery() as nursery:
            await nursery.start(registry.run)
            with pytest.raises(ProtocolError):
                await Streams(registry).create(FORGED, CreateRequest(StreamConfig("text/plain")))
            nursery.cancel_scope.cancel()
    message = one_line([r for r in caplog.records if r.name == "actors.actor"])
    assert repr(FORGED) in message


async def test_an_expiring_stream_logs_its_name_on_one_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [1000.0]
    registry = Registry(MemoryStorage(), clock=lambda: now[0])
    with caplog.at_level(logging.INFO):
        async with trio.open_nursery() as nursery:
            await nursery.start(registry.run)
            streams = Streams(registry)
            await streams.create(FORGED, CreateRequest(StreamConfig("text/plain", ttl=1)))
            now[0] += 5
            await registry.expire_due()
            nursery.cancel_scope.cancel()
    message = one_line([r for r in caplog.records if r.name == "actors.actor"])
    assert "expired" in message and repr(FORGED) in message
