"""A data directory opened by a command instead of a server: its lock taken, a registry and
the stream actors run in-process for the command's lifetime."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import trio

from actors.registry import Registry
from actors.service import Streams
from actors.storage import DataDirLocked
from actors.storage.files import FileStorage
from streams.protocol.errors import ProtocolError

T = TypeVar("T")

IN_USE = "data directory in use by a running server; stop it first"
# A fork chain in a backup was within some server's limit; an import recreates it as it was.
UNLIMITED_FORK_DEPTH = sys.maxsize


class CommandError(Exception):
    """What a command says on one line of stderr before exiting with status 1."""


def add_data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("DS_STORAGE__DATA_DIR", "./data")),
        help="the data directory (default: $DS_STORAGE__DATA_DIR, else ./data); "
        "no server may be running on it",
    )


def stopped_clock() -> float:
    """The clock of the commands that only read: nothing expires while they look (an
    expired stream is listed or exported, not deleted, as a server starting would)."""
    return 0.0


def failure(name: str, error: ProtocolError) -> CommandError:
    return CommandError(f"stream {name!r}: {error.detail or error.title}")


def open_storage(root: Path, *, writing: bool) -> FileStorage:
    """The data directory's storage, holding its lock; every commit synced, as in
    file-durable mode. Only a command that writes makes one where there is none: a mistyped
    path is not turned into an empty data directory."""
    if not writing and not (root / "streams").is_dir():
        raise CommandError(f"{root}: not a data directory (no streams/ folder in it)")
    try:
        return FileStorage(root, durable=True)
    except DataDirLocked:
        raise CommandError(f"{root}: {IN_USE}") from None
    except OSError as error:
        raise CommandError(f"{root}: {error.strerror or error}") from None


def run(root: Path, operation: Callable[[Streams], Awaitable[T]], *, writing: bool = False) -> T:
    """`operation` with the streams of `root`, once start-up is done (a crash's interrupted
    deletes collected, as a server's start would); then every actor stops and the lock is
    released. The actors' clock stands still: at `stopped_clock` for reads, and at the start
    for writes (their records carry that time, and no TTL runs out during a long import: a
    server's start counts as an access anyway)."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="streams: %(levelname)s %(message)s")
    storage = open_storage(root, writing=writing)
    started = time.time()

    async def main() -> T:
        refusal: CommandError | None = None
        async with trio.open_nursery() as nursery:
            registry = Registry(storage, clock=lambda: started if writing else stopped_clock())
            await nursery.start(registry.run)
            await registry.collected.wait()
            streams = Streams(registry, max_fork_depth=UNLIMITED_FORK_DEPTH)
            try:
                result = await operation(streams)
            except CommandError as error:  # one line for the operator, not an exception group
                refusal = error
            nursery.cancel_scope.cancel()
        if refusal is not None:
            raise refusal
        return result

    try:
        return trio.run(main)
    finally:
        storage.close()
