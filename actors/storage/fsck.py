"""Offline check of a data directory: which logs are whole, torn, or corrupt.

Run it while no server owns the directory (it takes the same lock). Without `repair`
nothing changes; with it, each damaged log is cut back to its last good record.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import attrs

from actors.storage import framing
from actors.storage.files import FileStorage


@attrs.frozen
class LogReport:
    path: Path
    name: str | None
    size: int
    valid_end: int
    records: int
    verdict: str  # "ok", "torn" (cut on next open) or "corrupt" (needs --repair)

    def line(self) -> str:
        what = repr(self.name) if self.name is not None else "<unreadable name>"
        detail = "" if self.verdict == "ok" else f", valid to byte {self.valid_end} of {self.size}"
        return f"{self.verdict:7} {what}: {self.records} records{detail} ({self.path.name})"


def check(root: Path, repair: bool = False) -> Iterator[LogReport]:
    storage = FileStorage(root, durable=True)  # holds the lock while we look
    try:
        for path in sorted((root / "streams").glob("*/*.log")):
            yield _check_one(storage, path, repair)
    finally:
        storage.close()


def _check_one(storage: FileStorage, path: Path, repair: bool) -> LogReport:
    buffer = path.read_bytes()
    records, end, verdict = framing.verdict(buffer)
    meta = storage._create_meta(path)
    report = LogReport(path, meta["name"] if meta else None, len(buffer), end, records, verdict)
    if repair and verdict != "ok":
        with open(path, "r+b") as file:
            file.truncate(end)
            os.fsync(file.fileno())
    return report
