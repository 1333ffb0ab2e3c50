"""The whole app (Quart's routes and the protocol) started in-process, and requests to it."""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from typing import Any

import trio
from prometheus_client.parser import text_string_to_metric_families

from streams.app import StreamsApp, create_app
from streams.config import Settings
from tests.asgi import Exchange, Response

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@contextlib.asynccontextmanager
async def started_app(settings: Settings) -> AsyncIterator[StreamsApp]:
    """The app after its start-up; what start-up changes process-wide is put back after."""
    thresholds = gc.get_threshold()
    access = logging.getLogger("streams.access")
    saved = (list(access.handlers), access.propagate, access.level)
    app = create_app(settings)
    try:
        async with trio.open_nursery() as nursery:
            app.nursery = nursery
            await app.startup()
            yield app
            await app.shutdown()
            nursery.cancel_scope.cancel()
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)
        access.handlers[:] = saved[0]
        access.propagate, access.level = saved[1], saved[2]


def exchange(
    method: str, path: str, headers: dict[str, str] | None = None, query: str = ""
) -> Exchange:
    """A request with the scope a server gives (Quart needs more of it than the protocol)."""
    sent = Exchange(method, path, headers or {}, query)
    sent.scope.update(
        http_version="1.1",
        scheme="http",
        root_path="",
        server=("127.0.0.1", 4437),
        client=("127.0.0.1", 50000),
    )
    return sent


async def call(
    app: Any, method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b""
) -> Response:
    path, _, query = path.partition("?")
    sent = exchange(method, path, headers, query)
    sent.feed(body, more=False)
    await sent.serve(app)
    return sent.response


async def scrape(app: StreamsApp, headers: dict[str, str] | None = None) -> Samples:
    response = await call(app, "GET", "/metrics", headers)
    assert response.status == 200, response.body
    return samples(response.body.decode())


def samples(text: str) -> Samples:
    """Every sample of a Prometheus text exposition, by name and labels."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """A sample's value; 0 if absent (a counter not yet counted)."""
    return samples.get((name, frozenset(labels.items())), 0.0)
