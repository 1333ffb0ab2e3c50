"""The storage interface's contract (`actors.storage.Storage` and `Log`), written once.

Every test runs against every backend in `KINDS`; a new backend is done when, added there,
it passes. Backends may differ only where their `Kind` says so, in a documented capability
that the tests consult: the scans' answers follow `persistent`, and the crash tests skip,
naming the reason, a backend without `raw` bytes to tear or damage.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from actors.storage import CorruptLog, Log, Restore, Storage, Superseded, framing
from actors.storage.files import FileStorage
from actors.storage.memory import MemoryStorage
from actors.storage.postgres import PostgresStorage
from streams.protocol import records
from streams.protocol.extents import Slice
from streams.protocol.headers import Producer
from streams.protocol.records import (
    AppendRecord,
    BaseRecord,
    CreateRecord,
    Record,
    SoftDeleteRecord,
    StreamConfig,
)
from tests.stored import stored_records

Folded = tuple[Record, int, int]  # what recovery hands the fold: record, data locator, length


def file_of(storage: Storage, name: str) -> Path:
    assert isinstance(storage, FileStorage)
    return storage._path(name)


@attrs.frozen
class Kind:
    """One backend, and the only ways it may differ from the others."""

    name: str
    make: Callable[[Path], Storage]  # a storage object over a place (memory has none)
    persistent: bool
    """What it stores outlives the storage object and the process: a restart is a fresh object
    over the same place, and the start-up scans (`expiring`, `fork_sources`) report what is
    stored. Memory is not: nothing outlives the process and running actors report their own
    deadlines and links, so both scans are empty; a restart is the same object."""
    raw: Callable[[Storage, str], Path] | None = None
    """Where a log's bytes lie, for the contract to tear or damage them as a crash or a bad
    disk would. None where neither can happen: memory commits in one step of the process,
    and a crash loses everything it holds; a database commits a transaction whole or not at
    all."""
    shared: bool = False
    """Several processes use it at once: a `create` never replaces a committed stream (it is
    another process's, created meanwhile): its first commit raises `Superseded`. The others
    replace it, as a truncated file is."""


KINDS = [
    Kind("memory", lambda _: MemoryStorage(), persistent=False),
    Kind("files", lambda root: FileStorage(root, durable=True), persistent=True, raw=file_of),
    Kind("files-lazy", lambda root: FileStorage(root, durable=False), persistent=True, raw=file_of),
    Kind("postgres", lambda place: in_database(place), persistent=True, shared=True),
]


def in_database(place: Path) -> Storage:
    """A storage over the database whose connection string the fixture left at `place`."""
    return PostgresStorage.connect((place / "postgres-url").read_text())


@attrs.define
class Backend:
    kind: Kind
    place: Path
    storage: Storage

    def restart(self) -> Storage:
        """The storage as a restarted process finds it."""
        if self.kind.persistent:
            self.storage.close()
            self.storage = self.kind.make(self.place)
        return self.storage

    def raw(self, name: str = "s") -> Path:
        assert self.kind.raw is not None
        return self.kind.raw(self.storage, name)


@pytest.fixture(params=KINDS, ids=lambda kind: kind.name)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    kind: Kind = request.param
    if kind.name == "postgres":  # a new, empty database of the session's server
        (tmp_path / "postgres-url").write_text(request.getfixturevalue("postgres_url"))
    backend = Backend(kind, tmp_path, kind.make(tmp_path))
    yield backend
    backend.storage.close()


@pytest.fixture
def crashable(backend: Backend) -> Backend:
    """The backend, where a crash or a bad disk can leave its logs torn or damaged."""
    if backend.kind.raw is None:
        pytest.skip(f"{backend.kind.name}: a crash cannot tear or damage it (Kind.raw)")
    return backend


# ---- records and helpers ----------------------------------------------------------------

OCTET = "application/octet-stream"


def create(name: str = "s", data: bytes = b"created", **config: Any) -> CreateRecord:
    return CreateRecord(
        name, StreamConfig(OCTET, **config), f"incarnation of {name}", 1.0, data=data
    )


BATCHES: list[list[Record]] = [
    [create()],
    [
        AppendRecord(2.0, b"a"),
        AppendRecord(3.0, b""),
        AppendRecord(4.0, bytes(range(256)) * 3, Producer("p", 0, 1), "seq-1"),
    ],
    [AppendRecord(5.0, b"last", close=True), SoftDeleteRecord(6.0)],
]
DATA = [records.encode(record)[1] for batch in BATCHES for record in batch]


def replayed(record: Record) -> Record:
    """The record as recovery folds it: its data stays in the log."""
    return records.decode(records.encode(record)[0])


async def commit(log: Log, batches: list[list[Record]]) -> list[Folded]:
    """Stages and commits each batch (several records per commit); what a replay must fold."""
    staged = []
    for batch in batches:
        for record in batch:
            meta, data = records.encode(record)
            staged.append((replayed(record), log.stage(meta, data), len(data)))
        await log.commit()
    return staged


async def stored(backend: Backend, batches: list[list[Record]], name: str = "s") -> list[Folded]:
    """A new stream `name` holding `batches`, its log closed."""
    log = await backend.storage.create(name)
    try:
        return await commit(log, batches)
    finally:
        log.close()


async def reopen(
    backend: Backend, name: str = "s", restore: Restore | None = None
) -> tuple[Log, list[Folded]]:
    """The log as a restarted process opens it, and what recovery folded."""
    folded: list[Folded] = []
    log = await backend.restart().open(name, lambda *item: folded.append(item), restore)
    assert log is not None
    return log, folded


def unexpected_restore(blob: bytes) -> bool:
    raise AssertionError(f"no checkpoint should be offered, got {blob!r}")


def slices(staged: list[Folded], start: int, end: int) -> list[Slice]:
    """The slices of [start, end) of the records' data laid end to end, as an actor cuts them."""
    found, position = [], 0
    for _, locator, length in staged:
        low, high = max(start, position), min(end, position + length)
        if low < high:
            found.append(Slice(locator, low - position, high - low))
        position += length
    return found


async def check_reads(log: Log, staged: list[Folded], data: list[bytes]) -> None:
    """Each record by its locator, then ranges inside and across records (and empty ones)."""
    for (_, locator, length), expected in zip(staged, data, strict=True):
        assert await log.read([Slice(locator, 0, length)]) == expected
    whole = b"".join(data)
    bounds = [0]
    for piece in data:
        bounds.append(bounds[-1] + len(piece))
    near = {bound + step for bound in bounds for step in (-2, -1, 0, 1, 300)}
    points = sorted(near & set(range(len(whole) + 1)))
    for start in points:
        for end in points[points.index(start) :]:
            assert await log.read(slices(staged, start, end)) == whole[start:end], (start, end)


# ---- open, create, commit, read ---------------------------------------------------------


async def test_an_absent_stream_is_none(backend: Backend) -> None:
    storage = backend.storage
    assert await storage.open("s", lambda *_: None) is None
    assert await storage.links("s") == {}
    await storage.remove("s")  # removing nothing is no error
    assert await storage.open("s", lambda *_: None) is None


async def test_a_log_with_nothing_committed_is_no_stream(backend: Backend) -> None:
    log = await backend.storage.create("s")
    log.stage(*records.encode(create()))  # staged, never committed
    log.close()
    assert await backend.restart().open("s", lambda *_: None) is None


async def test_reads_find_committed_data_where_stage_said(backend: Backend) -> None:
    log = await backend.storage.create("s")
    staged = await commit(log, BATCHES)
    await check_reads(log, staged, DATA)
    log.close()


async def test_reopening_replays_exactly_the_committed_records(backend: Backend) -> None:
    log = await backend.storage.create("s")
    staged = await commit(log, BATCHES)
    end = log.end
    log.stage(*records.encode(AppendRecord(7.0, b"staged, never committed")))
    log.close()

    log, folded = await reopen(backend)
    assert folded == staged
    assert log.end == end
    await check_reads(log, staged, DATA)
    more = await commit(log, [[AppendRecord(8.0, b"after")], [AppendRecord(9.0, b"and more")]])
    assert more[0][1] >= end
    log.close()

    log, folded = await reopen(backend)
    assert folded == staged + more
    log.close()
    found = await stored_records(backend.storage, "s")
    assert found is not None
    assert [data for _, data in found] == [*DATA, b"after", b"and more"]


async def test_create_starts_a_name_afresh(backend: Backend) -> None:
    log = await backend.storage.create("s")
    await commit(log, BATCHES[:2])
    await log.checkpoint(b"state")
    await commit(log, BATCHES[2:])
    log.close()
    if backend.kind.shared:
        log = await backend.storage.create("s")
        log.stage(*records.encode(create()))
        with pytest.raises(Superseded):
            await log.commit()
        log.close()
        await backend.storage.remove("s")
    log = await backend.storage.create("s")
    assert log.end == 0
    staged = await commit(log, BATCHES[:2])  # the same bytes the old checkpoint covered
    log.close()
    log, folded = await reopen(backend, restore=unexpected_restore)
    assert folded == staged
    log.close()


async def test_names_are_opaque(backend: Backend) -> None:
    names = ["s", "S", "a/b", "../up", "ünïcødé ✓", "x" * 2000]
    for name in names:
        await stored(backend, [[create(name, data=name.encode())]], name)
    storage = backend.restart()
    for name in names:
        found = await stored_records(storage, name)
        assert found == [(replayed(create(name)), name.encode())]


async def test_a_record_too_large_for_the_format_stages_nothing(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(framing, "MAX_BODY", 4096)  # 4 GiB is too much for a test
    meta, _ = records.encode(AppendRecord(2.0))
    log = await backend.storage.create("s")
    staged = await commit(log, BATCHES[:1])
    too_large = [(b"m" * (framing.MAX_META + 1), b""), (meta, b"x" * (4097 - len(meta)))]
    for meta_part, data in too_large:
        with pytest.raises(framing.FrameTooLarge):
            log.stage(meta_part, data)
    fits = b"x" * (4096 - len(meta))
    staged.append((replayed(AppendRecord(2.0)), log.stage(meta, fits), len(fits)))
    await log.commit()
    log.close()
    log, folded = await reopen(backend)
    assert folded == staged
    assert await log.read([Slice(staged[-1][1], 0, len(fits))]) == fits
    log.close()


# ---- crashes: torn tails and damage -----------------------------------------------------

FRAME = framing.frame(
    *records.encode(AppendRecord(10.0, b"torn away" * 20))
)  # longer than what follows
TEARS = {
    "a few header bytes": FRAME[:3],
    "a header alone": FRAME[: framing.HEADER.size],
    "part of the metadata": FRAME[: framing.HEADER.size + 2],
    "all but the last byte": FRAME[:-1],
    "whole, bad checksum": FRAME[:-1] + bytes([FRAME[-1] ^ 1]),
}


@pytest.mark.usefixtures("crashable")
@pytest.mark.parametrize("tail", TEARS.values(), ids=TEARS.keys())
async def test_a_torn_tail_is_cut_and_new_commits_follow_it(backend: Backend, tail: bytes) -> None:
    staged = await stored(backend, BATCHES)
    with backend.raw().open("ab") as file:
        file.write(tail)  # a crash in the middle of a commit
    log, folded = await reopen(backend)
    assert folded == staged
    more = await commit(log, [[AppendRecord(11.0, b"after the tear")]])
    log.close()
    log, folded = await reopen(backend)
    assert folded == staged + more
    await check_reads(log, folded, [*DATA, b"after the tear"])
    log.close()


@pytest.mark.usefixtures("crashable")
async def test_a_torn_create_is_no_stream(backend: Backend) -> None:
    await stored(backend, BATCHES[:1])
    path = backend.raw()
    path.write_bytes(path.read_bytes()[:-1])
    assert await backend.restart().open("s", lambda *_: None) is None


@pytest.mark.usefixtures("crashable")
@pytest.mark.parametrize("where", ["first header", "first metadata", "first data", "middle data"])
async def test_damage_before_the_last_record_raises_and_changes_nothing(
    backend: Backend, where: str
) -> None:
    staged = await stored(backend, BATCHES)
    path = backend.raw()
    position = {
        "first header": 5,
        "first metadata": framing.HEADER.size + 1,
        "first data": staged[0][1],
        "middle data": staged[3][1] + 100,
    }[where]
    pristine = path.read_bytes()
    damaged = bytearray(pristine)
    damaged[position] ^= 0x40
    path.write_bytes(damaged)
    for _ in range(2):  # nothing was cut: the second open finds the same damage
        with pytest.raises(CorruptLog):
            await reopen(backend)
        assert path.read_bytes() == damaged
    path.write_bytes(pristine)
    log, folded = await reopen(backend)
    assert folded == staged
    log.close()


# ---- checkpoints ------------------------------------------------------------------------


def restoring(blobs: list[bytes], usable: bool = True) -> Restore:
    def restore(blob: bytes) -> bool:
        blobs.append(blob)
        return usable

    return restore


@pytest.mark.parametrize("blob", [b"state", b""])
async def test_a_checkpoint_spares_replaying_what_it_covers(backend: Backend, blob: bytes) -> None:
    log = await backend.storage.create("s")
    before = await commit(log, BATCHES[:2])
    await log.checkpoint(blob)
    after = await commit(log, BATCHES[2:])
    log.close()
    restored: list[bytes] = []
    log, folded = await reopen(backend, restore=restoring(restored))
    assert restored == [blob]
    assert folded == after
    await check_reads(log, before + after, DATA)  # the log still holds what it covers
    log.close()


async def test_the_latest_checkpoint_serves_every_later_open(backend: Backend) -> None:
    log = await backend.storage.create("s")
    await commit(log, BATCHES[:1])
    await log.checkpoint(b"one")
    await commit(log, BATCHES[1:])
    await log.checkpoint(b"two")
    end = log.end
    log.close()
    restored: list[bytes] = []
    log, folded = await reopen(backend, restore=restoring(restored))
    assert (restored, folded, log.end) == ([b"two"], [], end)
    more = await commit(log, [[AppendRecord(7.0, b"more")]])
    log.close()
    log, folded = await reopen(backend, restore=restoring(restored))
    assert (restored, folded) == ([b"two", b"two"], more)
    log.close()


async def test_without_a_usable_checkpoint_everything_is_replayed(backend: Backend) -> None:
    staged = await stored(backend, BATCHES)
    log, folded = await reopen(backend, restore=unexpected_restore)  # there is none
    assert folded == staged
    await log.checkpoint(b"state")
    log.close()
    refused: list[bytes] = []
    log, folded = await reopen(backend, restore=restoring(refused, usable=False))
    assert (refused, folded) == ([b"state"], staged)
    log.close()
    log, folded = await reopen(backend)  # no restore: the checkpoint is not read
    assert folded == staged
    log.close()


# ---- compaction ---------------------------------------------------------------------------


async def test_restart_puts_one_record_in_place_of_those_before_a_frame(backend: Backend) -> None:
    log = await backend.storage.create("s")
    staged = await commit(log, BATCHES[:2])
    await log.checkpoint(b"state")
    await log.save_view(b"view")
    kept = staged[2:]
    keep_from = kept[0][1] - framing.data_offset(records.encode(kept[0][0])[0])
    meta, data = records.encode(BaseRecord(create(), 100, 2.0, data=b"the base's view"))
    at = await log.prepare_restart(meta, data)
    shift = await log.restart(keep_from)
    restarted = [
        (replayed(BaseRecord(create(), 100, 2.0)), at, len(data)),
        *[(record, locator + shift, length) for record, locator, length in kept],
    ]
    await check_reads(log, restarted, [data, *DATA[2:4]])
    more = await commit(log, [[AppendRecord(7.0, b"after")]])
    log.close()
    log, folded = await reopen(backend, restore=unexpected_restore)  # it went with the old log
    assert folded == restarted + more
    assert await log.load_view() is None
    log.close()


# ---- fork links, incarnations, remove ---------------------------------------------------


async def test_fork_links(backend: Backend) -> None:
    await stored(backend, [[create("src")]], "src")
    storage = backend.storage
    assert await storage.links("src") == {}
    await storage.add_link("src", "f", "one")
    await storage.add_link("src", "g/../h", "two")
    await storage.add_link("src", "f", "three")  # the fork re-created under its name
    assert await storage.links("src") == {"f": "three", "g/../h": "two"}
    await storage.remove_link("src", "g/../h")
    await storage.remove_link("src", "absent")
    await storage.remove_link("absent", "f")
    storage = backend.restart()
    assert await storage.links("src") == {"f": "three"}
    assert await storage.links("f") == {}


async def test_remove_takes_the_log_its_links_and_its_checkpoint(backend: Backend) -> None:
    storage = backend.storage
    log = await storage.create("s")
    await commit(log, BATCHES[:2])
    await log.checkpoint(b"state")
    await storage.add_link("s", "f", "one")
    await storage.remove("s")
    log.close()  # as an actor does: remove, then close
    storage = backend.restart()
    assert await storage.open("s", lambda *_: None) is None
    assert await storage.links("s") == {}
    if backend.kind.raw is not None:
        left = [p for p in backend.place.rglob("*") if p.is_file() and p.name != "LOCK"]
        assert left == []
    log = await storage.create("s")
    assert log.end == 0
    staged = await commit(log, BATCHES[:2])  # the same bytes the old checkpoint covered
    log.close()
    log, folded = await reopen(backend, restore=unexpected_restore)
    assert folded == staged
    log.close()


# ---- the start-up scans -----------------------------------------------------------------


async def test_expiring_lists_stored_streams_that_can_expire(backend: Backend) -> None:
    configs: list[tuple[str, dict[str, Any]]] = [
        ("ttl", {"ttl": 60}),
        ("at", {"expires_at": 2e9}),
        ("both", {"ttl": 5, "expires_at": 3e9}),
        ("forever", {}),
        ("gone", {"ttl": 1}),
    ]
    for name, config in configs:
        await stored(backend, [[create(name, **config)]], name)
    await backend.storage.remove("gone")
    found = sorted(await backend.restart().expiring())
    expected = [("at", None, 2e9), ("both", 5, 3e9), ("ttl", 60, None)]
    assert found == (expected if backend.kind.persistent else [])


async def test_fork_sources_lists_stored_streams_that_had_forks(backend: Backend) -> None:
    storage = backend.storage
    for name in ["src", "lone", "was"]:
        await stored(backend, [[create(name)]], name)
    await storage.add_link("src", "f", "one")
    await storage.add_link("was", "g", "two")
    await storage.remove_link("was", "g")
    await storage.add_link("missing", "h", "three")  # what a crash in the middle of remove leaves
    storage = backend.restart()
    found = sorted(await storage.fork_sources())
    if backend.kind.persistent:
        # the scan changes nothing: each source's actor checks its links and removes them
        assert found == ["missing", "src", "was"]
        assert await storage.links("missing") == {"h": "three"}
        await storage.remove("missing")  # what its actor does for a stream that is gone
        assert await storage.links("missing") == {}
    else:
        assert found == []


async def test_names_lists_every_stored_stream(backend: Backend) -> None:
    storage = backend.storage
    kept = ["s", "a/b", "ünïcødé ✓", "x" * 2000]
    for name in kept:
        await stored(backend, [[create(name)], *BATCHES[1:]], name)
    base = BaseRecord(create("compacted"), 100, 2.0, data=b"view")
    await stored(backend, [[base], [AppendRecord(3.0, b"after the base")]], "compacted")
    await stored(backend, [[create("gone")]], "gone")
    await storage.remove("gone")
    log = await storage.create("never")  # created, nothing committed: no stream
    log.stage(*records.encode(create("never")))
    log.close()
    # a restart finds them alike (memory: the same object, which holds them)
    assert sorted(await backend.restart().names()) == sorted([*kept, "compacted"])
