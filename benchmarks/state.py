"""The State Protocol scenarios of issue 11: a late joiner's full replay vs one
`?state=snapshot` request (and the Node server's full replay), snapshot latency, JSON appends
with a view resident vs without, and the disk size of a compacted stream.

Every loop is bounded in count and time; 127.0.0.1 only. Where the server lacks a feature
(it answers a plain read to `?state=snapshot`, or never compacts) the result says so and the
report prints n/a; every fold is still checked against the changes appended, loudly.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks import client
from benchmarks.loadgen import run_wrk
from benchmarks.scenarios import Plan, wrk_summary
from benchmarks.servers import Server
from benchmarks.state_fold import (
    TYPE,
    Entities,
    batches,
    changes,
    difference,
    fold,
    inserts,
    is_snapshot_start,
)

JSON = "application/json"
SNAPSHOT = "&state=snapshot"
COMPACTION = "Stream-State-Compaction"
MAX_RESPONSES = 100_000  # a reader loop's bound in responses (its time bound: the plan's)


@dataclass
class Joined:
    """A late joiner's read: what it folded, and what that cost."""

    entities: Entities
    seconds: float  # from connecting to the folded state, Stream-Up-To-Date seen
    wire_bytes: int  # received, headers included
    body_bytes: int
    responses: int
    snapshot: bool  # the first response began with a snapshot-start marker
    skipped: int  # messages that were not State Protocol messages

    def summary(self) -> dict[str, Any]:
        values = asdict(self)
        values.update(entities=len(self.entities))
        return values


def join(port: int, path: str, params: str, bound: float) -> Joined:
    """Reads from offset -1, following Stream-Next-Offset until Stream-Up-To-Date, and folds
    every response (replace-value semantics) on the way: a late joiner's reader loop."""
    began = time.perf_counter()
    entities: Entities = {}
    offset, body_bytes, skipped, snapshot = "-1", 0, 0, False
    with client.Connection(port) as connection:
        for responses in range(1, MAX_RESPONSES + 1):
            response = connection.request("GET", f"{path}?offset={offset}{params}")
            if response.status != 200:
                raise RuntimeError(f"GET {path} answered {response.status}: {response.body!r:.200}")
            messages = json.loads(response.body)
            if responses == 1:
                snapshot = bool(messages) and is_snapshot_start(messages[0])
            body_bytes += len(response.body)
            skipped += fold(entities, messages)
            if response.headers.get("stream-up-to-date") == "true":
                seconds = time.perf_counter() - began
                received = connection.received
                return Joined(entities, seconds, received, body_bytes, responses, snapshot, skipped)
            offset = response.headers["stream-next-offset"]
            if time.perf_counter() - began > bound:
                break
    raise RuntimeError(f"GET {path}{params}: not up to date after {responses} responses")


def checked_join(port: int, path: str, params: str, expected: Entities, plan: Plan) -> Joined:
    joined = join(port, path, params, plan.state_bound)
    wrong = difference(expected, joined.entities)
    if wrong:
        raise RuntimeError(f"the fold of {path}?offset=-1{params} is not the state: {wrong}")
    return joined


def create(server: Server, name: str, headers: dict[str, str] | None = None) -> str:
    path = f"/v1/stream/{name}"
    response = client.request(server.port, "PUT", path, {"Content-Type": JSON, **(headers or {})})
    if response.status not in (200, 201):
        raise RuntimeError(f"PUT {path} answered {response.status}: {response.body!r:.200}")
    return path


def seed(server: Server, paths: list[str], bodies: Iterable[bytes], plan: Plan) -> dict[str, Any]:
    """POSTs each body to every path in turn, in order on one connection (a fold depends on
    the order); the first POST's Stream-Next-Offset per path, seconds, POSTs."""
    began = time.perf_counter()
    first: dict[str, str] = {}
    posts = 0
    with client.Connection(server.port) as connection:
        for body in bodies:
            for path in paths:
                response = connection.request("POST", path, {"Content-Type": JSON}, body)
                if response.status not in (200, 204):
                    raise RuntimeError(f"POST {path} answered {response.status}")
                first.setdefault(path, response.headers.get("stream-next-offset", ""))
                posts += 1
            if time.perf_counter() - began > plan.state_bound:
                raise RuntimeError(f"seeding {paths} took over {plan.state_bound:g} s")
    return {"seconds": time.perf_counter() - began, "posts": posts, "first_offsets": first}


def _median(runs: list[Joined]) -> Joined:
    return sorted(runs, key=lambda run: run.seconds)[(len(runs) - 1) // 2]


def late_joiner(server: Server, plan: Plan) -> dict[str, Any]:
    """A stream of N changes over K keys; a late joiner's full replay from -1 (every server)
    and its one `?state=snapshot` request (ours); each read `state_repeats` times, the
    median; both folds checked against the changes appended."""
    expected: Entities = {}
    path = create(server, "bench-state-joiner")
    bodies = batches(changes(plan.state_changes, plan.state_keys), plan.state_batch, expected)
    seeded = seed(server, [path], bodies, plan)
    result: dict[str, Any] = {
        "changes": plan.state_changes,
        "keys": plan.state_keys,
        "live": len(expected),
        "seed_seconds": seeded["seconds"],
    }
    readers = {"replay": ""} | ({"snapshot": SNAPSHOT} if server.spec.kind == "trio" else {})
    for label, params in readers.items():
        runs = [
            checked_join(server.port, path, params, expected, plan)
            for _ in range(plan.state_repeats)
        ]
        result[label] = {**_median(runs).summary(), "all_seconds": [r.seconds for r in runs]}
    return {"state-late-joiner": result}


def _percentile(ordered: list[float], q: float) -> float:
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)] * 1000 if ordered else math.nan


def snapshot_latency(server: Server, plan: Plan) -> dict[str, Any]:
    """A stream holding E live entities; `snapshot_requests` sequential `?state=snapshot`
    requests on one connection, each timed from sending to the last byte received."""
    expected: Entities = {}
    path = create(server, "bench-state-snapshot")
    seed(server, [path], batches(inserts(plan.snapshot_entities), plan.state_batch, expected), plan)
    first = checked_join(server.port, path, SNAPSHOT, expected, plan)
    times: list[float] = []
    with client.Connection(server.port) as connection:
        for _ in range(plan.snapshot_requests):
            began = time.perf_counter()
            response = connection.request("GET", f"{path}?offset=-1{SNAPSHOT}")
            times.append(time.perf_counter() - began)
            if response.status != 200:
                raise RuntimeError(f"GET {path}{SNAPSHOT} answered {response.status}")
    ordered = sorted(times)
    return {
        "state-snapshot": {
            "entities": plan.snapshot_entities,
            "snapshot": first.snapshot,
            "body_bytes": first.body_bytes,
            "requests": len(times),
            "p50_ms": _percentile(ordered, 0.5),
            "p99_ms": _percentile(ordered, 0.99),
            "max_ms": _percentile(ordered, 1.0),
        }
    }


def wrk_changes(count: int) -> Entities:
    """The state the `append.lua` "state" body (upserts of k1..kN) leaves, however often."""
    return {
        (TYPE, f"k{i}"): {"text": f"todo {i}", "done": False, "rev": i} for i in range(1, count + 1)
    }


def view_append(server: Server, plan: Plan) -> dict[str, Any]:
    """wrk POSTs of a JSON array of change messages to a fresh stream never read as state,
    and to one on which one `?state=snapshot` request was made first (its view then stays
    resident and is updated on every commit); rounds alternate, each kind's median kept."""
    url = server.base + create(server, "bench-state-warmup")
    args = [JSON, "state", str(plan.json_batch)]
    run_wrk(url, "append", args, connections=plan.json_connections, duration=plan.warmup)
    rounds: dict[str, list[dict[str, Any]]] = {"plain": [], "view": []}
    views: list[bool] = []
    for number in range(1, plan.view_rounds + 1):
        for kind in ("plain", "view") if number % 2 else ("view", "plain"):
            path = create(server, f"bench-state-{kind}-{number}")
            if kind == "view":
                response = client.request(server.port, "GET", f"{path}?offset=-1{SNAPSHOT}")
                body = json.loads(response.body) if response.status == 200 else []
                views.append(bool(body) and is_snapshot_start(body[0]))
            raw = run_wrk(
                server.base + path,
                "append",
                args,
                connections=plan.json_connections,
                duration=plan.duration,
            )
            rounds[kind].append(wrk_summary(raw))
    # The last stream measured with a view: its snapshot after the load is still the state.
    view_path = f"/v1/stream/bench-state-view-{plan.view_rounds}"
    checked_join(server.port, view_path, SNAPSHOT, wrk_changes(plan.json_batch), plan)
    result: dict[str, Any] = {"view_resident": bool(views) and all(views)}
    for kind, runs in rounds.items():
        median = sorted(runs, key=lambda r: r["rps"])[(len(runs) - 1) // 2]
        result[kind] = {**median, "round_rps": [r["rps"] for r in runs]}
    result["ratio"] = result["view"]["rps"] / (result["plain"]["rps"] or math.nan)
    return {"state-view-append": result}


def disk_bytes(data_dir: Path, name: str) -> int:
    """The bytes of a stream's files: storage names them by the sha256 of the stream name
    (actors/storage/files.py): the log, its checkpoints, whatever compaction writes."""
    digest = hashlib.sha256(name.encode()).hexdigest()
    return sum(path.stat().st_size for path in data_dir.rglob(digest + "*") if path.is_file())


def compaction(server: Server, plan: Plan) -> dict[str, Any]:
    """The same changes appended to a stream created with `Stream-State-Compaction` and to
    one without; their files' sizes once the first has shrunk (or `compaction_wait` passed).
    Compacted means a read at the first POST's offset, below any compaction point, is 410."""
    names = ("bench-state-compacted", "bench-state-uncompacted")
    compacted = create(server, names[0], {COMPACTION: str(plan.compaction_bytes)})
    plain = create(server, names[1])
    expected: Entities = {}
    bodies = batches(
        changes(plan.disk_changes, plan.state_keys, seed=12), plan.state_batch, expected
    )
    seeded = seed(server, [compacted, plain], bodies, plan)

    def sizes() -> tuple[int, int]:
        return disk_bytes(server.data_dir, names[0]), disk_bytes(server.data_dir, names[1])

    deadline = time.perf_counter() + plan.compaction_wait
    while sizes()[0] * 2 > sizes()[1] and time.perf_counter() < deadline:
        time.sleep(0.2)
    size, plain_size = sizes()
    early = seeded["first_offsets"][compacted]
    answer = client.request(server.port, "GET", f"{compacted}?offset={early}").status
    joined = checked_join(server.port, compacted, SNAPSHOT, expected, plan)
    return {
        "state-compaction": {
            "changes": plan.disk_changes,
            "threshold": plan.compaction_bytes,
            "compacted_bytes": size,
            "uncompacted_bytes": plain_size,
            "compacted": answer == 410,
            "early_read_answer": answer,
            "snapshot": joined.snapshot,
            "snapshot_body_bytes": joined.body_bytes,
        }
    }
