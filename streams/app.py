"""The ASGI application: `streams serve` (streams.serve), or
`hypercorn streams.app:app --worker-class trio --config hypercorn.toml`.

Requests go straight to the plain ASGI protocol handler, except health, readiness and
metrics, which Quart serves (with a request id, and access-logged); Quart also runs the
registry in its lifespan nursery. The settings are loaded (and checked) when this module is
imported, so invalid ones stop hypercorn before it serves.
"""

from __future__ import annotations

import gc
import logging
import os
import sys
import time
from typing import Any

import psycopg
import psycopg_pool
import trio
from quart import request
from quart_trio import QuartTrio

from actors.registry import Registry
from actors.service import Streams
from actors.storage import DataDirLocked, Storage
from actors.storage.files import FileStorage
from actors.storage.memory import MemoryStorage
from actors.storage.pg_listen import Listener
from actors.storage.pg_schema import SchemaTooNew
from actors.storage.pg_subscriptions import CHANNEL as SUBSCRIPTIONS_CHANNEL
from actors.storage.pg_subscriptions import PostgresSubscriptions
from actors.storage.postgres import PostgresStorage
from actors.storage.subscriptions import FileSubscriptions, MemorySubscriptions, SubscriptionStore
from actors.subscriptions import SubscriptionLimits, Subscriptions
from actors.view_budget import ViewLimits
from actors.webhooks import WebhookLimits, Webhooks
from streams import access
from streams.config import Settings
from streams.config_load import settings_or_exit
from streams.http import Receive, Scope, Send, StreamsHTTP
from streams.metrics import Metrics
from streams.resources import raise_fd_limit
from streams.subscriptions_http import mount as mount_subscriptions
from streams.yjs_http import documents, mount

EXIT_DATA_DIR_LOCKED = 3  # also: the database is unreachable at start, or its schema too new
BEARER = {"WWW-Authenticate": 'Bearer realm="metrics"'}
# Postgres mode: how long a link to a fork not there is given before a start-up drops it as a
# crash's leftover (another process may be creating that fork: far longer than a create takes).
LINK_GRACE_SECS = 60.0
OPS = ("/healthz", "/readyz", "/metrics")  # served by Quart; every other path is the protocol's


class StreamsApp(QuartTrio):
    protocol: StreamsHTTP | None = None
    storage: Storage | None = None
    registry_scope: trio.CancelScope | None = None
    subscriptions: Subscriptions | None = None
    metrics: Metrics | None = None
    access_log = access.AccessLog(enabled=False)  # the settings' once started
    stopping = False  # set as shutdown begins: /readyz answers 503 from then on

    def stop(self) -> None:
        """Shutting down (SIGTERM under `streams serve`): /readyz answers 503, new protocol
        requests get 503, long-polls answer 204 at once and SSE responses end."""
        self.stopping = True
        if self.protocol is not None:
            self.protocol.stop()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:  # type: ignore[override]
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)  # type: ignore[arg-type]
        elif self.protocol is not None and scope["path"] not in OPS:
            await self.protocol(scope, receive, send)
        else:
            await self._operations(scope, receive, send)

    async def _operations(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Quart's routes, with a request id and an access log line as the protocol's."""
        began = time.perf_counter()
        sent = {key.lower(): value for key, value in scope["headers"]}.get(b"x-request-id")
        rid = access.request_id(sent.decode("latin-1") if sent is not None else None)
        status = size = 0

        async def send_with_id(event: dict[str, Any]) -> None:
            nonlocal status, size
            if event["type"] == "http.response.start":
                status = event["status"]
                event = {**event, "headers": [*event["headers"], (b"x-request-id", rid.encode())]}
            elif event["type"] == "http.response.body":
                size += len(event.get("body", b""))
            await send(event)

        try:
            await super().__call__(scope, receive, send_with_id)  # type: ignore[arg-type]
        finally:
            operation = scope["path"].strip("/") if scope["path"] in OPS else "other"
            self.access_log.log(scope, status, size, began, operation, rid)

    async def readiness(self) -> str | None:
        """Why the server is not ready for traffic, or None if it is: it has started, its
        storage is open and writable (a database answers a query), and it is not shutting
        down."""
        if self.stopping:
            return "shutting down"
        if self.protocol is None:
            return "starting"
        if isinstance(self.storage, FileStorage) and self.storage.refused:
            return f"storage is read-only: {os.strerror(self.storage.refused)}"
        if isinstance(self.storage, PostgresStorage):
            return await self.storage.check()
        return None


async def open_storage(settings: Settings) -> Storage:
    """The storage the settings name; a database is connected (and its schema migrated) in a
    worker thread."""
    if settings.storage_mode == "memory":
        return MemoryStorage()
    if settings.storage_mode == "postgres":
        assert settings.postgres_url is not None  # checked with the settings
        return await trio.to_thread.run_sync(
            lambda: PostgresStorage.connect(
                settings.postgres_url or "",
                settings.postgres_pool_min,
                settings.postgres_pool_max,
                settings.postgres_connect_timeout,
                settings.postgres_access_secs,
            )
        )
    return FileStorage(settings.data_dir, durable=settings.storage_mode == "file-durable")


def listen(
    storage: PostgresStorage,
    registry: Registry,
    settings: Settings,
    subscriptions: Subscriptions | None = None,
) -> Listener:
    """Other processes' commits wake this one's live readers (docs/scaling.md), and their
    changes to subscriptions reach this one's (docs/subscriptions.md)."""

    def moved(stream: int, tail: int, generation: int | None) -> None:
        behind = storage.behind(stream, tail, generation)
        if behind is not None:  # a commit wakes readers; a compaction or delete, every actor
            name, replaced = behind
            registry.refresh(name, watched_only=not replaced)
        if subscriptions is not None:
            subscriptions.moved(stream)

    def listening() -> None:
        registry.refresh_all()
        if subscriptions is not None:
            subscriptions.resynced()

    channels = {} if subscriptions is None else {SUBSCRIPTIONS_CHANNEL: subscriptions.changed}
    return Listener(
        settings.postgres_url or "",
        moved,
        listening,
        retry=settings.postgres_listen_retry,
        channels=channels,
        reconnected=storage.check_pool,  # before every resident stream looks at its tail
    )


def open_subscriptions(settings: Settings, streams: Streams) -> Subscriptions:
    """The subscription supervisor of a server's settings (docs/subscriptions.md)."""
    store: SubscriptionStore
    if settings.storage_mode == "memory":
        store = MemorySubscriptions()
    elif settings.storage_mode == "postgres":  # shared by every process on the database
        store = PostgresSubscriptions(
            settings.postgres_url or "",
            settings.postgres_pool_max,
            settings.postgres_connect_timeout,
        )
    else:
        store = FileSubscriptions(settings.data_dir, settings.storage_mode == "file-durable")
    webhooks = Webhooks(
        WebhookLimits(
            settings.subscription_webhook_timeout,
            settings.subscription_webhook_max_reply_bytes,
            settings.subscription_webhook_concurrency,
            settings.subscription_allow_localhost_http,
        )
    )
    limits = SubscriptionLimits(
        settings.subscription_max_subscriptions,
        settings.subscription_max_links,
        settings.subscription_token_ttl,
        settings.subscription_key_max_age,
        settings.subscription_key_publish,
    )
    return Subscriptions(
        streams, store, webhooks, limits, lead_retry=settings.postgres_listen_retry
    )


def storage_failure(error: Exception) -> str | None:
    """The one line to exit with when storage cannot be opened at start, or None if
    `error` is not about that."""
    if isinstance(error, DataDirLocked | SchemaTooNew):
        return str(error)
    if isinstance(error, psycopg.Error | psycopg_pool.PoolTimeout):
        return f"cannot use the database (DS_STORAGE__POSTGRES_URL): {' '.join(str(error).split())}"
    return None


def collect_less() -> None:
    """Fewer and shorter garbage-collection pauses: one pause stalls every live reader at
    once (measured: SSE fan-out to 1000 readers, p99 ~650 ms -> ~250-450 ms)."""
    gc.freeze()  # what start-up made lives as long as the process; full collections skip it
    gc.set_threshold(10_000, 10, 10)  # young collections every 10k allocations, not 700


def create_app(settings: Settings | None = None) -> StreamsApp:
    app = StreamsApp(__name__)

    @app.before_serving
    async def start() -> None:
        resolved = settings or Settings.from_env()
        logging.basicConfig(level=resolved.log_level.upper())
        if resolved.access_log:
            access.configure(resolved.log_format)
        app.access_log = access.AccessLog(resolved.access_log)
        descriptors = raise_fd_limit()
        try:
            app.storage = await open_storage(resolved)
        except Exception as error:
            # Exit the worker at once with a clear message: serving without the data
            # directory (or the database) would answer every request with an error.
            line = storage_failure(error)
            if line is None:
                raise
            logging.getLogger(__name__).critical("%s", line)
            sys.stderr.flush()
            os._exit(EXIT_DATA_DIR_LOCKED)
        registry = Registry(
            app.storage,
            idle_timeout=resolved.actor_idle_timeout,
            max_resident=resolved.max_resident_actors,
            cache_bytes=resolved.tail_cache_bytes,
            piece_bytes=resolved.read_piece_bytes,
            rescan_interval=(
                resolved.postgres_expiry_scan_secs if resolved.storage_mode == "postgres" else None
            ),
            link_grace=LINK_GRACE_SECS if resolved.storage_mode == "postgres" else 0.0,
            view_limits=ViewLimits(
                resolved.max_view_entities,
                resolved.max_view_bytes,
                resolved.max_resident_view_bytes,
            ),
        )
        streams = Streams(
            registry,
            max_fork_depth=resolved.max_fork_depth,
            reader_wake_delay=resolved.reader_wake_delay,
        )
        protocol = StreamsHTTP(streams, resolved)
        yjs = mount(protocol, documents(protocol))
        app.subscriptions = open_subscriptions(resolved, streams)
        subscriptions = mount_subscriptions(protocol, app.subscriptions)

        async def supervise(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
            with trio.CancelScope() as scope:
                app.registry_scope = scope
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(protocol.sends.run)
                    nursery.start_soon(streams.run)
                    if isinstance(app.storage, PostgresStorage):
                        listener = listen(app.storage, registry, resolved, app.subscriptions)
                        nursery.start_soon(listener.run)
                    await nursery.start(registry.run)
                    await nursery.start(yjs.documents.run)
                    # Recovers subscriptions, asking actors for tails: after the registry.
                    await nursery.start(subscriptions.subscriptions.run)
                    task_status.started()

        await app.nursery.start(supervise)
        app.metrics = Metrics(
            protocol, registry, app.storage, resolved.metrics_token, resolved.disk_scan_interval
        )
        app.protocol = protocol
        if app.stopping:  # stopped while starting
            protocol.stop()
        logging.getLogger(__name__).info(
            "file descriptors: %d; at most %d requests in progress",
            descriptors,
            protocol.max_requests,
        )
        collect_less()

    @app.after_serving
    async def stop() -> None:
        app.stopping = True
        app.protocol = None
        if app.registry_scope is not None:
            app.registry_scope.cancel()
        if app.storage is not None:
            app.storage.close()
        if app.subscriptions is not None and isinstance(
            app.subscriptions.store, PostgresSubscriptions
        ):
            app.subscriptions.store.close()

    @app.get("/healthz")
    async def healthz() -> tuple[str, int]:
        return "ok\n", 200

    @app.get("/readyz")
    async def readyz() -> tuple[str, int]:
        reason = await app.readiness()
        return ("ready\n", 200) if reason is None else (f"not ready: {reason}\n", 503)

    @app.get("/metrics")
    async def metrics() -> tuple[bytes | str, int, dict[str, str]]:
        if app.metrics is None:
            return "starting\n", 503, {}
        if not app.metrics.authorized(request.headers.get("Authorization")):
            return "a bearer token is required (DS_METRICS__TOKEN)\n", 401, BEARER
        body, content_type = await app.metrics.exposition(request.headers.get("Accept"))
        return body, 200, {"Content-Type": content_type, "Cache-Control": "no-store"}

    return app


app = create_app(settings_or_exit())  # invalid settings: one line on stderr, and exit
