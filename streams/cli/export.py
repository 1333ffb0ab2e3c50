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

import attrs

from actors import messages as m
from actors.service import Streams
from streams.cli import archive
from streams.cli.offline import CommandError, add_data_dir, failure, run
from streams.protocol.errors import ProtocolError
from streams.protocol.headers import is_json

READ_BYTES = 1 << 20  # whole records, about this much per actor call

DESCRIPTION = """\
Write streams to a backup file: each stream's configuration, closure, Stream-Seq, producers
and its records in order, so `streams import` gives every stream back with the same offsets.
Without NAMEs, every stream; a named fork brings the streams it forks from. A compacted
State Protocol stream cannot be given its offsets back, so it is refused (--skip-compacted
leaves it and its forks out). Runs offline: no server may hold the data directory."""


@attrs.frozen
class Summary:
    written: list[str]
    skipped: list[tuple[str, str]]  # name, why


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
    parser.add_argument(
        "--skip-compacted",
        action="store_true",
        help="leave out compacted streams and their forks (named on stderr) instead of failing",
    )
    parser.set_defaults(run=main)


def main(args: argparse.Namespace) -> int:
    def export_to(sink: BinaryIO) -> Summary:
        async def operation(streams: Streams) -> Summary:
            return await export(streams, args.names, sink, skip_compacted=args.skip_compacted)

        return run(args.data_dir, operation)

    if args.output == "-":
        summary = export_to(sys.stdout.buffer)
        sys.stdout.buffer.flush()
    else:
        summary = _to_file(Path(args.output), export_to)
    for name, why in summary.skipped:
        print(f"streams: skipped {name!r}: {why}", file=sys.stderr)
    print(f"exported {len(summary.written)} stream(s)", file=sys.stderr)
    return 0


def _to_file(path: Path, export_to: Callable[[BinaryIO], Summary]) -> Summary:
    """Written beside `path`, synced, then renamed over it: a failed export leaves no file."""
    temporary = path.with_name(path.name + ".tmp")
    try:
        with open(temporary, "wb") as sink:
            summary = export_to(sink)
            sink.flush()
            os.fsync(sink.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    return summary


@attrs.frozen
class Planned:
    """What choosing and ordering a stream takes (its full state is asked again when it is
    written: a plan of every stream stays small)."""

    name: str
    depth: int
    base: int
    source: str | None


async def export(
    streams: Streams, names: list[str], sink: BinaryIO, *, skip_compacted: bool = False
) -> Summary:
    """Writes the streams `names` (all if empty) and their fork sources to `sink`, sources
    before forks; refuses a compacted stream unless `skip_compacted`."""
    chosen, skipped = _compacted_out(await _plan(streams, names), skip_compacted)
    sink.write(archive.header(time.time()))
    for name in chosen:
        exported = await _export(streams, name)
        sink.write(archive.stream_line(entry(name, exported)))
        written = await _records(streams, name, exported, sink)
        if written != exported.records:  # nobody else writes: the log does not hold its state
            raise CommandError(
                f"stream {name!r}: {written} records read, its state counts {exported.records}"
            )
    sink.write(archive.trailer(len(chosen)))
    return Summary(chosen, skipped)


async def _export(streams: Streams, name: str) -> m.Exported:
    try:
        exported: m.Exported = await streams.registry.call(name, m.Export())
    except ProtocolError as error:
        raise failure(name, error) from None
    return exported


async def _plan(streams: Streams, wanted: list[str]) -> list[Planned]:
    """The streams to export and their sources, each fork after its source."""
    names = wanted or await streams.registry.storage.names()
    found: dict[str, Planned] = {}
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
        found[name] = Planned(name, snapshot.config.fork_depth, snapshot.base, source)
        if source is not None:
            queue.append((source, f"stream {name!r} forks {source!r}, which is missing"))
    return sorted(found.values(), key=lambda planned: (planned.depth, planned.name))


def _compacted_out(planned: list[Planned], skip: bool) -> tuple[list[str], list[tuple[str, str]]]:
    chosen, skipped, left_out = [], [], set()
    for stream in planned:
        name, base, source = stream.name, stream.base, stream.source
        if base:
            why = (
                f"compacted: its history before offset {base} is gone, so an import could "
                "not give it its offsets back"
            )
            if not skip:
                raise CommandError(
                    f"stream {name!r} is {why}; pass --skip-compacted to leave it and its forks out"
                )
        elif source in left_out:
            why = f"it forks {source!r}, which is left out"
        else:
            chosen.append(name)
            continue
        left_out.add(name)
        skipped.append((name, why))
    return chosen, skipped


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
    )


async def _records(streams: Streams, name: str, exported: m.Exported, sink: BinaryIO) -> int:
    """The stream's own records, one line each: internal reads (a soft-deleted stream is
    read too, and no TTL slides)."""
    snapshot = exported.snapshot
    json_stream = is_json(snapshot.config.content_type)
    position, count = snapshot.config.fork_offset, 0
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
