"""A throwaway PostgreSQL server for the tests: Debian's binaries (tests/run.sh installs them),
`initdb` in a temporary directory, listening on a Unix socket only (no TCP), stopped and
removed at the end of the session. Each test gets a database of its own.

Without the binaries the tests that need them skip, except in CI (`CI` set), where they fail:
CI must run them.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import attrs
import psycopg
import pytest

from benchmarks.pg import binaries

SERVER_SETTINGS = (
    "listen_addresses=''",  # no TCP at all (pg_ctl passes -o through a shell)
    "fsync=off",  # a test cluster survives no power loss; nothing here tests one
    "full_page_writes=off",
    "max_connections=200",
)


def unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must run the PostgreSQL tests (tests/run.sh installs them)")
    pytest.skip(reason)


@attrs.define
class Cluster:
    """A running server: its socket directory, and how to run its programs as its owner."""

    root: Path
    bindir: Path
    user: str | None  # run as this user (the server refuses to run as root), or as we are
    _databases: Iterator[int] = attrs.field(factory=lambda: itertools.count(1))

    def run(self, program: str, *args: str) -> None:
        owner = pwd.getpwnam(self.user) if self.user else None
        subprocess.run(
            [str(self.bindir / program), *args],
            check=True,
            capture_output=True,
            user=owner.pw_uid if owner else None,
            group=owner.pw_gid if owner else None,
            extra_groups=[] if owner else None,
        )

    @property
    def data(self) -> Path:
        return self.root / "data"

    def start(self) -> None:
        """Start the server and wait until it accepts connections (on the Unix socket only)."""
        options = " ".join(f"-c {setting}" for setting in SERVER_SETTINGS)
        self.run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "log"), "-w", "-s",
                 "start", "-o", f"{options} -k {self.root}")  # fmt: skip

    def stop(self) -> None:
        """A fast shutdown: open transactions rolled back, every client disconnected, a
        checkpoint written; waits until the server is gone."""
        self.run("pg_ctl", "-D", str(self.data), "-s", "-w", "-m", "fast", "stop")

    def restart(self) -> None:
        """What an operator's restart does to the servers connected to the database.
        Blocking: Trio tests run it in a worker thread."""
        self.stop()
        self.start()

    def url(self, database: str = "postgres") -> str:
        return f"host={self.root} dbname={database} user=postgres"

    def database(self) -> str:
        """A new, empty database's connection string."""
        name = f"test_{next(self._databases)}"
        with psycopg.connect(self.url(), autocommit=True) as connection:
            connection.execute(f"CREATE DATABASE {name}")
        return self.url(name)


@contextlib.contextmanager
def cluster() -> Iterator[Cluster]:
    bindir = binaries()
    if bindir is None:
        unavailable("PostgreSQL is not installed (apt-get install postgresql)")
        raise AssertionError("unreachable")
    user = None
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            unavailable("running as root, and there is no `postgres` user to run the server")
        user = "postgres"
    root = Path(tempfile.mkdtemp(prefix="ds-pg-"))
    if user is not None:
        owner = pwd.getpwnam(user)
        os.chown(root, owner.pw_uid, owner.pw_gid)
    server = Cluster(root, bindir, user)
    try:
        server.run("initdb", "-D", str(server.data), "-U", "postgres", "--auth=trust", "-N",
                   "-E", "UTF8", "--locale=C")  # fmt: skip
        server.start()
        try:
            yield server
        finally:
            server.run("pg_ctl", "-D", str(server.data), "-s", "-m", "immediate", "stop")
    finally:
        shutil.rmtree(root, ignore_errors=True)
