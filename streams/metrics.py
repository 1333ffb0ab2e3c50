"""`/metrics` in Prometheus text format (docs/operations.md, "Metrics").

The request path only counts, in plain dicts and integers (`HTTPMetrics`, and the actors'
`actors.metrics.ActorMetrics`); a scrape turns them into samples with the official client,
one `CollectorRegistry` per app. Nothing a scrape does blocks the event loop for long: the
streams on disk are counted in a worker thread, at most once per interval, and cached.
"""

from __future__ import annotations

import hmac
from collections import Counter
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import trio
from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from actors.registry import Registry
from actors.storage import Storage

if TYPE_CHECKING:
    from streams.http import StreamsHTTP

PREFIX = "durable_streams_"
LIVE_MODES = ("long-poll", "sse")


class HTTPMetrics:
    """What the HTTP layer counts as requests end."""

    def __init__(self) -> None:
        self.requests: Counter[tuple[str, int]] = Counter()  # (operation, status)
        self.errors: Counter[tuple[str, int]] = Counter()  # problem+json answered: (code, status)
        self.live = dict.fromkeys(LIVE_MODES, 0)  # live reads in progress, by mode
        self.over_request_cap = 0  # requests refused with 503: DS_SERVER__MAX_CONNECTIONS


@runtime_checkable
class Countable(Protocol):
    def count_logs(self) -> int:
        """The streams stored (blocking: called in a worker thread)."""


class StreamsOnDisk:
    """The number of streams stored, counted at most once per `interval` seconds in a
    worker thread (a file storage lists its directories); None if the storage cannot say."""

    def __init__(self, storage: Storage, interval: float) -> None:
        self.storage = storage
        self.interval = interval
        self.value: int | None = None
        self._next = -float("inf")  # trio time of the next count
        self._lock = trio.Lock()

    async def refresh(self) -> None:
        if not isinstance(self.storage, Countable):
            return
        async with self._lock:  # concurrent scrapes share one count
            if trio.current_time() < self._next:
                return
            self.value = await trio.to_thread.run_sync(self.storage.count_logs)
            self._next = trio.current_time() + self.interval


class Collector:
    """The server's own metrics, made from the counts when scraped."""

    def __init__(self, protocol: StreamsHTTP, registry: Registry, disk: StreamsOnDisk) -> None:
        self.protocol = protocol
        self.registry = registry
        self.disk = disk

    def collect(self) -> Iterator[Metric]:
        http = self.protocol.metrics
        actors = self.registry.metrics
        yield _counter(
            "requests",
            "Protocol requests answered, by operation and status (0: no response was sent)",
            ("operation", "status"),
            {(op, str(status)): n for (op, status), n in http.requests.items()},
        )
        yield _counter(
            "errors",
            "Errors answered as problem+json, by code and status (INTERNAL: unexpected)",
            ("code", "status"),
            {(code, str(status)): n for (code, status), n in http.errors.items()},
        )
        refused: dict[tuple[str, ...], int] = {
            ("requests",): http.over_request_cap,
            ("bodies",): self.protocol.budget.refused,
            ("snapshots",): self.protocol.reads.state.pins.refused,
        }
        yield _counter(
            "refused", "Requests refused with 503 BUSY, by the limit reached", ("limit",), refused
        )
        yield _counter("append_bytes", "Data bytes appended", (), {(): actors.append_bytes})
        yield _counter("append_records", "Appends committed", (), {(): actors.append_records})
        yield _gauge("requests_in_progress", "Protocol requests being served", self.protocol.active)
        yield _gauge("live_actors", "Stream actors running", self.registry.active)
        live = GaugeMetricFamily(
            PREFIX + "live_readers", "Live reads in progress (long-poll, SSE)", labels=("mode",)
        )
        for mode, count in http.live.items():
            live.add_metric((mode,), count)
        yield live
        if self.protocol.yjs is not None:
            yjs = self.protocol.yjs.documents.metrics
            compactions: dict[tuple[str, ...], int] = {
                ("ok",): yjs.compactions,
                ("failed",): yjs.compaction_failures,
            }
            yield _counter(
                "yjs_compactions", "Yjs document compactions, by result", ("result",), compactions
            )
            removed = "Replaced Yjs snapshots removed"
            yield _counter("yjs_snapshots_removed", removed, (), {(): yjs.snapshots_removed})
        if self.disk.value is not None:
            stored = "Streams stored (counted at most once per DS_METRICS__DISK_SCAN_INTERVAL_SECS)"
            yield _gauge("streams_on_disk", stored, self.disk.value)


def _counter(
    name: str, text: str, labels: tuple[str, ...], values: dict[tuple[str, ...], int]
) -> CounterMetricFamily:
    family = CounterMetricFamily(PREFIX + name, text, labels=labels)
    for key, value in values.items():
        family.add_metric(key, value)
    return family


def _gauge(name: str, text: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(PREFIX + name, text, value=value)


class Metrics:
    """One app's `/metrics`: its own registry (the server's metrics, the commit latency
    histogram, the process's), the optional bearer token, and the exposition."""

    def __init__(
        self,
        protocol: StreamsHTTP,
        registry: Registry,
        storage: Storage,
        token: str | None,
        disk_scan_interval: float,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.disk = StreamsOnDisk(storage, disk_scan_interval)
        self.registry.register(Collector(protocol, registry, self.disk))
        self.registry.register(registry.metrics.commit_seconds)
        ProcessCollector(registry=self.registry)
        self._token = None if token is None else token.encode()

    def authorized(self, authorization: str | None) -> bool:
        """Without a token set, anyone may scrape; with one, `Authorization: Bearer <it>`."""
        if self._token is None:
            return True
        scheme, _, credentials = (authorization or "").partition(" ")
        sent = credentials.strip().encode("latin-1", "replace")
        # Compared in constant time, whatever the scheme, so timing tells nothing.
        return hmac.compare_digest(sent, self._token) & (scheme.lower() == "bearer")

    async def exposition(self, accept: str | None) -> tuple[bytes, str]:
        """The samples, in the format the scraper accepts best; and its content type."""
        await self.disk.refresh()
        encoder: Callable[[CollectorRegistry], bytes]
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type
