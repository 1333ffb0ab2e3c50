"""The scenarios, each run against one started server; every one bounded in time and count."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any

from benchmarks import client
from benchmarks.fanout import run_fanout
from benchmarks.loadgen import run_wrk
from benchmarks.servers import Server

MB = 1_000_000


@dataclass(frozen=True)
class Plan:
    duration: float = 5.0  # seconds of each wrk measurement
    warmup: float = 1.0  # seconds of wrk warm-up before the append series
    append_connections: tuple[int, ...] = (1, 16, 64)
    append_rounds: int = 3  # the servers take turns; each result is the median round
    json_connections: int = 16
    json_batch: int = 10
    small_messages: int = 10_000  # the 10k x 100 B catch-up stream
    big_mib: int = 10  # the 10 MiB catch-up stream, in 1 MiB appends
    read_connections: tuple[int, ...] = (1, 4)
    fanout_ks: tuple[int, ...] = (100, 1000)
    fanout_rounds: int = 20
    fanout_rounds_large: int = 10  # long-poll rounds for K > 100 (SSE rounds are short)
    create_streams: int = 100_000
    create_connections: int = 16
    create_bound: float = 300.0  # seconds at most for the creates
    idle_timeout: float | None = None  # DS_ACTORS__IDLE_TIMEOUT_SECS for ours (None: default)
    idle_wait: float = 15.0  # wait before "at rest" RSS (ours); default idle timeout is 10 s
    restart_streams: int = 10_000
    restarts: int = 3
    # hostile clients (issue 9), ours only; see benchmarks/hostile.py
    flood_messages: int = 8_000_000  # one JSON POST of [1,1,...]: 2 B per message, 16 MB
    stalled_readers: int = 200  # SSE readers that never read ...
    stalled_record_mib: int = 8  # ... a stream holding one record of this size
    settle_bound: float = 20.0  # seconds at most for RSS to settle (two samples within 1 MB)
    rss_cap: int = 6_000_000_000  # ... or until the server's RSS passes this (B)
    reopen_records: int = 1_000_000  # one-byte appends in the log reopened
    probe_interval: float = 0.01  # seconds between /healthz probes (one in flight at a time)
    probe_tail: float = 0.5  # probes go on this long after the measured request answered
    probe_limit: int = 100_000  # probes at most per measurement
    hostile_bound: float = 300.0  # seconds at most for a probed request
    # the State Protocol (issue 11); see benchmarks/state.py
    state_changes: int = 1_000_000  # the late joiner's stream: changes ...
    state_keys: int = 1000  # ... over this many keys
    state_batch: int = 1000  # messages per JSON array POST while seeding
    state_repeats: int = 3  # each late joiner reads this many times; the median is kept
    snapshot_entities: int = 100_000  # live entities in the stream whose snapshot is timed
    snapshot_requests: int = 50  # sequential snapshot requests timed
    view_rounds: int = 3  # appends without / with a view resident take turns; the medians
    disk_changes: int = 200_000  # changes appended to the compacted and uncompacted streams
    compaction_bytes: int = 1 << 20  # Stream-State-Compaction of the compacted stream
    compaction_wait: float = 10.0  # seconds at most for the compacted stream to shrink
    state_bound: float = 600.0  # seconds at most for seeding one stream, or for one read
    # Yjs documents (issue 13); see benchmarks/yjs.py
    yjs_edits: int = 20_000  # single-character edits of the document a new client loads
    yjs_batch: int = 1  # updates (each lib0-framed) per POST while writing it
    yjs_repeats: int = 5  # new clients load it this many times; the median is kept
    yjs_threshold: int = 4096  # "with compaction": far below the documents (a snapshot each)
    yjs_no_threshold: int = 1 << 30  # "without": far above it
    yjs_big_edits: int = 200_000  # the document appended to while compactions run ...
    yjs_seed_batch: int = 1000  # ... written this many updates per POST
    yjs_appends: int = 30_000  # single-edit appends timed, at most ...
    yjs_append_seconds: float = 60.0  # ... and for at most this long
    yjs_poll: float = 0.02  # seconds between snapshot discoveries while appending
    yjs_quiet: float = 1.5  # compactions are over once discovery is unchanged this long
    yjs_bound: float = 300.0  # seconds at most for writing a document, a load or settling
    # scale-out on PostgreSQL (issue 16); see benchmarks/scale.py
    scale_connections: int = 16  # wrk connections appending 100 B ...
    scale_streams: int = 64  # ... to this many streams in turn
    scale_sse_readers: int = 100  # SSE readers on one process, the writer on another
    scale_sse_rounds: int = 20
    scale_clients: tuple[int, ...] = (1, 4, 16, 64)  # pgbench clients: commits/s of our shape


FULL = Plan()
QUICK = Plan(
    duration=2.0,
    warmup=1.0,
    append_rounds=1,
    read_connections=(1,),
    fanout_ks=(100,),
    fanout_rounds=10,
    create_streams=5_000,
    create_bound=60.0,
    idle_timeout=3.0,
    idle_wait=5.0,
    restart_streams=2_000,
    restarts=2,
    settle_bound=10.0,
    reopen_records=200_000,
    state_changes=100_000,
    snapshot_entities=20_000,
    snapshot_requests=20,
    view_rounds=2,
    disk_changes=50_000,
    compaction_wait=5.0,
    yjs_batch=10,
    yjs_big_edits=100_000,
    yjs_appends=15_000,
    yjs_append_seconds=25.0,
    scale_sse_rounds=10,
    scale_clients=(1, 16),
)


def wrk_summary(result: dict[str, Any]) -> dict[str, Any]:
    return {
        "rps": result["rps"],
        "requests": result["requests"],
        "seconds": result["duration_us"] / 1e6,
        "p50_ms": result["p50_us"] / 1000,
        "p99_ms": result["p99_us"] / 1000,
        "max_ms": result["max_us"] / 1000,
        "errors": result["errors"],
        "status_errors": result["status_errors"],
        "socket_errors": result["errors"] - result["status_errors"],
        "counters": result["counters"],
    }


def _create(server: Server, name: str, content_type: str) -> str:
    path = f"/v1/stream/{name}"
    response = client.request(server.port, "PUT", path, {"Content-Type": content_type})
    if response.status not in (200, 201):
        raise RuntimeError(f"PUT {path} answered {response.status}: {response.body[:200]!r}")
    return path


def appends(server: Server, plan: Plan) -> dict[str, Any]:
    """wrk POSTs of 100 B (octet-stream) at each connection count, to one stream."""
    path = "/v1/stream/bench-append" if server.spec.kind != "raw" else "/append"
    if server.spec.kind != "raw":
        _create(server, "bench-append", "application/octet-stream")
    url = server.base + path
    args = ["application/octet-stream", "bytes", "100"]
    run_wrk(url, "append", args, connections=16, duration=plan.warmup)
    results = {}
    for connections in plan.append_connections:
        result = run_wrk(url, "append", args, connections=connections, duration=plan.duration)
        results[f"append-c{connections}"] = wrk_summary(result)
    return results


def json_appends(server: Server, plan: Plan) -> dict[str, Any]:
    """wrk POSTs of a JSON array of 10 objects (about 95 B each) to an application/json stream."""
    path = _create(server, "bench-json", "application/json")
    args = ["application/json", "json", str(plan.json_batch)]
    result = wrk_summary(
        run_wrk(
            server.base + path,
            "append",
            args,
            connections=plan.json_connections,
            duration=plan.duration,
        )
    )
    result["msgs"] = result["rps"] * plan.json_batch
    count_check = client.request(server.port, "GET", f"{path}?offset=-1")
    result["read_back_status"] = count_check.status
    return {f"json-c{plan.json_connections}": result}


def _catch_up(server: Server, plan: Plan, path: str, key: str) -> dict[str, Any]:
    data, responses = client.read_all(server.port, path)
    size = len(data)
    results = {}
    for connections in plan.read_connections if key == "catchup-small" else (1,):
        if responses == 1:
            raw = run_wrk(
                f"{server.base}{path}?offset=-1",
                "get",
                [],
                connections=connections,
                duration=plan.duration,
            )
            reads = raw["requests"] - raw["status_errors"]
        else:
            raw = run_wrk(
                server.base + path,
                "follow",
                [path],
                connections=connections,
                threads=connections,
                duration=plan.duration,
            )
            reads = raw["counters"]["full_reads"]
        summary = wrk_summary(raw)
        summary.update(
            stream_bytes=size,
            responses_per_read=responses,
            full_reads=reads,
            mbps=reads * size / MB / summary["seconds"],
        )
        results[f"{key}-c{connections}"] = summary
    return results


def catch_up(server: Server, plan: Plan) -> dict[str, Any]:
    """Catch-up reads of a whole stream from offset -1: 10k x 100 B, and 10 x 1 MiB."""
    small = _create(server, "bench-read-small", "application/octet-stream")
    began = time.perf_counter()
    statuses = client.append_many(
        server.port, small, [b"m" * 100] * plan.small_messages, "application/octet-stream"
    )
    seed_small = time.perf_counter() - began
    big = _create(server, "bench-read-big", "application/octet-stream")
    big_statuses = client.append_many(
        server.port, big, [b"b" * (1 << 20)] * plan.big_mib, "application/octet-stream", 1
    )
    results = _catch_up(server, plan, small, "catchup-small")
    results.update(_catch_up(server, plan, big, "catchup-big"))
    for key in results:
        results[key]["seed_statuses"] = statuses if "small" in key else big_statuses
    results["seed-small"] = {"seconds": seed_small, "statuses": statuses}
    return results


def fan_out(server: Server, plan: Plan) -> dict[str, Any]:
    results = {}
    for k in plan.fanout_ks:
        for live, short in (("sse", "sse"), ("long-poll", "lp")):
            long = live == "long-poll" and k > 100
            rounds = plan.fanout_rounds_large if long else plan.fanout_rounds
            name = f"bench-fanout-{short}-{k}"
            results[f"fanout-{short}-{k}"] = run_fanout(server.port, name, live, k, rounds)
            time.sleep(0.5)  # let the closed readers drain before the next set
    return results


def creates(server: Server, plan: Plan) -> dict[str, Any]:
    """wrk PUTs of new empty streams until N were created; RSS before, after and at rest."""
    time.sleep(1.0)
    rss_before = server.rss()
    raw = run_wrk(
        server.base + "/v1/stream/bench-create",
        "create",
        ["/v1/stream/bench-create-", str(plan.create_streams), "0"],
        connections=plan.create_connections,
        duration=plan.create_bound,
    )
    created = raw["counters"]["created"]
    elapsed = raw["counters"]["elapsed_us"] / 1e6 or 1e-9
    time.sleep(2.0)
    rss_after = server.rss()
    wait = plan.idle_wait if server.spec.kind == "trio" else 0.0
    time.sleep(wait)
    rss_rest = server.rss()
    sample = client.request(server.port, "HEAD", "/v1/stream/bench-create-t1-2").status
    return {
        "create": {
            "created": created,
            "bad": raw["counters"]["bad"],
            "bad_status": raw["counters"]["bad_status"],
            "socket_errors": raw["errors"] - raw["status_errors"],
            "seconds": elapsed,
            "rate": created / elapsed,
            "rss_before": rss_before,
            "rss_after": rss_after,
            "rss_rest": rss_rest,
            "rest_wait_s": wait,
            "per_stream_rest": (rss_rest - rss_before) / max(1, created),
            "per_stream_after": (rss_after - rss_before) / max(1, created),
            "head_first_status": sample,
            "completed": created >= plan.create_streams,
        }
    }


def restart(server: Server, plan: Plan, first_start: float) -> dict[str, Any]:
    """N streams holding 100 B each on disk; stop (SIGTERM) and time spawn to ready, where
    ready means /readyz (ours) answers 200 and HEAD of a stream created last answers 200."""
    raw = run_wrk(
        server.base + "/v1/stream/bench-restart",
        "create",
        ["/v1/stream/bench-restart-", str(plan.restart_streams), "100"],
        connections=16,
        duration=120,
    )
    created = raw["counters"]["created"]
    probe = "/v1/stream/bench-restart-probe"
    put = client.request(server.port, "PUT", probe, {"Content-Type": "text/plain"}, b"p" * 100)
    if put.status != 201:
        raise RuntimeError(f"PUT {probe} answered {put.status}")
    middle = f"/v1/stream/bench-restart-t1-{plan.restart_streams // 2}"
    times, stops = [], []
    last_status = None
    for _ in range(plan.restarts):
        stops.append(server.stop()[1])
        times.append(server.start(ready_path=probe))
        last_status = client.request(server.port, "HEAD", middle).status
    return {
        "restart": {
            "streams": created,
            "bad": raw["counters"]["bad"],
            "bad_status": raw["counters"]["bad_status"],
            "seconds": statistics.median(times),
            "all_seconds": times,
            "empty_start_seconds": first_start,
            "sample_stream_status": last_status,
            "stop_seconds": stops,
        }
    }
