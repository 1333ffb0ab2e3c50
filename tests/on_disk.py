"""Runs an operation against the service on a file-backed data dir, outside any server."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import trio

from actors.logs import FileStorage
from actors.registry import Registry
from actors.service import Streams

T = TypeVar("T")


def on_disk(root: Path, operation: Callable[[Streams], Awaitable[T]]) -> T:
    async def main() -> T:
        storage = FileStorage(root, durable=True)
        try:
            async with trio.open_nursery() as nursery:
                registry = Registry(storage)
                await nursery.start(registry.run)
                result = await operation(Streams(registry))
                nursery.cancel_scope.cancel()
            return result
        finally:
            storage.close()

    return trio.run(main)
