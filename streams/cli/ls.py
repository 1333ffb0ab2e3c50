"""`streams ls`: the streams of a data directory, as their actors describe them."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from actors import messages as m
from actors.service import Streams
from streams.cli.offline import add_data_dir, run
from streams.protocol import offsets
from streams.protocol.errors import ProtocolError
from streams.protocol.headers import format_expires_at

DESCRIPTION = """\
List the streams of a data directory: size (the next offset, in bytes), content type,
status (open, closed, deleted: soft-deleted while forks read it; damaged: run streams fsck),
expiry (TTL, or Expires-At), fork source and offset, and State Protocol settings. Runs
offline: it takes the data directory's lock, so no server may be running on it."""

COLUMNS = ("NAME", "BYTES", "CONTENT-TYPE", "STATUS", "EXPIRY", "FORK-OF", "STATE")


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "ls", help="list the streams in a data directory", description=DESCRIPTION
    )
    add_data_dir(parser)
    parser.add_argument(
        "--json", action="store_true", help="one JSON array of objects, all fields included"
    )
    parser.set_defaults(run=main)


def main(args: argparse.Namespace) -> int:
    found = run(args.data_dir, listing)
    if args.json:
        print(json.dumps(found, ensure_ascii=False, indent=1))
    else:
        print_table([COLUMNS, *(row(stream) for stream in found)])
    return 0


async def listing(streams: Streams) -> list[dict[str, Any]]:
    now = time.time()  # the actors' clock is stopped (`stopped_clock`): nothing expires
    found = []
    for name in sorted(await streams.registry.storage.names()):
        try:
            exported: m.Exported = await streams.registry.call(name, m.Export())
        except ProtocolError as error:
            if error.status == 404:
                continue  # a create that never committed: no stream
            found.append({"name": name, "status": "damaged", "error": error.detail})
            continue
        found.append(describe(name, exported, now))
    return found


def describe(name: str, exported: m.Exported, now: float) -> dict[str, Any]:
    snapshot = exported.snapshot
    config = snapshot.config
    status = "deleted" if snapshot.soft_deleted else "closed" if snapshot.closed else "open"
    fork = None
    if config.fork_source is not None:
        fork = {"source": config.fork_source, "offset": offsets.encode(config.fork_offset)}
    expires = config.expires_at
    return {
        "name": name,
        "bytes": snapshot.tail,
        "next_offset": offsets.encode(snapshot.tail),
        "content_type": config.content_type,
        "status": status,
        "closed": snapshot.closed,
        "deleted": snapshot.soft_deleted,
        "ttl": config.ttl,
        "expires_at": None if expires is None else format_expires_at(expires),
        "expired": expires is not None and expires <= now,  # a server would delete it
        "fork": fork,
        "state_validation": config.state_validation,
        "state_compaction": config.state_compaction,
        "state_base": offsets.encode(snapshot.base) if snapshot.base else None,
        "records": exported.records,
        "producers": len(exported.producers),
    }


def row(stream: dict[str, Any]) -> tuple[str, ...]:
    name = shown(stream["name"])
    if stream["status"] == "damaged":
        return (name, "-", "-", "damaged", "-", "-", "-")
    expiry = "-"
    if stream["ttl"] is not None:
        expiry = f"ttl {stream['ttl']}s"
    elif stream["expires_at"] is not None:
        expiry = stream["expires_at"] + (" (passed)" if stream["expired"] else "")
    fork = stream["fork"]
    state = [
        f"{key}={stream[f'state_{key}']}"
        for key in ("validation", "compaction", "base")
        if stream[f"state_{key}"] is not None
    ]
    return (
        name,
        str(stream["bytes"]),
        stream["content_type"],
        stream["status"],
        expiry,
        "-" if fork is None else f"{shown(fork['source'])}@{fork['offset']}",
        " ".join(state) or "-",
    )


def shown(name: str) -> str:
    """A name as it is, unless spaces or control characters would blur the table."""
    plain = name.isprintable() and not any(c.isspace() for c in name)
    return name if plain else repr(name)


def print_table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(r, widths, strict=True)).rstrip())
