"""Where subscriptions and the webhook signing keys are kept: in files under the data
directory (`subscriptions/`), in memory for `DS_STORAGE__MODE=memory`, or in the database
for `postgres` (`pg_subscriptions.py`, shared by several processes).

Each subscription is one small file, replaced whole and atomically (written beside, synced,
renamed over, the directory synced) in file-durable mode before the request that changed it
is answered, so a crash leaves the old record or the new one, never a mix; its frame's
checksums (`framing`) catch damage, and a damaged record is logged and skipped at start-up.
The signing key ring is kept the same way, in `subscriptions/keys`.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Protocol

import trio

from actors.storage import framing
from streams.protocol.webhook_signing import SEED_BYTES, KeyRing

logger = logging.getLogger(__name__)

KEYS = "keys"
SUFFIX = ".sub"
META = b"subscriptions"  # a frame needs metadata; this names what it holds


class Held(Protocol):
    """One subscription held for a change: its record as stored (when the store is shared),
    and how to write the change, kept when the hold ends without an error."""

    record: bytes | None

    async def save(self, record: bytes) -> None: ...

    async def remove(self) -> None: ...

    async def count(self) -> int:
        """How many subscriptions there are (a shared store: creates take turns)."""

    async def names(self, containing: str) -> list[str]:
        """A shared store: the streams whose names contain `containing`."""


class SubscriptionStore(Protocol):
    shared: bool  # other processes change it too: what is cached must be read again

    async def load(self) -> list[bytes]:
        """Every subscription's record."""

    async def load_one(self, id: str) -> bytes | None: ...

    def hold(self, id: str) -> AbstractAsyncContextManager[Held]:
        """`id` locked against other processes' changes until the block ends."""

    async def save(self, id: str, record: bytes) -> None: ...

    async def remove(self, id: str) -> None: ...

    async def load_keys(self) -> bytes | None: ...

    async def save_keys(self, ring: bytes) -> None: ...

    async def update_keys(self, change: Callable[[bytes | None], bytes]) -> bytes:
        """The key ring `change` makes of the stored one (None: none yet), stored unless the
        same; no other process changes it in between."""

    async def lead(self) -> bool:
        """Whether this process delivers webhooks and wakes and runs their timers."""

    async def stream_name(self, row: int) -> str | None:
        """A shared store: the name of the stream in row `row` (None: gone)."""


class _Through:
    """A hold of a store only this process writes: changes go straight through."""

    record: bytes | None = None

    def __init__(self, store: LocalStore, id: str) -> None:
        self.store, self.id = store, id

    async def save(self, record: bytes) -> None:
        await self.store.save(self.id, record)

    async def remove(self) -> None:
        await self.store.remove(self.id)

    async def count(self) -> int:
        return len(await self.store.load())

    async def names(self, containing: str) -> list[str]:
        return []  # never asked: the process's own commits are all there are


class LocalStore:
    """What a store one process owns needs nothing more for: holds, counts, key updates."""

    shared = False

    async def load(self) -> list[bytes]:
        raise NotImplementedError

    async def save(self, id: str, record: bytes) -> None:
        raise NotImplementedError

    async def remove(self, id: str) -> None:
        raise NotImplementedError

    async def load_keys(self) -> bytes | None:
        raise NotImplementedError

    async def save_keys(self, ring: bytes) -> None:
        raise NotImplementedError

    async def load_one(self, id: str) -> bytes | None:
        return None  # never asked: the process's own copy is the authority

    @contextlib.asynccontextmanager
    async def hold(self, id: str) -> AsyncIterator[Held]:
        yield _Through(self, id)

    async def lead(self) -> bool:
        return True  # the only process

    async def stream_name(self, row: int) -> str | None:
        return None  # never asked: no other process commits

    async def update_keys(self, change: Callable[[bytes | None], bytes]) -> bytes:
        old = await self.load_keys()
        new = change(old)
        if new != old:
            await self.save_keys(new)
        return new


class MemorySubscriptions(LocalStore):
    """For memory mode: kept as long as the process."""

    def __init__(self) -> None:
        self.records: dict[str, bytes] = {}
        self.keys: bytes | None = None

    async def load(self) -> list[bytes]:
        return list(self.records.values())

    async def save(self, id: str, record: bytes) -> None:
        self.records[id] = record

    async def remove(self, id: str) -> None:
        self.records.pop(id, None)

    async def load_keys(self) -> bytes | None:
        return self.keys

    async def save_keys(self, ring: bytes) -> None:
        self.keys = ring


def _digest(id: str) -> str:
    return hashlib.sha256(id.encode("utf-8", "surrogatepass")).hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unframe(raw: bytes) -> bytes | None:
    first = next(framing.scan(raw), None)
    if not isinstance(first, framing.Scanned):
        return None
    return raw[first.data_locator : first.data_locator + first.data_length]


class FileSubscriptions(LocalStore):
    """`<data dir>/subscriptions/<sha256 of id>.sub` and `keys`; synced if `durable`."""

    def __init__(self, root: Path, durable: bool) -> None:
        self.dir = root / "subscriptions"
        self.durable = durable
        self.dir.mkdir(parents=True, exist_ok=True)

    def _write(self, name: str, data: bytes) -> None:
        path = self.dir / name
        temporary = self.dir / (name + ".tmp")
        with open(temporary, "wb") as file:
            file.write(framing.frame(META, data))
            if self.durable:
                file.flush()
                os.fsync(file.fileno())
        os.replace(temporary, path)
        if self.durable:
            _fsync_dir(self.dir)

    def _read(self, path: Path) -> bytes | None:
        try:
            data = _unframe(path.read_bytes())
        except OSError as error:
            logger.error("subscription record %s cannot be read: %s", path, error)
            return None
        if data is None:
            logger.error("subscription record %s is damaged: skipped", path)
        return data

    def _load(self) -> list[bytes]:
        found = (self._read(path) for path in sorted(self.dir.glob("*" + SUFFIX)))
        return [data for data in found if data is not None]

    def _remove(self, id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.dir / (_digest(id) + SUFFIX))
            if self.durable:
                _fsync_dir(self.dir)

    async def load(self) -> list[bytes]:
        return await trio.to_thread.run_sync(self._load)

    async def save(self, id: str, record: bytes) -> None:
        await trio.to_thread.run_sync(self._write, _digest(id) + SUFFIX, record)

    async def remove(self, id: str) -> None:
        await trio.to_thread.run_sync(self._remove, id)

    async def load_keys(self) -> bytes | None:
        path = self.dir / KEYS
        if not path.exists():
            return None
        data = await trio.to_thread.run_sync(self._read, path)
        if data is None:
            raise RuntimeError(f"the webhook signing keys in {path} are damaged")
        return data

    async def save_keys(self, ring: bytes) -> None:
        await trio.to_thread.run_sync(self._write, KEYS, ring)


async def load_ring(
    store: SubscriptionStore, now: float, random_bytes: Callable[[int], bytes]
) -> KeyRing:
    """The signing keys kept in `store`, or new ones, kept there before they are used (made
    once, whichever process asks first)."""

    def made(raw: bytes | None) -> bytes:
        if raw is not None:
            return raw
        return KeyRing.new(random_bytes(SEED_BYTES), random_bytes(32), now).encode()

    return KeyRing.decode(await store.update_keys(made))
