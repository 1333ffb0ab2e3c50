"""A throwaway PostgreSQL cluster for the scale benchmark (issue 16), with the settings a user
runs: fsync on and synchronous_commit on (PostgreSQL's defaults), not the test cluster's
fsync off (tests/postgres.py, which imports pytest, so the benchmark has its own). Debian's
binaries, `initdb` in a temporary directory, a Unix socket only (no TCP), stopped and removed
at the end; and pgbench, to measure the commits/s of our transaction shape alone."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import psycopg

SERVER_SETTINGS = (
    "listen_addresses=''",  # a Unix socket only
    "max_connections=300",  # pools of 3 server processes, pgbench's clients, the monitor
)


def binaries() -> Path | None:
    """The newest installed PostgreSQL's bin directory (Debian: /usr/lib/postgresql/N/bin)."""
    found = glob.glob("/usr/lib/postgresql/*/bin/initdb")
    if found:
        newest = max(found, key=lambda path: int(Path(path).parent.parent.name))
        return Path(newest).parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


@dataclass
class Cluster:
    """A running server: its directory (data, socket, log) and its programs' owner."""

    root: Path
    bindir: Path
    user: str | None  # the server refuses to run as root: then as `postgres`

    @property
    def data(self) -> Path:
        return self.root / "data"

    def run(
        self, program: str, *args: str, check: bool = True, env: dict[str, str] | None = None
    ) -> str:
        owner = pwd.getpwnam(self.user) if self.user else None
        done = subprocess.run(
            [str(self.bindir / program), *args],
            check=check,
            env={**os.environ, **env} if env else None,
            capture_output=True,
            text=True,
            user=owner.pw_uid if owner else None,
            group=owner.pw_gid if owner else None,
            extra_groups=[] if owner else None,
        )
        return done.stdout + done.stderr

    def url(self, database: str = "postgres", options: str = "") -> str:
        """A libpq connection string; `options` sets server settings for its sessions, e.g.
        "-c synchronous_commit=off"."""
        extra = f" options='{options}'" if options else ""
        return f"host={self.root} dbname={database} user=postgres{extra}"

    def create_database(self, name: str) -> str:
        with psycopg.connect(self.url(), autocommit=True) as connection:
            connection.execute(f"DROP DATABASE IF EXISTS {name}".encode())
            connection.execute(f"CREATE DATABASE {name}".encode())
        return self.url(name)

    def drop_database(self, name: str) -> None:
        with psycopg.connect(self.url(), autocommit=True) as connection:
            connection.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)".encode())

    def postmaster(self) -> int:
        """The server's first process: every backend is its child."""
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def commits(self, database: str) -> int:
        """Transactions committed in `database` so far (pg_stat_database). A busy backend
        reports its own at most once a second, an idle one 10 s later or when it exits: so
        read it before the server starts and after it stopped."""
        with psycopg.connect(self.url(database), autocommit=True) as connection:
            row = connection.execute(
                "SELECT xact_commit FROM pg_stat_database WHERE datname = %s", (database,)
            ).fetchone()
        return int(row[0]) if row else 0

    def version(self) -> str:
        return self.run("postgres", "--version").strip()

    def fdatasync_us(self) -> float | None:
        """µs per fdatasync of one 8 kB write on the cluster's disk (pg_test_fsync, 1 s per
        test; it runs all its tests, about 15 s): the floor of a commit's latency."""
        output = self.run("pg_test_fsync", "-s", "1", "-f", str(self.root / "fsync.tmp"))
        found = re.search(r"^\s+fdatasync\s+[\d.]+ ops/sec\s+(\d+) usecs/op", output, re.M)
        return float(found.group(1)) if found else None

    def pgbench(
        self, database: str, script: str, clients: int, seconds: float, options: str = ""
    ) -> float:
        """Transactions/s of `script` at `clients` connections for `seconds` (pgbench, two
        threads); `options` as in `url`."""
        path = self.root / "bench.sql"
        path.write_text(script)
        os.chmod(path, 0o644)
        output = self.run(
            "pgbench", "-n", "-h", str(self.root), "-U", "postgres", "-M", "prepared",
            "-c", str(clients), "-j", str(min(2, clients)), "-T", str(max(1, round(seconds))),
            "-f", str(path), database,
            env={"PGOPTIONS": options},
        )  # fmt: skip
        return tps(output)


@contextlib.contextmanager
def cluster(settings: Sequence[str] = ()) -> Iterator[Cluster]:
    """A started cluster with PostgreSQL's defaults but for SERVER_SETTINGS and `settings`."""
    bindir = binaries()
    if bindir is None:
        raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql)")
    user = None
    if os.geteuid() == 0:
        pwd.getpwnam("postgres")  # Debian's package creates it
        user = "postgres"
    root = Path(tempfile.mkdtemp(prefix="ds-bench-pg-"))
    if user is not None:
        owner = pwd.getpwnam(user)
        os.chown(root, owner.pw_uid, owner.pw_gid)
    server = Cluster(root, bindir, user)
    try:
        server.run("initdb", "-D", str(server.data), "-U", "postgres", "--auth=trust",
                   "-E", "UTF8", "--locale=C")  # fmt: skip
        options = " ".join(f"-c {setting}" for setting in (*SERVER_SETTINGS, *settings))
        server.run("pg_ctl", "-D", str(server.data), "-l", str(root / "log"), "-w", "-s",
                   "start", "-o", f"{options} -k {root}")  # fmt: skip
        try:
            yield server
        finally:
            server.run("pg_ctl", "-D", str(server.data), "-s", "-m", "fast", "stop", check=False)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def tps(output: str) -> float:
    """pgbench's transactions/s (PostgreSQL 14+: "tps = N (without initial connection time)")."""
    found = re.search(r"^tps = ([\d.]+)", output, re.MULTILINE)
    if found is None:
        raise RuntimeError(f"pgbench printed no tps:\n{output[-2000:]}")
    return float(found.group(1))


# The notification in a transaction of its own after the commit, not waiting for its flush
# (the other way to notify, measured beside ours: it holds the notify lock only briefly).
NOTIFY_AFTER = (
    "BEGIN;\nSET LOCAL synchronous_commit = off;\n"
    "SELECT pg_notify('ds_tail', :s || ':0');\nCOMMIT;\n"
)


def shape(streams: int, size: int, notify: bool = True) -> str:
    """A pgbench script of the transaction an append commits in (actors/storage/pg_log.py):
    lock a random stream's row (and fold), then one statement that moves its tail and last
    access, inserts one record of `size` bytes at it and notifies the other processes, and
    commit. Without `notify`: the same without the NOTIFY."""
    last = "pg_notify('ds_tail', :s || ':0')" if notify else "id"
    lines = [
        f"\\set s random(1, {streams})",
        "BEGIN;",
        "SELECT tail, generation, accessed_at FROM ds_streams WHERE id = :s FOR UPDATE;",
        f"WITH moved AS (UPDATE ds_streams SET tail = tail + {size + 16},"
        " accessed_at = GREATEST(accessed_at, extract(epoch FROM now()))"
        " WHERE id = :s RETURNING id, tail),"
        " added AS (INSERT INTO ds_records (stream, at, meta, data) SELECT id, tail,"
        f" '\\xa1616b6161'::bytea, convert_to(repeat('x', {size}), 'UTF8') FROM moved)"
        f" SELECT {last} FROM moved;",
        "COMMIT;",
    ]
    return "\n".join(lines) + "\n"
