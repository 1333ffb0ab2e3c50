"""`DS_STORAGE__MODE=postgres` with one server process: the schema and its version, start-up
refusals as one line, /readyz reporting the database, streams outliving the process.
The storage contract (tests/test_storage_contract.py) and the conformance suite
(tests/test_conformance.py) run against it too."""

from __future__ import annotations

import contextlib
import http.client
import itertools
import subprocess
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psycopg
import pytest

from actors.storage import Superseded, pg_schema
from actors.storage.postgres import PostgresStorage
from streams.app import EXIT_DATA_DIR_LOCKED
from streams.config import ConfigError, Settings
from streams.protocol import records
from streams.protocol.records import AppendRecord
from tests.haproxy import running_haproxy
from tests.postgres import Cluster
from tests.server import free_port, hypercorn_command, running_server
from tests.stored import stored_data
from tests.test_storage_contract import create

BASE = "/v1/stream"


def postgres_env(url: str) -> dict[str, str]:
    return {"DS_STORAGE__MODE": "postgres", "DS_STORAGE__POSTGRES_URL": url}


@contextlib.contextmanager
def two_servers(
    tmp_path: Path, env: dict[str, str], timeout: float | None = 5.0
) -> Iterator[tuple[httpx.Client, httpx.Client]]:
    """Two server processes on one database (in `env`), a client of each."""
    for server in ("a", "b"):
        (tmp_path / server).mkdir()  # each one's log; neither has a data directory
    with (
        running_server(tmp_path / "a" / "data", env) as first_url,
        running_server(tmp_path / "b" / "data", env) as second_url,
        httpx.Client(base_url=first_url, timeout=timeout) as one,
        httpx.Client(base_url=second_url, timeout=timeout) as two,
    ):
        yield one, two


def serve_until_exit(tmp_path: Path, url: str) -> subprocess.CompletedProcess[str]:
    """The server on `url`, run to its own exit (bounded by the timeout)."""
    return subprocess.run(
        hypercorn_command(free_port()),
        env={"DS_STORAGE__DATA_DIR": str(tmp_path / "data"), "PATH": "", **postgres_env(url)},
        capture_output=True,
        text=True,
        timeout=60,
    )


def schema_version(url: str) -> int:
    with psycopg.connect(url) as connection:
        row = connection.execute("SELECT version FROM ds_schema").fetchone()
    assert row is not None
    return int(row[0])


def test_postgres_mode_needs_a_url() -> None:
    with pytest.raises(ConfigError, match=r"^DS_STORAGE__MODE \(environment\): postgres needs"):
        Settings.from_env({"DS_STORAGE__MODE": "postgres"})
    with pytest.raises(ConfigError, match="POOL_MIN must not exceed"):
        Settings.from_env({**postgres_env("host=/x"), "DS_STORAGE__POSTGRES_POOL_MIN": "11"})
    settings = Settings.from_env(postgres_env("host=/x password=secret"))
    assert "secret" not in repr(settings)


def test_the_schema_is_created_once_and_versioned(postgres_url: str) -> None:
    storage = PostgresStorage.connect(postgres_url)
    storage.close()
    assert schema_version(postgres_url) == pg_schema.VERSION
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        assert pg_schema.migrate(connection) == pg_schema.VERSION  # nothing left to do
    assert schema_version(postgres_url) == pg_schema.VERSION


def test_processes_starting_together_migrate_once(postgres_cluster: Cluster) -> None:
    """`hypercorn --workers 2` starts its processes together on a new database: each
    migrates, and the advisory lock makes all but the first find the schema made (without
    it, concurrent CREATE TABLEs fail on the catalog's unique keys)."""
    for _ in range(2):  # new databases: the race is at creation
        url = postgres_cluster.database()
        ready = threading.Barrier(4)

        def start(url: str, ready: threading.Barrier) -> int:
            with psycopg.connect(url, autocommit=True) as connection:
                ready.wait(10)
                return pg_schema.migrate(connection)

        with ThreadPoolExecutor(4) as pool:
            found = sorted(pool.map(start, [url] * 4, [ready] * 4))
        assert found == [0] + [pg_schema.VERSION] * 3
        assert schema_version(url) == pg_schema.VERSION


def test_a_newer_schema_refuses_to_start_with_one_line(tmp_path: Path, postgres_url: str) -> None:
    PostgresStorage.connect(postgres_url).close()
    with psycopg.connect(postgres_url) as connection:
        connection.execute("UPDATE ds_schema SET version = %s", (pg_schema.VERSION + 1,))
    completed = serve_until_exit(tmp_path, postgres_url)
    assert completed.returncode == EXIT_DATA_DIR_LOCKED
    lines = [line for line in completed.stderr.splitlines() if "schema" in line]
    assert len(lines) == 1, completed.stderr
    assert f"version {pg_schema.VERSION + 1}, newer than this server's" in lines[0]
    assert schema_version(postgres_url) == pg_schema.VERSION + 1  # left as it was


def test_an_unreachable_database_refuses_to_start(tmp_path: Path) -> None:
    url = f"host={tmp_path / 'nowhere'} dbname=postgres user=postgres"
    completed = serve_until_exit(tmp_path, url)
    assert completed.returncode == EXIT_DATA_DIR_LOCKED
    assert "cannot use the database (DS_STORAGE__POSTGRES_URL)" in completed.stderr


def test_readyz_reports_the_database(
    tmp_path: Path, postgres_cluster: Cluster, postgres_url: str
) -> None:
    with running_server(tmp_path / "data", postgres_env(postgres_url)) as base_url:
        assert httpx.get(f"{base_url}/readyz").status_code == 200
        database = postgres_url.split("dbname=")[1].split()[0]
        with psycopg.connect(postgres_cluster.url(), autocommit=True) as connection:
            connection.execute(f"DROP DATABASE {database} WITH (FORCE)")
        response = httpx.get(f"{base_url}/readyz")
        assert response.status_code == 503
        assert response.text.startswith("not ready: database unavailable")


def test_streams_and_producers_outlive_the_process(tmp_path: Path, postgres_url: str) -> None:
    env = postgres_env(postgres_url)
    text = {"Content-Type": "text/plain"}
    producer = {**text, "Producer-Id": "p", "Producer-Epoch": "0", "Producer-Seq": "0"}
    with running_server(tmp_path / "data", env) as base_url, httpx.Client(base_url=base_url) as c:
        assert c.put(f"{BASE}/s", headers=text).status_code == 201
        assert c.post(f"{BASE}/s", content=b"one", headers=producer).status_code == 200
        assert c.post(f"{BASE}/s", content=b"two", headers=text).status_code == 204
    # Nothing on disk in this mode: subscriptions and their signing keys are in the database.
    assert not (tmp_path / "data").exists() or not list((tmp_path / "data").iterdir())
    with running_server(tmp_path / "data", env) as base_url, httpx.Client(base_url=base_url) as c:
        retried = c.post(f"{BASE}/s", content=b"one", headers=producer)
        assert retried.status_code == 204  # a duplicate: not appended again
        read = c.get(f"{BASE}/s", params={"offset": "-1"})
        assert read.content == b"onetwo"
        metrics = c.get("/metrics").text
        assert "durable_streams_streams_on_disk 1.0" in metrics


async def test_a_second_writer_fails_its_commit_and_writes_nothing(postgres_url: str) -> None:
    """Until the commit path re-reads the tail under the row lock (docs/scaling.md, step 2),
    a log whose stream another writer moved refuses to commit rather than interleave."""
    first, second = PostgresStorage.connect(postgres_url), PostgresStorage.connect(postgres_url)
    try:
        log = await first.create("s")
        log.stage(*records.encode(create()))
        await log.commit()
        other = await second.open("s", lambda *_: None)
        assert other is not None
        log.stage(*records.encode(AppendRecord(2.0, b"first")))
        await log.commit()
        other.stage(*records.encode(AppendRecord(3.0, b"second")))
        with pytest.raises(Superseded):
            await other.commit()
        assert await stored_data(first, "s") == [b"created", b"first"]
    finally:
        first.close()
        second.close()


def test_two_server_processes_interleave_appends_on_one_database(
    tmp_path: Path, postgres_url: str
) -> None:
    """Two servers on one database, as `hypercorn --workers 2` or two hosts would run: each
    append goes to one and its retry to the other, writers in threads so that both serve at
    once. Every message is stored once, ending where its 200 said, each producer in order."""
    env = postgres_env(postgres_url)
    text = {"Content-Type": "text/plain"}
    with two_servers(tmp_path, env) as (one, two):
        assert one.put(f"{BASE}/s", headers=text).status_code == 201
        acknowledged: dict[bytes, int] = {}

        def writer(index: int) -> None:
            with httpx.Client(base_url=one.base_url) as a, httpx.Client(base_url=two.base_url) as b:
                for seq in range(10):
                    body = b"<w%d:%02d>" % (index, seq)
                    headers = {**text, "Producer-Id": f"w{index}", "Producer-Epoch": "0"}
                    headers["Producer-Seq"] = str(seq)
                    first, retry = (a, b) if (index + seq) % 2 else (b, a)
                    reply = first.post(f"{BASE}/s", content=body, headers=headers)
                    assert reply.status_code == 200, reply.text
                    offset = reply.headers["Stream-Next-Offset"]
                    acknowledged[body] = int(offset.split("_")[1])
                    assert retry.post(f"{BASE}/s", content=body, headers=headers).status_code == 204

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(writer, range(4)))
        data = one.get(f"{BASE}/s", params={"offset": "-1"}).content
        assert two.get(f"{BASE}/s", params={"offset": "-1"}).content == data
    assert len(data) == sum(len(body) for body in acknowledged) and len(acknowledged) == 40
    for body, offset in acknowledged.items():
        assert data.count(body) == 1
        assert data.index(body) + len(body) == offset
    for index in range(4):
        positions = [data.index(b"<w%d:%02d>" % (index, seq)) for seq in range(10)]
        assert positions == sorted(positions)


def test_the_load_balancer_alternates_processes_on_one_connection(
    tmp_path: Path, postgres_url: str
) -> None:
    """Through HAProxy, successive requests on one keep-alive connection are answered by the
    two processes in turn (`X-Backend`), and what one appends the other reads back."""
    env = postgres_env(postgres_url)
    ports = [free_port(), free_port()]
    with (
        running_server(tmp_path / "s0", env, ports[0]),
        running_server(tmp_path / "s1", env, ports[1]),
        running_haproxy(ports) as base_url,
    ):
        connection = http.client.HTTPConnection(base_url.removeprefix("http://"), timeout=30)
        answered: list[str] = []

        def request(method: str, path: str, body: bytes = b"") -> bytes:
            connection.request(method, f"{BASE}/{path}", body, {"Content-Type": "text/plain"})
            response = connection.getresponse()
            content = response.read()
            assert response.status < 300, (response.status, content)
            answered.append(response.headers["X-Backend"])
            return content

        request("PUT", "s")
        opened = connection.sock  # http.client would open another if this one closed
        for n in range(4):
            request("POST", "s", b"<%d>" % n)
            appended_on = answered[-1]
            read = request("GET", "s?offset=-1")
            assert answered[-1] != appended_on
            assert read == b"".join(b"<%d>" % i for i in range(n + 1))
        assert connection.sock is opened
        connection.close()
    assert sorted(set(answered)) == ["s0", "s1"]
    assert all(one != two for one, two in itertools.pairwise(answered)), answered
