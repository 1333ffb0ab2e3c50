"""The scale benchmark's parts (issue 16): CPU from /proc, the pgbench script of our
transaction shape against the server's schema, the servers' command lines, HAProxy's
configuration, and its report merged into docs/benchmarks.md (no timing asserted)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg

from actors.storage import pg_schema
from benchmarks import pg, report_scale, scale_procs
from benchmarks.pg import binaries
from benchmarks.scale import SETUPS, ScaleServer, Setup
from benchmarks.scenarios import FULL, QUICK
from benchmarks.servers import Spec
from tests.test_deployment_doc import haproxy


def test_cpu_seconds_come_from_the_fields_after_the_command_name() -> None:
    # a command name may hold spaces and parentheses; utime stime cutime cstime are 14-17
    fields = ["S", *map(str, range(4, 14)), "100", "50", "30", "20", *["0"] * 30]
    assert scale_procs.stat_seconds("42 (a) b (c)) " + " ".join(fields), tick=100) == 2.0
    own = scale_procs.stat_seconds(Path("/proc/self/stat").read_text())
    times = os.times()
    total = times.user + times.system + times.children_user + times.children_system
    assert abs(own - total) < 0.1


def test_the_shape_runs_on_the_servers_schema(postgres_url: str, tmp_path: Path) -> None:
    """Each pgbench script the benchmark times appends where the server would: one record
    at each stream's new tail, which moves by the record's frame."""
    bindir = binaries()
    assert bindir is not None  # the postgres_url fixture skipped otherwise
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        pg_schema.migrate(connection)
        for index in range(4):
            connection.execute(
                "INSERT INTO ds_streams (key, name) VALUES (%s, %s)", (b"k%d" % index, b"s")
            )
    scripts = [pg.shape(4, 100), pg.shape(4, 100, notify=False)]
    scripts.append(scripts[1] + pg.NOTIFY_AFTER)
    for number, script in enumerate(scripts):
        path = tmp_path / f"shape{number}.sql"
        path.write_text(script)
        ran = subprocess.run(
            [str(bindir / "pgbench"), "-n", "-M", "prepared", "-c", "2", "-t", "5",
             "-f", str(path), postgres_url],
            capture_output=True, text=True,
        )  # fmt: skip
        assert ran.returncode == 0, ran.stdout + ran.stderr
        assert pg.tps(ran.stdout) > 0
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        records = connection.execute("SELECT count(*), min(length(data)) FROM ds_records")
        assert records.fetchone() == (30, 100)
        tails = connection.execute("SELECT sum(tail) FROM ds_streams").fetchone()
        assert tails == (30 * 116,)


def test_pgbench_rates_are_read_from_its_summary() -> None:
    output = (
        "number of transactions actually processed: 2000\n"
        "latency average = 7.9 ms\n"
        "initial connection time = 4.1 ms\n"
        "tps = 2013.529901 (without initial connection time)\n"
    )
    assert pg.tps(output) == 2013.529901


def test_servers_start_as_the_readme_says() -> None:
    spec = Spec("scale-x", "x", "trio", "postgres")
    one = ScaleServer(spec, Path("d"), Path("l"), url="host=/tmp dbname=x")
    assert one.command() == [sys.executable, "-m", "streams", "serve"]
    assert not any(part == "taskset" for part in one.command())  # nothing pinned
    assert one.environment()["DS_STORAGE__POSTGRES_URL"] == "host=/tmp dbname=x"
    assert one.environment()["DS_STORAGE__MODE"] == "postgres"
    two = ScaleServer(spec, Path("d"), Path("l"), workers=2)
    assert two.command()[1:] == [
        "--config", "python:streams.hypercorn_config", "--workers", "2", "streams.app:app"
    ]  # fmt: skip


def test_the_balancers_configuration_parses(tmp_path: Path) -> None:
    for balance in ("roundrobin", "uri"):
        path = tmp_path / f"{balance}.cfg"
        path.write_text(scale_procs.haproxy_config(8080, [4437, 4438], balance))
        checked = subprocess.run([haproxy(), "-c", "-f", str(path)], capture_output=True, text=True)
        assert checked.returncode == 0, checked.stdout + checked.stderr


def entry(rps: float, **more: Any) -> dict[str, Any]:
    return {
        "rps": rps,
        "p50_ms": 10.0,
        "p99_ms": 30.0,
        "errors": 0,
        "cores": {"server": 0.9, "postgres": 0.3, "wrk": 0.05},
        "us_per_append": {"servers": 900.0, "postgres": 300.0},
        **more,
    }


def results(missing: str = "") -> dict[str, Any]:
    appends = {
        setup.key: entry(
            1000.0 if setup.key == "pg-1" else 500.0,
            commits_per_s=2000.0,
            commits_per_append=2.0,
        )
        for setup in SETUPS
        if setup.key != missing
    }
    latency = {"p50_ms": 20.0, "p99_ms": 40.0, "post_p50_ms": 5.0, "post_p99_ms": 9.0}
    sse = {
        "cross": {**latency, "samples": 2000, "missed": 0, "errors": {}},
        "same": {**latency, "p50_ms": 10.0, "samples": 2000, "missed": 0, "errors": {}},
    }
    commits = [
        {"variant": "notify", "synchronous_commit": "on", "clients": c, "tps": 400.0 * c,
         "postgres_cores": 0.5}
        for c in FULL.scale_clients
    ]  # fmt: skip
    return {"scale": {"appends": appends, "sse": sse, "commits": commits, "postgres": "15"}}


def test_the_section_gives_ratios_cpu_and_commits() -> None:
    text = "\n".join(report_scale.section(results("pg-2w"), QUICK))
    assert text.startswith(report_scale.HEADING)
    assert "| postgres, 2 processes behind HAProxy | 500 (10.0 / 30.0) | 0.50x | 1.00x |" in text
    assert "| postgres, `hypercorn --workers 2` | not measured" in text
    assert "2,000 (2.00)" in text and "server 0.90, postgres 0.30, wrk 0.05" in text
    assert "| cross ÷ same | 2.00x / 1.00x |" in text
    assert "| ours: `pg_notify` in the transaction | 400 (0.50) | 1,600 (0.50) |" in text
    assert report_scale.section({}, QUICK) == []


def test_a_separate_run_replaces_only_its_own_section() -> None:
    page = "# B\n\n## Yjs\n\ny\n\n## Problems seen in this run\n\n- none\n"
    first = report_scale.merge(page, ["## Scale-out on PostgreSQL (issue 16)", "", "one"])
    assert first == page.replace(
        "## Problems", "## Scale-out on PostgreSQL (issue 16)\n\none\n\n## Problems"
    )
    again = report_scale.merge(first, [report_scale.HEADING, "", "two"])
    assert again == first.replace("\none\n", "\ntwo\n")
    separate = {
        "command": "bash benchmarks/run.sh --scenarios scale",
        "minutes": 7.5,
        "commit": "abc1234",
        "load_before": "0.1 0.2 0.3",
        "load_after": "1.0 1.1 1.2",
        "problems": [],
    }
    lines = report_scale.section(results(), FULL, separate)
    merged = report_scale.merge(page, lines)
    assert merged.startswith("# B\n\n## Yjs\n\ny\n\n## Scale-out")
    assert "`bash benchmarks/run.sh --scenarios scale`, 7.5 minutes" in merged
    assert merged.endswith("## Problems seen in this run\n\n- none\n")
    assert report_scale.merge("# B\n", ["## Scale-out on PostgreSQL (issue 16)"]).startswith(
        "# B\n\n## Scale-out"
    )


def test_every_setup_is_reported() -> None:
    assert {setup.key for setup in SETUPS} >= {"file-1", "pg-1", "pg-2lb", "pg-2w"}
    assert all(isinstance(setup, Setup) for setup in SETUPS)


def test_a_log_with_errors_is_one_line_naming_the_exception(tmp_path: Path) -> None:
    from benchmarks.scale import log_summary

    log = tmp_path / "scale-pg_1_1-0.log"
    log.write_text("INFO: fine\n")
    assert log_summary(log) is None
    log.write_text(
        "ERROR:actors.actor:stream actor 's' failed\nTraceback (most recent call last):\n"
        '  File "x.py", line 1, in run\n'
        "psycopg_pool.PoolClosed: the pool 'ds' is already closed\n"
    )
    assert log_summary(log) == (
        "scale-pg_1_1-0.log: 1 line(s) like errors, the last exception "
        "psycopg_pool.PoolClosed: the pool 'ds' is already closed"
    )
