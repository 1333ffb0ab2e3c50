"""Command line: `streams serve [--config PATH]`, `streams fsck DATA_DIR [--repair]` (or
`python -m streams ...`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from actors.storage.fsck import check
from streams import serve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="streams")
    commands = parser.add_subparsers(dest="command", required=True)
    fsck = commands.add_parser("fsck", help="check every log in a data directory")
    fsck.add_argument("data_dir", type=Path)
    fsck.add_argument(
        "--repair", action="store_true", help="cut damaged logs to the last good record"
    )
    serve.add_parser(commands)
    args = parser.parse_args(argv)
    if args.command == "serve":
        return serve.main(args)
    damaged = 0
    for report in check(args.data_dir, repair=args.repair):
        print(report.line())
        damaged += report.verdict != "ok"
    print(f"{damaged} damaged log(s){' repaired' if args.repair and damaged else ''}")
    return 1 if damaged and not args.repair else 0


if __name__ == "__main__":
    sys.exit(main())
