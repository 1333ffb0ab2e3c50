"""The system calls file storage makes, as seams for fault-injection tests, and the small
writes built on them. Callers look each one up here at call time (`file_io.pwrite(...)`), so a
test that replaces one here reaches every caller (a read-only data directory cannot be made by
chmod for root)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

# The system calls a commit makes, the one that opens files, and recovery's reads.
pwrite = os.pwrite
fdatasync = os.fdatasync
open_file = os.open
pread = os.pread

# What opening for writing answers in a read-only data directory (mount, mode, attribute).
WRITE_REFUSED = (errno.EROFS, errno.EACCES, errno.EPERM)


def open_writable(path: str | Path, create: int = 0) -> tuple[int, int]:
    """A descriptor open for reading and writing or, where writing is refused, for reading
    only; with the errno of the refusal (0 if none)."""
    try:
        return open_file(path, os.O_RDWR | create, 0o644), 0
    except OSError as error:
        if error.errno not in WRITE_REFUSED:
            raise
        return open_file(path, os.O_RDONLY), error.errno


def fsync_dir(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes, at: int) -> int:
    """All of `data` at `at` (a write may take part of it); returns its length."""
    view = memoryview(data)
    written = 0
    while written < len(view):
        written += pwrite(fd, view[written:], at + written)
    return written


def write_file(path: Path, data: bytes, durable: bool) -> None:
    """A small file written whole, through the same seams as a log commit."""
    fd = open_file(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        write_all(fd, data, 0)
        if durable:
            fdatasync(fd)
    finally:
        os.close(fd)
