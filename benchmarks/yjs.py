"""The Yjs scenarios of issue 13, run against a server's Yjs endpoints (`/v1/yjs/<service>/docs/
<doc>`): ours natively, or upstream's YjsServer over the Node reference server
(benchmarks/node/yjs-server.mjs). Each server runs with one compaction threshold; the harness
starts one far above the document ("without compaction") and one low enough that the
document has a snapshot ("with").

- `load`: a document of N single-character edits, then a new client loads it as the provider
  does (`offset=snapshot` -> 307 -> snapshot -> updates until up to date) into a pycrdt
  document: bytes received, time, and the text must equal what was written.
- `append_latency`: a large document, then single-edit appends one after another while
  compactions come and go; their latency while one runs vs while none does.

Every loop is bounded in count and time; 127.0.0.1 only. A server without the endpoints (our
server before issue 13) gets `available: False` and the report says n/a.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

from benchmarks import client
from benchmarks.scenarios import Plan
from benchmarks.servers import Server
from benchmarks.yjs_doc import (
    Append,
    Reader,
    Writer,
    batches,
    follow,
    is_snapshot,
    percentile,
    prepending,
    replay,
    snapshot_offset,
    split,
    typing,
    windows,
)
from streams.protocol.yjs import frame

OCTETS = {"Content-Type": "application/octet-stream"}
MAX_RESPONSES = 100_000
LOG_LINE = re.compile(rb"compaction (start|end) \S+ (\d+)")


def configure(server: Server, threshold: int | None, plan: Plan) -> None:
    """Ours serves Yjs itself; the Node kind runs upstream's YjsServer over the reference
    server. Both compact past `threshold` bytes (None: far above any document)."""
    limit = str(threshold if threshold is not None else plan.yjs_no_threshold)
    server.env["DS_YJS__COMPACTION_THRESHOLD_BYTES"] = limit
    server.script = "yjs-server.mjs"
    server.args = ["--compaction-threshold", limit]


def doc_path(name: str) -> str:
    return f"/v1/yjs/bench/docs/{name}"


def create(server: Server, name: str) -> tuple[str, str]:
    """PUTs a document; (its path, '') or ('', why the server has no Yjs endpoints)."""
    path = doc_path(name)
    response = client.request(server.port, "PUT", path, OCTETS)
    if response.status in (200, 201):
        return path, ""
    if response.status in (404, 405):
        return "", f"PUT {path} answered {response.status}: no Yjs endpoints"
    raise RuntimeError(f"PUT {path} answered {response.status}: {response.body!r:.200}")


def post_all(server: Server, path: str, bodies: list[bytes], bound: float) -> dict[str, Any]:
    """POSTs the bodies in order on one connection; seconds and POSTs."""
    began = time.perf_counter()
    with client.Connection(server.port) as connection:
        for body in bodies:
            response = connection.request("POST", path, OCTETS, body)
            if response.status not in (200, 204):
                raise RuntimeError(f"POST {path} answered {response.status}")
            if time.perf_counter() - began > bound:
                raise RuntimeError(f"writing {path} took over {bound:g} s")
    return {"seconds": time.perf_counter() - began, "posts": len(bodies)}


def discover(connection: client.Connection, path: str) -> tuple[str, str]:
    """`offset=snapshot` -> (where the 307 sends us, the offset it names)."""
    response = connection.request("GET", f"{path}?offset=snapshot")
    if response.status != 307 or "location" not in response.headers:
        raise RuntimeError(f"GET {path}?offset=snapshot answered {response.status}")
    return follow(path, response.headers["location"])


def current_snapshot(port: int, path: str) -> str:
    with client.Connection(port) as connection:
        return discover(connection, path)[1]


def settle(server: Server, path: str, quiet: float, bound: float) -> str:
    """Waits until snapshot discovery has named the same place for `quiet` seconds (the
    compactions the writing started are over); returns that offset."""
    began = time.perf_counter()
    last, since = current_snapshot(server.port, path), time.perf_counter()
    while time.perf_counter() - since < quiet and time.perf_counter() - began < bound:
        time.sleep(0.05)
        now = current_snapshot(server.port, path)
        if now != last:
            last, since = now, time.perf_counter()
    return last


@dataclass
class Loaded:
    seconds: float  # from connecting to the document applied, Stream-Up-To-Date seen
    wire_bytes: int  # received, headers included
    snapshot_bytes: int  # the snapshot's body (0 without one)
    update_bytes: int  # the bodies of the update reads
    responses: int  # the 307 included
    frames: int  # updates applied after the snapshot
    snapshot: bool


def load(port: int, path: str, expected: str, bound: float) -> Loaded:
    """A new client: discovery, the snapshot if there is one, then updates from its
    Stream-Next-Offset until up to date, all applied to a pycrdt document, whose text must be
    `expected`."""
    began = time.perf_counter()
    reader = Reader()
    snapshot_bytes = update_bytes = 0
    with client.Connection(port) as connection:
        target, offset = discover(connection, path)
        responses, had_snapshot = 1, is_snapshot(offset)
        if had_snapshot:
            response = connection.request("GET", target)
            responses += 1
            if response.status != 200:
                raise RuntimeError(f"GET {target} answered {response.status}")
            reader.apply_snapshot(response.body)
            snapshot_bytes = len(response.body)
            offset = response.headers["stream-next-offset"]
        while responses < MAX_RESPONSES:
            response = connection.request("GET", f"{path}?offset={offset}")
            responses += 1
            if response.status != 200:
                raise RuntimeError(f"GET {path}?offset={offset} answered {response.status}")
            reader.apply_framed(response.body)
            update_bytes += len(response.body)
            if response.headers.get("stream-up-to-date") == "true":
                break
            offset = response.headers["stream-next-offset"]
            if time.perf_counter() - began > bound:
                raise RuntimeError(f"loading {path}: not up to date after {bound:g} s")
        seconds, received = time.perf_counter() - began, connection.received
    if str(reader) != expected:
        got = str(reader)
        raise RuntimeError(
            f"loading {path}: the text differs from what was written "
            f"({len(got)} vs {len(expected)} chars)"
        )
    return Loaded(
        seconds, received, snapshot_bytes, update_bytes, responses, reader.frames, had_snapshot
    )


def load_scenario(server: Server, plan: Plan, threshold: int) -> dict[str, Any]:
    """N typed edits, one update each, POSTed `yjs_batch` to a request; once compactions are
    over, `yjs_repeats` new clients load the document (the median kept)."""
    path, missing = create(server, f"load-{threshold}")
    if missing:
        return {"available": False, "reason": missing}
    edits = list(typing(plan.yjs_edits))
    writer = Writer()
    updates = list(writer.updates(edits))
    expected = replay(edits)
    if str(writer) != expected:
        raise RuntimeError("pycrdt's text differs from the replayed edits")
    bodies = list(batches(updates, plan.yjs_batch))
    written = post_all(server, path, bodies, plan.yjs_bound)
    settled = settle(server, path, plan.yjs_quiet, plan.yjs_bound)
    runs = [load(server.port, path, expected, plan.yjs_bound) for _ in range(plan.yjs_repeats)]
    median = sorted(runs, key=lambda run: run.seconds)[(len(runs) - 1) // 2]
    return {
        "available": True,
        "threshold": threshold,
        "edits": plan.yjs_edits,
        "batch": plan.yjs_batch,
        "written_bytes": sum(map(len, bodies)),
        "write_seconds": written["seconds"],
        "discovered": settled,
        **asdict(median),
        "all_seconds": [run.seconds for run in runs],
    }


class Poller:
    """Snapshot discovery every `interval` s on its own connection, in a thread: when each
    new snapshot was first seen, and the offset it covers."""

    def __init__(self, port: int, path: str, interval: float, bound: float) -> None:
        self.port, self.path, self.interval, self.bound = port, path, interval, bound
        self.seen: list[tuple[float, str]] = []
        self.first = "-1"  # what the first discovery named (a snapshot's covered offset)
        self.polls = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        began = time.perf_counter()
        try:
            with client.Connection(self.port) as connection:
                last = discover(connection, self.path)[1]
                self.first = snapshot_offset(last)
                while not self._stop.wait(self.interval):
                    if time.perf_counter() - began > self.bound:
                        break
                    offset = discover(connection, self.path)[1]
                    self.polls += 1
                    if offset != last and is_snapshot(offset):
                        self.seen.append((time.perf_counter(), snapshot_offset(offset)))
                    last = offset
        except BaseException as error:  # reported by stop()
            self.error = error

    def quiet(self, quiet: float, bound: float) -> None:
        """Waits until no new snapshot has been seen for `quiet` seconds (at most `bound`)."""
        began = time.perf_counter()
        while time.perf_counter() - began < bound and self._thread.is_alive():
            last = self.seen[-1][0] if self.seen else began
            if time.perf_counter() - max(last, began) >= quiet:
                return
            time.sleep(0.05)

    def __enter__(self) -> Poller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def logged_windows(
    server: Server, began_wall: float, ended_wall: float
) -> list[tuple[float, float]] | None:
    """The compactions the server logged as started in the interval, as (start, end) epoch
    seconds (upstream's, through our yjs-server.mjs; one document at a time here; one still
    running ends at `ended_wall`); None for a server that does not log them (ours)."""
    if server.spec.kind != "node" or not server.log_path.exists():
        return None
    found: list[tuple[float, float]] = []
    started: float | None = None
    for kind, ms in LOG_LINE.findall(server.log_path.read_bytes()):
        if kind == b"start":
            started = int(ms) / 1000
        elif started is not None:
            if began_wall <= started <= ended_wall:
                found.append((started, int(ms) / 1000))
            started = None
    if started is not None and began_wall <= started <= ended_wall:
        found.append((started, ended_wall))
    return found


def _ms(ran: list[tuple[float, float]]) -> list[float]:
    return [round((end - start) * 1000, 1) for start, end in ran]


def append_latency(server: Server, plan: Plan) -> dict[str, Any]:
    """A document of `yjs_big_edits` edits, each a separate item (so compacting it costs
    real time); then single-edit appends, one after another, while discovery is polled: the
    latency of those in flight while a compaction ran vs the others."""
    path, missing = create(server, "append-latency")
    if missing:
        return {"available": False, "reason": missing}
    writer = Writer()
    seed = batches(writer.updates(prepending(plan.yjs_big_edits)), plan.yjs_seed_batch)
    seeded = post_all(server, path, list(seed), plan.yjs_bound)
    settle(server, path, plan.yjs_quiet, plan.yjs_bound)
    appends: list[Append] = []
    began, began_wall = time.perf_counter(), time.time()
    with (
        Poller(server.port, path, plan.yjs_poll, plan.yjs_append_seconds + 30) as poller,
        client.Connection(server.port) as connection,
    ):
        for update in writer.updates(prepending(plan.yjs_appends)):
            sent = time.perf_counter()
            response = connection.request("POST", path, OCTETS, frame(update))
            answered = time.perf_counter()
            if response.status not in (200, 204):
                raise RuntimeError(f"POST {path} answered {response.status}")
            appends.append(Append(sent, answered, response.headers["stream-next-offset"]))
            if answered - began > plan.yjs_append_seconds:
                break
        poller.quiet(plan.yjs_quiet, plan.yjs_bound)  # a compaction still running shows
    ended_wall = time.time()
    if poller.error is not None:
        raise RuntimeError(f"polling discovery failed: {poller.error!r}")
    seen = windows(appends, poller.seen, began, plan.yjs_threshold, poller.first)
    logged = logged_windows(server, began_wall, ended_wall)
    clock = began - began_wall  # epoch seconds -> perf_counter seconds, near enough (ms)
    ran = [(start + clock, end + clock) for start, end in logged] if logged is not None else seen
    during, outside = split(appends, ran)
    final = load(server.port, path, str(writer), plan.yjs_bound)
    return {
        "available": True,
        "edits": plan.yjs_big_edits,
        "seed_seconds": seeded["seconds"],
        "appends": len(appends),
        "seconds": appends[-1].answered - began if appends else 0.0,
        "polls": poller.polls,
        "windows_from": "the server's log" if logged is not None else "the protocol",
        "compactions": len(ran),
        "compaction_ms": _ms(ran),
        "protocol_compaction_ms": _ms(seen),  # the protocol's bound, beside a log's windows
        "during": summary(during),
        "outside": summary(outside),
        "load_seconds": final.seconds,
        "snapshot_bytes": final.snapshot_bytes,
    }


def summary(latencies: list[float]) -> dict[str, Any]:
    return {
        "count": len(latencies),
        "p50_ms": percentile(latencies, 0.5),
        "p99_ms": percentile(latencies, 0.99),
        "max_ms": percentile(latencies, 1.0),
    }
