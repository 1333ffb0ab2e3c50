"""`streams import`: a file written by `streams export` (streams/cli/archive.py) back into a
data directory, every write through the stream's actor, every stream checked afterwards."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import TypeVar

import attrs

from actors import messages as m
from actors.service import Fork, Streams
from state.view import View
from streams.cli import archive
from streams.cli.export import entry as exported_entry
from streams.cli.offline import CommandError, add_data_dir, failure, run
from streams.protocol.errors import ProtocolError
from streams.protocol.headers import Producer
from streams.protocol.machine import AppendRequest, CreateRequest
from streams.protocol.records import StreamConfig

DESCRIPTION = """\
Read a file written by `streams export` into a data directory (made if missing). Each stream
is created and its records appended through its actor with the same boundaries, so every
offset is the exported one (a compacted stream's log starts at its base again); its
producers, Stream-Seq and closure are restored (a retried append dedupes as before), each
fork is created from its imported source at the same offset, and soft-deleted streams are
deleted again once their forks exist. The whole file is checked before anything is written,
an existing stream is refused unless --replace, and each imported stream is compared with
its export. TTLs start again; a stream whose Expires-At has passed is left out (a server
would delete it at once). Runs offline: no server may hold the data directory."""

R = TypeVar("R")

# An import's records go to a stream's actor in batches, each committed at once (one write):
# at most this many records, or about this many bytes.
BATCH_RECORDS = 256
BATCH_BYTES = 1 << 20


@attrs.frozen
class Summary:
    imported: list[str]
    skipped: list[tuple[str, str]]  # name, why


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "import", help="read a backup file into a data directory", description=DESCRIPTION
    )
    add_data_dir(parser)
    parser.add_argument("file", type=Path, metavar="FILE", help="a file `streams export` wrote")
    parser.add_argument(
        "--replace",
        action="store_true",
        help="delete the data directory's streams that the file holds too, then import them",
    )
    parser.set_defaults(run=main)


def main(args: argparse.Namespace) -> int:
    entries = scan(args.file)

    async def operation(streams: Streams) -> Summary:
        return await restore(streams, args.file, entries, replace=args.replace)

    summary = run(args.data_dir, operation, writing=True)
    for name, why in summary.skipped:
        print(f"streams: skipped {name!r}: {why}", file=sys.stderr)
    print(f"imported {len(summary.imported)} stream(s)", file=sys.stderr)
    return 0


def _items(path: Path) -> Iterator[archive.Entry | View | bytes]:
    try:
        with open(path, "rb") as file:
            yield from archive.read(file)
    except archive.FormatError as error:
        raise CommandError(f"{path}: {error}; nothing was imported") from None
    except OSError as error:
        raise CommandError(f"{path}: {error.strerror or error}") from None


def scan(path: Path) -> list[archive.Entry]:
    """The file's streams, once all of it was read and found complete and well formed."""
    return [item for item in _items(path) if isinstance(item, archive.Entry)]


async def restore(
    streams: Streams, path: Path, entries: list[archive.Entry], *, replace: bool = False
) -> Summary:
    skipped = _expired(entries, time.time())
    wanted = [e for e in entries if e.name not in skipped]
    existing = [e.name for e in wanted if await _exists(streams, e.name)]
    if existing and not replace:
        shown = ", ".join(repr(name) for name in existing[:5])
        more = f" and {len(existing) - 5} more" if len(existing) > 5 else ""
        raise CommandError(
            f"{len(existing)} stream(s) exist already ({shown}{more}); nothing was imported "
            "(--replace deletes them first)"
        )
    for name in reversed(existing):  # forks before their sources
        await _call(streams.delete(name), name, [])
    imported: list[str] = []
    current: archive.Entry | None = None
    batch: list[AppendRequest] = []
    size = 0
    for item in _items(path):
        if isinstance(item, archive.Entry):
            if current is not None:
                await _finish(streams, current, batch, imported)
            current, batch, size = None if item.name in skipped else item, [], 0
            if current is not None and not current.base:  # else created with its base, next
                await _create(streams, current, imported)
        elif isinstance(item, View):
            if current is not None:
                await _create(streams, current, imported, item)
        elif current is not None:
            batch.append(AppendRequest(current.content_type, item, restore=True))
            size += len(item)
            if len(batch) == BATCH_RECORDS or size >= BATCH_BYTES:
                await _call(streams.restore(current.name, batch), current.name, imported)
                batch, size = [], 0
    if current is not None:
        await _finish(streams, current, batch, imported)
    for e in wanted:  # once their forks exist: soft-deleted again
        if e.deleted:
            await _call(streams.delete(e.name), e.name, imported)
    return Summary(imported, list(skipped.items()))


def _expired(entries: list[archive.Entry], now: float) -> dict[str, str]:
    skipped: dict[str, str] = {}
    for e in entries:
        if e.expires_at is not None and e.expires_at <= now:
            skipped[e.name] = "its Expires-At has passed"
        elif e.fork_source in skipped:
            skipped[e.name] = f"it forks {e.fork_source!r}, which is left out"
    return skipped


async def _exists(streams: Streams, name: str) -> bool:
    try:
        await streams.registry.call(name, m.Describe())
    except ProtocolError as error:
        if error.status == 404:
            return False
        raise failure(name, error) from None
    return True


async def _call(call: Awaitable[R], name: str, imported: list[str]) -> R:
    try:
        return await call
    except ProtocolError as error:
        raise _stopped(name, error.detail or error.title, imported) from None


async def _create(
    streams: Streams, e: archive.Entry, imported: list[str], base: View | None = None
) -> None:
    config = StreamConfig(
        e.content_type,
        e.ttl,
        e.expires_at,
        state_validation=e.state_validation,
        state_compaction=e.state_compaction,
    )
    fork = None if e.fork_source is None else Fork(e.fork_source, e.fork_offset)
    creating = streams.create(e.name, CreateRequest(config), fork, base)
    reply = await _call(creating, e.name, imported)
    if reply.status != 201:
        raise _stopped(e.name, "it exists already", imported)


async def _finish(
    streams: Streams, e: archive.Entry, batch: list[AppendRequest], imported: list[str]
) -> None:
    """The last records, then producers, Stream-Seq and closure (one empty record per
    producer, the closer's last), then the stream compared with its export."""
    for producer, (epoch, seq) in e.producers.items():
        if e.closed_by is None or producer != e.closed_by.id:  # the close sets the closer's
            stamp = Producer(producer, epoch, seq)
            batch.append(AppendRequest(None, b"", producer=stamp, restore=True))
    if e.closed or e.stream_seq is not None:
        batch.append(AppendRequest(None, b"", e.closed, e.closed_by, e.stream_seq, restore=True))
    for start in range(0, len(batch), BATCH_RECORDS):
        chunk = batch[start : start + BATCH_RECORDS]
        await _call(streams.restore(e.name, chunk), e.name, imported)
    exported = await _call(streams.registry.call(e.name, m.Export()), e.name, imported)
    found = exported_entry(e.name, exported)
    expected = attrs.evolve(e, deleted=False)  # deleted again once its forks exist
    if found != expected:
        differences = [
            f"{key} {getattr(found, key)!r} (exported {getattr(expected, key)!r})"
            for key in attrs.fields_dict(archive.Entry)
            if getattr(found, key) != getattr(expected, key)
        ]
        raise _stopped(e.name, "differs from its export: " + ", ".join(differences), imported)
    imported.append(e.name)


def _stopped(name: str, why: str, imported: list[str]) -> CommandError:
    return CommandError(
        f"import stopped at stream {name!r}: {why}; the {len(imported)} stream(s) before it "
        "were imported (`streams import --replace` imports them again)"
    )
