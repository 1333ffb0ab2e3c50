"""Command line (`streams ...` or `python -m streams ...`): `streams serve [--config PATH]`,
`streams fsck DATA_DIR [--repair]`, and the offline commands `streams ls`, `streams export`,
`streams import` (streams/cli/)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from actors.storage import DataDirLocked
from actors.storage.fsck import check
from streams import serve
from streams.cli import export, ls, restore
from streams.cli.offline import IN_USE, CommandError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="streams")
    commands = parser.add_subparsers(dest="command", required=True)
    fsck = commands.add_parser(
        "fsck",
        help="check every log in a data directory",
        description="Check every log in a data directory: ok, torn (cut on next open) or "
        "corrupt (damaged before its last record). Changes nothing without --repair. "
        "Runs offline: no server may hold the data directory.",
    )
    fsck.add_argument("data_dir", type=Path, metavar="DATA_DIR", help="the data directory")
    fsck.add_argument(
        "--repair", action="store_true", help="cut damaged logs to the last good record"
    )
    ls.add_parser(commands)
    export.add_parser(commands)
    restore.add_parser(commands)
    serve.add_parser(commands)
    args = parser.parse_args(argv)
    if args.command == "serve":
        return serve.main(args)
    try:
        if args.command != "fsck":
            return int(args.run(args))
        damaged = 0
        for report in check(args.data_dir, repair=args.repair):
            print(report.line())
            damaged += report.verdict != "ok"
    except CommandError as error:
        print(f"streams: {error}", file=sys.stderr)
        return 1
    except DataDirLocked:
        print(f"streams: {args.data_dir}: {IN_USE}", file=sys.stderr)
        return 1
    print(f"{damaged} damaged log(s){' repaired' if args.repair and damaged else ''}")
    return 1 if damaged and not args.repair else 0


if __name__ == "__main__":
    sys.exit(main())
