"""`streams export`: streams, with their metadata, producers and closure, to a portable file
(streams/cli/archive.py), read through their actors."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import trio

from actors import messages as m
from actors.service import Streams
from state import checkpoint
from streams.cli import archive
from streams.cli.offline import CommandError, add_data_dir, failure, run
from streams.protocol.errors import ProtocolError
from streams.protocol.headers import is_json

READ_BYTES = 1 << 20  # whole records, about this much per actor call

DESCRIPTION = """\
Write streams to a backup file: each stream's configuration, closure, Stream-Seq, producers
and its records in order, so `streams import` gives every stream back with the same offsets.
Without NAMEs, every stream; a named fork brings the streams it forks from. A compacted
State Protocol stream is written as its base (the offset its log starts at, and its state as
of then) and its records after it. Runs offline: no server may hold the data directory."""


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "export", help="write streams to a portable backup file", description=DESCRIPTION
    )
    add_data_dir(parser)
    parser.add_argument(
        "names", nargs="*", metavar="NAME", help="streams to export (default: all of them)"
    )
    parser.add_argument(
        "-o",
        "--output",
        default="-",
        metavar="FILE",
        help="where to write ('-', the default: standard output); a file appears whole or not "
        "at all",
    )
    parser.set_defaults(run=main)


def main(args: argparse.Namespace) -> int:
    def export_to(sink: BinaryIO) -> list[str]:
        async def operation(streams: Streams) -> list[str]:
            return await export(streams, args.names, sink)

        return run(args.data_dir, operation)

    if args.output == "-":
        written = export_to(sys.stdout.buffer)
        sys.stdout.buffer.flush()
    else:
        written = _to_file(Path(args.output), export_to)
    print(f"exported {len(written)} stream(s)", file=sys.stderr)
    return 0


def _to_file(path: Path, export_to: Callable[[BinaryIO], list[str]]) -> list[str]:
    """Written beside `path`, synced, then renamed over it: a failed export leaves no file."""
    temporary = path.with_name(path.name + ".tmp")
    try:
        with open(temporary, "wb") as sink:
            written = export_to(sink)
            sink.flush()
            os.fsync(sink.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    return written


async def export(streams: Streams, names: list[str], sink: BinaryIO) -> list[str]:
    """Writes the streams `names` (all if empty) and their fork sources to `sink`, sources
    before forks; returns the names written."""
    chosen = await _plan(streams, names)
    sink.write(archive.header(time.time()))
    for name in chosen:
        exported = await _export(streams, name)
        sink.write(archive.stream_line(entry(name, exported)))
        if exported.snapshot.base:
            await _base(streams, name, sink)
        written = await _records(streams, name, exported, sink)
        if written != exported.records:  # nobody else writes: the log does not hold its state
            raise CommandError(
                f"stream {name!r}: {written} records read, its state counts {exported.records}"
            )
    sink.write(archive.trailer(len(chosen)))
    return chosen


async def _export(streams: Streams, name: str) -> m.Exported:
    try:
        exported: m.Exported = await streams.registry.call(name, m.Export())
    except ProtocolError as error:
        raise failure(name, error) from None
    return exported


async def _plan(streams: Streams, wanted: list[str]) -> list[str]:
    """The streams to export and their sources, each fork after its source."""
    names = wanted or await streams.registry.storage.names()
    found: dict[str, int] = {}  # name -> fork depth
    queue = [(name, "named" if wanted else "stored") for name in names]
    while queue:
        name, why = queue.pop()
        if name in found:
            continue
        try:
            snapshot: m.Snapshot = await streams.registry.call(name, m.Describe())
        except ProtocolError as error:
            if error.status != 404:
                raise failure(name, error) from None
            if why == "stored":  # a create that never committed: no stream
                continue
            raise CommandError(f"no stream {name!r}" if why == "named" else why) from None
        source = snapshot.config.fork_source
        found[name] = snapshot.config.fork_depth
        if source is not None:
            queue.append((source, f"stream {name!r} forks {source!r}, which is missing"))
    return sorted(found, key=lambda name: (found[name], name))


async def _base(streams: Streams, name: str, sink: BinaryIO) -> None:
    """A compacted stream's base: the view its log starts with, as JSON lines."""
    try:
        incarnation, blob = await streams.registry.call(name, m.BaseView())
    except ProtocolError as error:
        raise failure(name, error) from None
    unbounded = sys.maxsize  # a view the server kept: its bounds were checked then
    view = await trio.to_thread.run_sync(checkpoint.decode, blob, incarnation, unbounded, unbounded)
    if view is None:
        raise CommandError(f"stream {name!r}: its base record holds no usable view")
    sink.writelines(archive.base_lines(view))


def entry(name: str, exported: m.Exported) -> archive.Entry:
    snapshot = exported.snapshot
    config = snapshot.config
    return archive.Entry(
        name,
        config.content_type,
        config.ttl,
        config.expires_at,
        config.fork_source,
        config.fork_offset,
        config.state_validation,
        config.state_compaction,
        snapshot.closed,
        exported.closed_by,
        exported.stream_seq,
        exported.producers,
        snapshot.soft_deleted,
        snapshot.tail,
        exported.records,
        snapshot.base,
    )


async def _records(streams: Streams, name: str, exported: m.Exported, sink: BinaryIO) -> int:
    """The records its log holds (from its fork offset, or its base), one line each:
    internal reads (a soft-deleted stream is read too, and no TTL slides)."""
    snapshot = exported.snapshot
    json_stream = is_json(snapshot.config.content_type)
    position, count = max(snapshot.config.fork_offset, snapshot.base), 0
    while position < snapshot.tail:
        read = await streams.read(name, position, READ_BYTES, internal=True, ends=True)
        start = position
        for end in read.ends:
            data = read.data[start - position : end - position]
            sink.write(archive.record_line(data, json_stream))
            start = end
            count += 1
        if read.end <= position or start != read.end:
            raise CommandError(f"stream {name!r}: a read at {position} did not end at a record")
        position = read.end
    return count
