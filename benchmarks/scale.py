"""Issue 16's scale-out group (`--scenarios scale`): appends of 100 B at 16 connections
spread over 64 streams against postgres mode with one server process and with two (behind
HAProxy, and as `hypercorn --workers 2`), file-durable with one, and postgres with
`synchronous_commit=off`, all in one run; cross-process SSE delivery (POST on process A,
readers on B); the CPU each process used (from /proc) and the database's commits/s; and,
with pgbench, the commits/s this machine's PostgreSQL does with our transaction shape.

Nothing is pinned here: the servers, PostgreSQL, HAProxy and wrk share both CPUs, as they
would on one small host, so the report gives ratios and CPU per process, not a ceiling."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from benchmarks import client, pg, scale_procs
from benchmarks.fanout import run_fanout
from benchmarks.loadgen import run_wrk
from benchmarks.scale_procs import haproxy_config, wait_backends
from benchmarks.scenarios import Plan, wrk_summary
from benchmarks.servers import Server, Spec, free_port, log_problems

STATS_PAUSE = 1.0  # s: for the backends of stopped servers to exit (and report their commits)
ASYNC = "-c synchronous_commit=off"  # session options in the servers' connection string
PREFIX = "/v1/stream/scale-"
TELLING = re.compile(r"^[\s|]*[\w.]*(Error|Exception|Closed)\b.*:")  # an exception's last line


@dataclass(frozen=True)
class Setup:
    key: str
    label: str
    mode: str  # DS_STORAGE__MODE
    processes: int = 1  # `streams serve` processes; more than one: behind HAProxy
    workers: int = 0  # > 0: one `hypercorn ... --workers N` instead
    options: str = ""  # PostgreSQL session options for the servers' connections
    balance: str = "roundrobin"  # HAProxy's: per request, or "uri": by stream

    @property
    def postgres(self) -> bool:
        return self.mode == "postgres"


SETUPS = (
    Setup("file-1", "file-durable, 1 process", "file-durable"),
    Setup("pg-1", "postgres, 1 process", "postgres"),
    Setup("pg-2lb", "postgres, 2 processes behind HAProxy", "postgres", processes=2),
    Setup(
        "pg-2lb-uri",
        "postgres, 2 processes behind HAProxy, by stream (`balance uri`)",
        "postgres",
        processes=2,
        balance="uri",
    ),
    Setup("pg-2w", "postgres, `hypercorn --workers 2`", "postgres", workers=2),
    Setup("pg-1-async", "postgres, 1 process, synchronous_commit=off", "postgres", options=ASYNC),
    Setup(
        "pg-2lb-async",
        "postgres, 2 processes behind HAProxy, synchronous_commit=off",
        "postgres",
        processes=2,
        options=ASYNC,
    ),
)


@dataclass
class ScaleServer(Server):
    """One server as the README starts it, not pinned: `streams serve`, or with `workers`
    its hypercorn command with `--workers N`; in postgres mode on `url`."""

    workers: int = 0
    url: str = ""

    def command(self) -> list[str]:
        if self.workers:
            hypercorn = str(Path(sys.executable).parent / "hypercorn")
            config = ["--config", "python:streams.hypercorn_config"]
            return [hypercorn, *config, "--workers", str(self.workers), "streams.app:app"]
        return [sys.executable, "-m", "streams", "serve"]

    def environment(self) -> dict[str, str]:
        environment = super().environment()
        if self.url:
            environment["DS_STORAGE__POSTGRES_URL"] = self.url
        return environment


@dataclass
class Deployment:
    port: int  # where clients connect: the balancer, or the one server
    servers: list[ScaleServer]
    balancer: subprocess.Popen[bytes] | None = None
    log_paths: list[Path] = field(default_factory=list)

    def roles(self) -> dict[str, list[int]]:
        """The processes whose CPU is reported, by name: each server (each hypercorn worker
        apart from its master), the balancer."""
        named: dict[str, list[int]] = {}
        for index, server in enumerate(self.servers):
            assert server.process is not None
            pid = server.process.pid
            if server.workers:
                workers = scale_procs.workers_of(pid)
                for number, worker in enumerate(workers, 1):
                    named[f"worker {number}"] = [worker]
                named["hypercorn master"] = [pid]  # its other children are counted with it
            else:
                named[f"server {'AB'[index] if len(self.servers) > 1 else ''}".strip()] = [pid]
        if self.balancer is not None:
            named["haproxy"] = [self.balancer.pid]
        return named


@contextlib.contextmanager
def deployed(
    setup: Setup, work: Path, tag: str, url: str, balance: bool = True
) -> Iterator[Deployment]:
    """The setup's servers started (and HAProxy in front of several, if `balance`)."""
    servers = [
        ScaleServer(
            Spec(f"scale-{setup.key}", setup.label, "trio", setup.mode),
            data_dir=work / "data" / f"scale-{tag}-{index}",
            log_path=work / "logs" / f"scale-{tag}-{index}.log",
            workers=setup.workers,
            url=url,
        )
        for index in range(setup.processes)
    ]
    deployment = Deployment(0, servers, log_paths=[s.log_path for s in servers])
    try:
        for server in servers:
            server.start()
        deployment.port = servers[0].port
        if len(servers) > 1 and balance:
            deployment.port = free_port()
            path = work / "logs" / f"scale-{tag}-haproxy.cfg"
            ports = [server.port for server in servers]
            path.write_text(haproxy_config(deployment.port, ports, setup.balance))
            log = work / "logs" / f"scale-{tag}-haproxy.log"
            deployment.log_paths.append(log)
            with open(log, "wb") as output:
                deployment.balancer = subprocess.Popen(
                    [scale_procs.haproxy_binary(), "-db", "-f", str(path)],
                    stdout=output,
                    stderr=output,
                )
            seen = len(servers) if setup.balance == "roundrobin" else 1  # `uri`: one per path
            wait_backends(deployment.port, seen, deployment.balancer)
        yield deployment
    finally:
        if deployment.balancer is not None:
            deployment.balancer.terminate()
            deployment.balancer.wait(timeout=20)
        for server in servers:
            server.stop()


def appends(deployment: Deployment, plan: Plan, cluster: pg.Cluster) -> dict[str, Any]:
    """wrk at `scale_connections` over `scale_streams` streams, after a warm-up; the CPU
    each process used and the transactions that wrote meanwhile."""
    for index in range(plan.scale_streams):
        path = f"{PREFIX}{index}"
        created = client.request(
            deployment.port, "PUT", path, {"Content-Type": "application/octet-stream"}
        )
        if created.status not in (200, 201):
            raise RuntimeError(f"PUT {path} answered {created.status}")
    url = f"http://127.0.0.1:{deployment.port}{PREFIX}0"
    args = [PREFIX, str(plan.scale_streams), "100"]

    def wrk(seconds: float) -> dict[str, Any]:
        count = plan.scale_connections
        return run_wrk(url, "append_many", args, connections=count, duration=seconds, cpus=None)

    warmup = wrk(plan.warmup)
    roles = {**deployment.roles(), "postgres": [cluster.postmaster()]}
    cpu_before, wrk_before = scale_procs.sample(roles), scale_procs.children_seconds()
    raw = wrk(plan.duration)
    wrk_cpu = scale_procs.children_seconds() - wrk_before
    cpu = scale_procs.delta(cpu_before, scale_procs.sample(roles))
    result = wrk_summary(raw)
    seconds, requests = result["seconds"], max(1, result["requests"])
    servers = sum(value for role, value in cpu.items() if role not in ("postgres", "haproxy"))
    result.update(
        cores={role: value / seconds for role, value in {**cpu, "wrk": wrk_cpu}.items()},
        server_cores=servers / seconds,
        us_per_append={
            "servers": servers / requests * 1e6,
            "postgres": cpu.get("postgres", 0.0) / requests * 1e6,
        },
        warmup_requests=warmup["requests"],
        requests_with_warmup=warmup["requests"] + result["requests"],
    )
    return result


def commit_rates(cluster: pg.Cluster, plan: Plan) -> list[dict[str, Any]]:
    """pgbench with our transaction shape on a database of `scale_streams` stream rows: with
    the NOTIFY in the transaction (ours), without it, with it in a transaction of its own
    after the commit at synchronous_commit=off; and ours with synchronous_commit=off."""
    from actors.storage import pg_schema  # the server's schema, created as the server does

    url = cluster.create_database("shape")
    with psycopg.connect(url, autocommit=True) as connection:
        pg_schema.migrate(connection)
        for index in range(plan.scale_streams):
            connection.execute(
                "INSERT INTO ds_streams (key, name) VALUES (%s, %s)",
                (b"k%d" % index, b"s%d" % index),
            )
    variants = (
        ("notify", "", pg.shape(plan.scale_streams, 100)),
        ("no-notify", "", pg.shape(plan.scale_streams, 100, notify=False)),
        ("notify-after", "", pg.shape(plan.scale_streams, 100, notify=False) + pg.NOTIFY_AFTER),
        ("notify", ASYNC, pg.shape(plan.scale_streams, 100)),
    )
    rates: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for number in range(plan.append_rounds):  # in turns, as the appends: the VM drifts
        for variant, options, script in variants if number % 2 == 0 else variants[::-1]:
            for clients in plan.scale_clients:
                rate = _pgbench(cluster, variant, options, script, clients, plan.duration)
                rates.setdefault((variant, rate["synchronous_commit"], clients), []).append(rate)
    medians = []
    for runs in rates.values():
        median = sorted(runs, key=lambda run: run["tps"])[(len(runs) - 1) // 2]
        medians.append({**median, "round_tps": [run["tps"] for run in runs]})
    return medians


def _pgbench(
    cluster: pg.Cluster, variant: str, options: str, script: str, clients: int, seconds: float
) -> dict[str, Any]:
    roles = {"postgres": [cluster.postmaster()]}
    before, pgbench_before = scale_procs.sample(roles), scale_procs.children_seconds()
    began = time.perf_counter()
    tps = cluster.pgbench("shape", script, clients, seconds, options)
    elapsed = time.perf_counter() - began
    postgres = scale_procs.delta(before, scale_procs.sample(roles))["postgres"]
    sync = "off" if options else "on"
    say(f"scale: pgbench {variant}, synchronous_commit {sync}, {clients}: {tps:,.0f}/s")
    return {
        "variant": variant,
        "synchronous_commit": sync,
        "clients": clients,
        "tps": tps,
        "postgres_cores": postgres / elapsed,
        "pgbench_cores": (scale_procs.children_seconds() - pgbench_before) / elapsed,
    }


def sse(work: Path, plan: Plan, url: str) -> dict[str, Any]:
    """SSE readers on process B; the writer POSTs on A (cross), then on B (same process)."""
    setup = Setup("pg-2", "postgres, 2 processes", "postgres", processes=2)
    results: dict[str, Any] = {}
    with deployed(setup, work, "sse", url, balance=False) as deployment:
        reader = deployment.servers[1].port
        for key, writer in (("cross", deployment.servers[0].port), ("same", reader)):
            results[key] = run_fanout(
                reader,
                f"scale-sse-{key}",
                "sse",
                plan.scale_sse_readers,
                plan.scale_sse_rounds,
                writer_port=writer,
            )
            time.sleep(0.5)
    return results


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _attempt(problems: list[str], what: str, step: Callable[..., Any], *args: Any) -> Any:
    try:
        return step(*args)
    except Exception as error:  # a failed setup is a result, not the end of the run
        problems.append(f"scale {what}: FAILED {error!r}")
        say(f"scale: {what} failed: {error!r}")
        return None


def run(plan: Plan, work: Path, problems: list[str]) -> dict[str, Any]:
    """The whole group; its results, for `results["scale"]`."""
    affinity = os.sched_getaffinity(0)
    os.sched_setaffinity(0, range(os.cpu_count() or 1))  # main pins the harness to CPU 1
    results: dict[str, Any] = {"appends": {}}
    try:
        with pg.cluster() as cluster:
            results["postgres"] = cluster.version()
            results["settings"] = list(pg.SERVER_SETTINGS)
            results["fdatasync_us"] = _attempt(problems, "pg_test_fsync", cluster.fdatasync_us)
            for number in range(1, plan.append_rounds + 1):
                for setup in SETUPS if number % 2 else SETUPS[::-1]:
                    say(f"scale: {setup.key}, round {number}")
                    tag = f"{setup.key}-{number}".replace("-", "_")
                    what = f"{setup.key} round {number}"
                    value = _attempt(problems, what, _one, setup, work, tag, plan, cluster)
                    if value is not None:
                        results["appends"][f"{setup.key}@{number}"] = value
            _medians(results["appends"], plan)
            say("scale: cross-process SSE")
            url = cluster.create_database("sse")
            results["sse"] = _attempt(problems, "sse", sse, work, plan, url) or {}
            results["commits"] = _attempt(problems, "pgbench", commit_rates, cluster, plan) or []
    finally:
        os.sched_setaffinity(0, affinity)
    logs = sorted((work / "logs").glob("scale-*.log"))
    problems.extend(summary for summary in map(log_summary, logs) if summary)
    return results


def log_summary(path: Path) -> str | None:
    """One line for a server log with errors: how many lines look like one, and the last
    exception's own line (its type and message)."""
    lines = log_problems(path)
    if not lines:
        return None
    text = path.read_text(errors="replace").splitlines()
    named = [line for line in text if TELLING.search(line)]
    example = (named or lines)[-1].strip(" |+-")[:200]
    return f"{path.name}: {len(lines)} line(s) like errors, the last exception {example}"


def _one(setup: Setup, work: Path, tag: str, plan: Plan, cluster: pg.Cluster) -> dict[str, Any]:
    database = f"scale_{tag}"
    url = cluster.create_database(database) if setup.postgres else ""
    if setup.postgres and setup.options:
        url = cluster.url(database, setup.options)
    try:
        before = cluster.commits(database) if setup.postgres else 0
        with deployed(setup, work, tag, url) as deployment:
            result = appends(deployment, plan, cluster)
        if setup.postgres:  # the servers' backends have reported every commit as they exited
            time.sleep(STATS_PAUSE)
            commits = cluster.commits(database) - before
            per_append = commits / max(1, result["requests_with_warmup"])
            result.update(xact_commit=commits, commits_per_append=per_append)
            result["commits_per_s"] = per_append * result["rps"]
        return result
    finally:
        if setup.postgres:
            cluster.drop_database(database)


def _medians(entries: dict[str, Any], plan: Plan) -> None:
    """Each setup's round with the median rate, as `<key>`; the rounds stay as `<key>@<n>`."""
    for setup in SETUPS:
        keys = [f"{setup.key}@{number}" for number in range(1, plan.append_rounds + 1)]
        rounds = [entries[key] for key in keys if key in entries]
        if rounds:
            median = sorted(rounds, key=lambda r: r["rps"])[(len(rounds) - 1) // 2]
            entries[setup.key] = {**median, "round_rps": [r["rps"] for r in rounds]}
