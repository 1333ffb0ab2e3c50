"""`streams serve`: the app under hypercorn's Trio worker, in this one process (one process
owns the data directory), with this server's own defaults instead of hypercorn's: a listen
backlog of 2048 (hypercorn's 100 drops a reconnecting audience), no keep-alive request cap
(hypercorn's closes every connection after 1000 requests), TLS from `DS_TLS__*`, and a
graceful shutdown on SIGTERM or SIGINT within `DS_SERVER__SHUTDOWN_GRACE_SECS`
(docs/operations.md).

The settings are checked, and the port bound, before anything else starts: a problem is one
line on stderr and a non-zero exit status.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from streams.config import ConfigError, Settings
from streams.config_load import exit_invalid, settings_or_exit

if TYPE_CHECKING:
    from hypercorn.config import Config

    from streams.app import StreamsApp

BACKLOG = 2048  # connections the kernel queues before they are accepted
KEEP_ALIVE_MAX_REQUESTS = 1_000_000_000  # in effect no cap
HANDLERS_SHARE = 0.9  # of the grace, for requests in progress; the rest is for closing storage

logger = logging.getLogger(__name__)


def add_parser(commands: Any) -> None:
    """`streams serve [--config PATH] [--example collab]` (commands: argparse's subparsers)."""
    serve = commands.add_parser(
        "serve",
        help="run the server",
        description="Run the server. Settings: defaults, then the TOML file (--config, else"
        " DS_CONFIG), then DS_* environment variables; see docs/operations.md.",
    )
    serve.add_argument(
        "--config", type=Path, metavar="PATH", help="a TOML file of settings (as DS_CONFIG)"
    )
    serve.add_argument(
        "--example",
        choices=["collab"],
        help="also serve an example app: collab, at /examples/collab/ (as DS_EXAMPLES__COLLAB)",
    )


def main(args: argparse.Namespace) -> int:
    if args.config is not None:
        os.environ["DS_CONFIG"] = str(args.config)  # the app module loads the same at import
    if args.example == "collab":
        os.environ["DS_EXAMPLES__COLLAB"] = "true"
    settings = settings_or_exit(os.environ, args.config)
    listening = bind(settings)
    if settings.example_collab:
        host = f"[{settings.host}]" if ":" in settings.host else settings.host
        scheme = "https" if settings.tls_cert_path is not None else "http"
        where = f"{scheme}://{host}:{settings.port}/examples/collab/"
        print(f"the collab example: {where} (open it in two windows)", file=sys.stderr)
    from streams.app import app  # only now: its import loads the settings

    config = hypercorn_config(settings, listening)
    trio.run(serve, app, config, settings.shutdown_grace)
    return 0


def bind(settings: Settings) -> socket.socket:
    """The server's socket, bound (not yet listening): a port in use is found here, before
    storage is opened."""
    host, port = settings.host, settings.port
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        where = f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"
        problem = error.strerror or str(error)
        names = "DS_SERVER__HOST, DS_SERVER__PORT"
        exit_invalid(ConfigError(f"{names}: cannot listen on {where}: {problem}"))
    return sock


def hypercorn_config(settings: Settings, listening: socket.socket | None = None) -> Config:
    from hypercorn.config import Config  # imported when serving, not for other commands

    config = Config()
    if listening is not None:
        config.bind = [f"fd://{listening.detach()}"]  # hypercorn's socket owns it from now on
    else:
        host = f"[{settings.host}]" if ":" in settings.host else settings.host
        config.bind = [f"{host}:{settings.port}"]
    config.backlog = BACKLOG
    config.keep_alive_max_requests = KEEP_ALIVE_MAX_REQUESTS
    config.graceful_timeout = settings.shutdown_grace * HANDLERS_SHARE
    config.shutdown_timeout = settings.shutdown_grace
    config.errorlog = logging.getLogger("hypercorn.error")  # through the root logger, once
    config.accesslog = None
    config.loglevel = settings.log_level.upper()
    if settings.tls_cert_path is not None and settings.tls_key_path is not None:
        config.certfile = str(settings.tls_cert_path)
        config.keyfile = str(settings.tls_key_path)
    return config


async def serve(app: StreamsApp, config: Config, grace: float) -> None:
    """Serve until SIGTERM or SIGINT, then shut down: the app stops taking requests and ends
    its live reads, hypercorn stops listening and waits for the requests in progress, the
    registry and storage close. All of it within `grace` seconds; a second signal ends it
    at once."""
    from hypercorn.trio import serve as hypercorn_serve

    close_paused_connections()
    stopping = trio.Event()
    with trio.CancelScope() as everything:
        async with trio.open_nursery() as nursery:

            async def on_signals(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
                with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                    task_status.started()
                    async for number in signals:
                        if stopping.is_set():
                            everything.cancel()
                            return
                        name = signal.Signals(number).name
                        logger.info("%s: shutting down within %g s", name, grace)
                        app.stop()
                        everything.deadline = trio.current_time() + grace
                        stopping.set()

            await nursery.start(on_signals)
            await hypercorn_serve(app, config, shutdown_trigger=stopping.wait)  # type: ignore[arg-type]
            nursery.cancel_scope.cancel()
    if everything.cancelled_caught:
        logger.warning("shutdown cut short: not everything stopped within %g s", grace)


def close_paused_connections() -> None:
    """Work around a hang in hypercorn's HTTP/1 handler (0.17, 0.18): when a response ends
    after the shutdown has begun, hypercorn closes the connection; but if the client's next
    request arrives first, or as it closes (a client that reconnects at once, as an SSE client
    does on its keep-alive connection), the connection's read loop pauses until that request
    may be read, and waits forever: the shutdown waits for it until `graceful_timeout`. Here
    a connection closing in a shutdown drops what it has read and will read, so its read loop
    finds nothing to wait for and returns."""
    import h11
    import hypercorn.protocol
    from hypercorn.events import Event, RawData
    from hypercorn.protocol.h11 import H11Protocol

    class ClosingH11Protocol(H11Protocol):
        ended = False  # closed in a shutdown: what the client sends now is never read

        async def handle(self, event: Event) -> None:
            if not (self.ended and isinstance(event, RawData)):
                await super().handle(event)

        async def _maybe_recycle(self) -> None:
            await self._close_stream()  # first, as hypercorn does: it can wait
            if self.context.terminated.is_set():  # so hypercorn closes the connection
                self.ended = True
                self.connection = h11.Connection(h11.SERVER)  # nothing buffered, no pause
            await super()._maybe_recycle()

    if hasattr(H11Protocol, "_maybe_recycle"):
        hypercorn.protocol.H11Protocol = ClosingH11Protocol  # type: ignore[attr-defined]
