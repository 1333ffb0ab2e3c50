"""Runs an operation against the service outside any server: one server's lifetime."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import trio

from actors.registry import Registry
from actors.service import Streams
from actors.storage import Storage
from actors.storage.files import FileStorage

T = TypeVar("T")


def served(storage: Storage, operation: Callable[[Streams], Awaitable[T]]) -> T:
    """Runs `operation` with a registry on `storage`, then stops it and closes `storage`."""

    async def main() -> T:
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


async def started(storage: Storage, nursery: trio.Nursery, **options: object) -> Registry:
    """A registry on `storage`, running in `nursery` (a server's lifetime, in a test)."""
    registry = Registry(storage, **options)  # type: ignore[arg-type]
    await nursery.start(registry.run)
    return registry


def on_disk(root: Path, operation: Callable[[Streams], Awaitable[T]]) -> T:
    return served(FileStorage(root, durable=True), operation)
