"""The State Protocol layer over HTTP, against the real server (docs/state.md): snapshots and
entity reads, snapshot-then-live reads, validation and compaction, probed as a client would.

The expected state is always recomputed here from the changes the test sent (`Fold`), never
read back from the server's own fold.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import trio

from streams.protocol import offsets
from tests.server import running_server
from tests.state_fold import RESET, Fold, change, marker

JSON = {"Content-Type": "application/json"}
PROBLEM = "application/problem+json"
SETTINGS = {
    "DS_SERVER__LONG_POLL_TIMEOUT_SECS": "30",
    "DS_SERVER__SSE_RECONNECT_INTERVAL_SECS": "30",
}


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_server(tmp_path_factory.mktemp("state-http") / "data", SETTINGS) as url:
        yield f"{url}/v1/stream/"


@pytest.fixture
def client(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=10) as http:
        yield http


def create(client: httpx.Client, name: str, **headers: str) -> None:
    response = client.put(name, headers={**JSON, **headers})
    assert response.status_code == 201, response.text


def append(client: httpx.Client, name: str, *messages: Any, **headers: str) -> str:
    response = client.post(name, json=list(messages), headers=headers)
    assert response.status_code in (200, 204), response.text
    return response.headers["Stream-Next-Offset"]


def snapshot(client: httpx.Client, name: str, **params: Any) -> httpx.Response:
    response = client.get(name, params={"state": "snapshot", **params})
    assert response.status_code == 200, response.text
    return response


def problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    doc: dict[str, Any] = response.json()
    assert (doc["status"], doc["code"]) == (status, code)
    return doc


def stored(client: httpx.Client, name: str) -> tuple[str, bytes]:
    """The stream's tail and its whole content, read as plain bytes from the start."""
    tail = client.head(name).headers["Stream-Next-Offset"]
    body = client.get(name, params={"offset": offsets.encode(0)}).content
    return tail, body


# ---- snapshots ----------------------------------------------------------------------------


def test_a_snapshot_is_the_fold_in_last_write_order(client: httpx.Client) -> None:
    create(client, "snap")
    fold = Fold()
    batches: list[list[Any]] = [
        [
            change("a", {"title": "one"}, "insert", txid="t1", timestamp="2026-01-01T00:00:00Z"),
            change("b", 2, "insert", kind="user", txid="t2"),
            {"not": "a change"},
            42,
            change("c", None, "upsert"),  # null is a value
        ],
        [change("a", {"title": "uno"}, "update"), change("d", 4), change("d", 0, "delete")],
        [change("b", 3, "upsert", kind="user", timestamp="2026-02-02T00:00:00Z")],
    ]
    tail = ""
    for batch in batches:
        tail = append(client, "snap", *batch)
        fold.apply(*batch)
    expected = fold.snapshot(tail)
    etags = set()
    for params in ({"offset": "-1"}, {}):
        response = snapshot(client, "snap", **params)
        assert response.headers["content-type"] == "application/json"
        assert response.headers["Stream-Next-Offset"] == tail
        assert response.headers["Stream-Up-To-Date"] == "true"
        assert response.json() == expected
        assert [row["key"] for row in response.json()[1:-1]] == ["c", "a", "b"]
        assert "Stream-State-Base" not in response.headers
        assert response.headers["Stream-State-Skipped"] == "2"  # {"not": ...} and 42
        etags.add(response.headers["ETag"])
    assert len(etags) == 1  # with offset=-1 or without: the same snapshot


def test_a_snapshot_never_starts_with_a_reset(client: httpx.Client) -> None:
    create(client, "reset")
    tail = append(client, "reset", change("a", 1), RESET, change("b", 2), RESET)
    assert snapshot(client, "reset").json() == [
        marker("snapshot-start", tail),
        marker("snapshot-end", tail),
    ]
    tail = append(client, "reset", change("c", 3))
    body = snapshot(client, "reset").json()
    assert body[0] == marker("snapshot-start", tail)
    assert [row.get("headers", {}).get("control") for row in body] == [
        "snapshot-start",
        None,
        "snapshot-end",
    ]


def test_the_etag_follows_the_offset_and_the_types(client: httpx.Client) -> None:
    create(client, "etag")
    fold = Fold()
    messages = [change("a", 1), change("b", 2, kind="user"), change("c", 3, kind="tag")]
    tail = append(client, "etag", *messages)
    fold.apply(*messages)
    first = snapshot(client, "etag")
    tag = first.headers["ETag"]
    again = client.get("etag", params={"state": "snapshot"}, headers={"If-None-Match": tag})
    assert again.status_code == 304 and again.content == b""
    assert again.headers["ETag"] == tag

    filtered: dict[tuple[str, ...], str] = {}
    for types in (("todo",), ("user",), ("todo", "user"), ("user", "todo"), ("nothing",)):
        response = snapshot(client, "etag", type=list(types))
        assert response.json() == fold.snapshot(tail, set(types))
        assert response.headers["Stream-Next-Offset"] == tail
        filtered[types] = response.headers["ETag"]
    assert filtered[("todo", "user")] == filtered[("user", "todo")]  # a set of types
    assert len({tag, *filtered.values()}) == 5
    not_filtered = client.get(
        "etag", params={"state": "snapshot", "type": "todo"}, headers={"If-None-Match": tag}
    )
    assert not_filtered.status_code == 200

    tail = append(client, "etag", change("a", 10))
    moved = client.get("etag", params={"state": "snapshot"}, headers={"If-None-Match": tag})
    assert moved.status_code == 200
    assert moved.headers["ETag"] != tag
    assert moved.headers["Stream-Next-Offset"] == tail


def test_state_is_ignored_at_any_other_offset(client: httpx.Client) -> None:
    create(client, "plain")
    middle = append(client, "plain", change("a", 1), change("b", 2))
    tail = append(client, "plain", change("a", 3))
    for offset in (offsets.encode(0), middle, tail, "now"):
        plain = client.get("plain", params={"offset": offset})
        assert plain.status_code == 200
        for state in ("snapshot", "entity", "bogus"):
            read = client.get("plain", params={"offset": offset, "state": state, "type": "todo"})
            assert read.status_code == 200, (offset, state, read.text)
            assert read.content == plain.content
            assert read.headers["Stream-Next-Offset"] == plain.headers["Stream-Next-Offset"]
    whole = client.get("plain", params={"offset": offsets.encode(0), "state": "snapshot"})
    assert [m["value"] for m in whole.json()] == [1, 2, 3]  # the raw log, not a snapshot


def test_an_unknown_state_at_the_start_is_400(client: httpx.Client) -> None:
    create(client, "bogus")
    before = stored(client, "bogus")
    queries: list[dict[str, Any]] = [
        {"offset": "-1", "state": "bogus"},
        {"state": "bogus"},
        {"state": ""},
        {"state": "entity", "type": "todo"},  # no key
        {"state": "entity", "type": ["todo", "user"], "key": "a"},
        {"state": "entity", "type": "todo", "key": "a", "live": "sse"},
    ]
    for params in queries:
        problem(client.get("bogus", params=params), 400, "BAD_REQUEST")
    assert stored(client, "bogus") == before


def test_an_entity_is_its_value(client: httpx.Client) -> None:
    create(client, "entity")
    append(client, "entity", change("a", {"n": [1, 2]}), change("z", None))
    tail = append(client, "entity", change("b", "two", kind="user"))
    for params in ({}, {"offset": "-1"}):
        read = client.get(
            "entity", params={"state": "entity", "type": "todo", "key": "a", **params}
        )
        assert read.status_code == 200
        assert read.headers["content-type"] == "application/json"
        assert read.json() == {"n": [1, 2]}
        assert read.headers["Stream-Next-Offset"] == tail
    null = client.get("entity", params={"state": "entity", "type": "todo", "key": "z"})
    assert (null.status_code, null.content) == (200, b"null")
    absent = client.get("entity", params={"state": "entity", "type": "todo", "key": "b"})
    assert problem(absent, 404, "ENTITY_NOT_FOUND")
    assert absent.headers["Stream-Next-Offset"] == tail

    tail = append(client, "entity", change("a", operation="delete"))
    deleted = client.get("entity", params={"state": "entity", "type": "todo", "key": "a"})
    problem(deleted, 404, "ENTITY_NOT_FOUND")
    assert deleted.headers["Stream-Next-Offset"] == tail
    problem(
        client.get("missing", params={"state": "entity", "type": "t", "key": "k"}),
        404,
        "STREAM_NOT_FOUND",
    )


def test_state_reads_of_a_binary_stream_are_400(client: httpx.Client) -> None:
    assert client.put("binary", headers={"Content-Type": "application/octet-stream"}).is_success
    for params in (
        {"state": "snapshot"},
        {"state": "snapshot", "live": "sse"},
        {"state": "entity", "type": "t", "key": "k"},
    ):
        problem(client.get("binary", params=params), 400, "STATE_NOT_JSON")
    problem(client.get("missing", params={"state": "snapshot"}), 404, "STREAM_NOT_FOUND")


# ---- snapshot, then live ------------------------------------------------------------------


def sse_events(lines: Iterator[str]) -> Iterator[tuple[str, str]]:
    """(event, data) of each SSE event as its blank line arrives."""
    event, data = "", list[str]()
    for line in lines:
        if not line:
            if event or data:
                yield event, "\n".join(data)
            event, data = "", []
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[6:] if line.startswith("data: ") else line[5:])


def test_a_snapshot_over_sse_then_goes_live(client: httpx.Client, base_url: str) -> None:
    create(client, "sse")
    fold = Fold()
    first = [change("a", 1, txid="x"), change("b", 2)]
    tail = append(client, "sse", *first)
    fold.apply(*first)
    params = {"offset": "-1", "state": "snapshot", "live": "sse"}
    with (
        httpx.Client(base_url=base_url, timeout=10) as writer,
        client.stream("GET", "sse", params=params) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse_events(response.iter_lines())
        assert next(events) == ("data", json.dumps(fold.snapshot(tail), separators=(",", ":")))
        kind, data = next(events)
        assert kind == "control"
        control = json.loads(data)
        assert control["streamNextOffset"] == tail
        assert control["upToDate"] is True
        later = [change("a", 3), change("c", 4, "insert")]
        next_tail = append(writer, "sse", *later)  # while the reader is connected
        kind, data = next(events)
        assert (kind, json.loads(data)) == ("data", later)
        kind, data = next(events)
        assert (kind, json.loads(data)["streamNextOffset"]) == ("control", next_tail)


async def test_a_snapshot_over_long_poll_then_waits_at_its_offset(base_url: str) -> None:
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
        assert (await client.put("lp", headers=JSON)).status_code == 201
        fold = Fold()
        first = [change("a", 1), change("b", 2)]
        response = await client.post("lp", json=first)
        tail = response.headers["Stream-Next-Offset"]
        fold.apply(*first)
        with trio.fail_after(10):  # at once, though nothing new arrives
            response = await client.get(
                "lp", params={"offset": "-1", "state": "snapshot", "live": "long-poll"}
            )
        assert response.status_code == 200
        assert response.json() == fold.snapshot(tail)
        assert response.headers["Stream-Next-Offset"] == tail
        assert "Stream-Cursor" in response.headers

        polled: list[httpx.Response] = []

        async def poll() -> None:
            params = {"offset": tail, "state": "snapshot", "live": "long-poll"}
            polled.append(await client.get("lp", params=params))

        later = [change("a", 5)]
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(poll)
                appended = await client.post("lp", json=later)
        assert polled[0].status_code == 200
        assert polled[0].json() == later
        assert polled[0].headers["Stream-Next-Offset"] == appended.headers["Stream-Next-Offset"]


# ---- validation ---------------------------------------------------------------------------


def test_validation_is_part_of_the_stream_s_configuration(client: httpx.Client) -> None:
    create(client, "v-config", **{"Stream-State-Validation": "structural"})
    assert client.head("v-config").headers["Stream-State-Validation"] == "structural"
    same = client.put("v-config", headers={**JSON, "Stream-State-Validation": "structural"})
    assert same.status_code == 200
    for headers in ({"Stream-State-Validation": "semantic"}, {}):
        problem(client.put("v-config", headers={**JSON, **headers}), 409, "CONFLICT")
    bogus = client.put("v-bogus", headers={**JSON, "Stream-State-Validation": "strict"})
    problem(bogus, 400, "BAD_REQUEST")
    text = client.put(
        "v-text", headers={"Content-Type": "text/plain", "Stream-State-Validation": "semantic"}
    )
    problem(text, 400, "STATE_NOT_JSON")
    assert client.head("v-bogus").status_code == client.head("v-text").status_code == 404


SEED = [change("a", 1, "insert"), change("b", {"x": [1]}, "insert")]
BAD_STRUCTURE = [
    ([5], 0, "a message must be a JSON object"),
    ([{"type": "todo", "key": "a", "value": 1}], 0, "headers"),
    ([change("c", 1), change("d", 1, "merge")], 1, "operation"),
    ([change("c", 1), change("d", 1), {**change("e", 1), "key": 7}], 2, "key"),
    ([{"key": "k", "value": 1, "headers": {"operation": "insert"}}], 0, "type"),
    ([{"type": "todo", "key": "k", "headers": {"operation": "insert"}}], 0, "value"),
    ([change("c", 1, txid=5)], 0, "txid"),
    ([{"headers": {"control": "rewind"}}], 0, "control"),
    ([{"not": "state"}], 0, ""),
]
CONFLICTS = [
    ([change("a", 2, "insert")], 0, "insert of existing key"),
    ([change("c", 1, "insert"), change("c", 2, "insert")], 1, "insert of existing key"),
    ([change("c", 1, "update")], 0, "update of missing key"),
    ([change("c", operation="delete")], 0, "delete of missing key"),
    ([change("a", operation="delete"), change("a", operation="delete")], 1, "delete of missing"),
    ([{**change("a", 2, "update"), "old_value": 7}], 0, "old_value"),
    ([{**change("b", 2, "update"), "old_value": {"x": [2]}}], 0, "old_value"),
    ([{**change("a", 2, "update"), "old_value": None}], 0, "old_value"),
    ([RESET, change("a", 1, "update")], 1, "update of missing key"),
]


@pytest.mark.parametrize(
    ("mode", "batch", "index", "reason", "status"),
    [("structural", *case, 400) for case in BAD_STRUCTURE]
    + [("semantic", *case, 400) for case in BAD_STRUCTURE]
    + [("semantic", *case, 409) for case in CONFLICTS],
)
def test_a_refused_append_says_why_and_appends_nothing(
    client: httpx.Client,
    request: pytest.FixtureRequest,
    mode: str,
    batch: list[Any],
    index: int,
    reason: str,
    status: int,
) -> None:
    name = "v-" + hashlib.sha256(request.node.name.encode()).hexdigest()[:16]  # one per case
    create(client, name, **{"Stream-State-Validation": mode})
    append(client, name, *SEED)
    before = stored(client, name)
    before_snapshot = snapshot(client, name).json()
    response = client.post(name, json=batch)
    doc = problem(response, status, "STATE_INVALID" if status == 400 else "STATE_CONFLICT")
    assert doc["index"] == index
    assert reason in doc["reason"]
    assert stored(client, name) == before  # nothing of the batch was appended
    assert snapshot(client, name).json() == before_snapshot
    unvalidated = f"{name}-off"
    create(client, unvalidated)
    append(client, unvalidated, *SEED)
    assert client.post(unvalidated, json=batch).status_code == 204  # only validation refused it


def test_semantic_validation_accepts_what_is_consistent(client: httpx.Client) -> None:
    create(client, "v-ok", **{"Stream-State-Validation": "semantic"})
    fold = Fold()
    batches: list[list[Any]] = [
        SEED,
        [change("a", operation="delete"), change("a", 5, "insert")],
        [{**change("a", 6, "update"), "old_value": 5}, change("b", None, "upsert")],
        [{**change("b", 0, "update"), "old_value": None}, change("zz", 1, "upsert")],
        [RESET, change("a", 1, "insert")],
    ]
    tail = ""
    for batch in batches:
        tail = append(client, "v-ok", *batch)
        fold.apply(*batch)
    assert snapshot(client, "v-ok").json() == fold.snapshot(tail)


def test_producers_still_deduplicate_on_validated_streams(client: httpx.Client) -> None:
    create(client, "v-producer", **{"Stream-State-Validation": "semantic"})

    def producer(seq: int) -> dict[str, str]:
        return {"Producer-Id": "p", "Producer-Epoch": "0", "Producer-Seq": str(seq)}

    first = client.post("v-producer", json=[change("a", 1, "insert")], headers=producer(0))
    assert first.status_code == 200
    before = stored(client, "v-producer")
    # The retry would now be an insert of an existing key: it is a duplicate first.
    retry = client.post("v-producer", json=[change("a", 1, "insert")], headers=producer(0))
    assert retry.status_code == 204
    assert retry.headers["Stream-Next-Offset"] == first.headers["Stream-Next-Offset"]
    refused = client.post("v-producer", json=[change("a", 2, "insert")], headers=producer(1))
    problem(refused, 409, "STATE_CONFLICT")
    assert stored(client, "v-producer") == before
    # The refused request took no sequence number: seq 1 is still the next one.
    accepted = client.post("v-producer", json=[change("a", 2, "update")], headers=producer(1))
    assert accepted.status_code == 200


# ---- compaction ---------------------------------------------------------------------------


def test_compaction_over_http(client: httpx.Client) -> None:
    create(client, "compact", **{"Stream-State-Compaction": "1024"})
    assert client.head("compact").headers["Stream-State-Compaction"] == "1024"
    fold = Fold()
    ends = []
    for r in range(120):
        messages = [change(f"k{r % 5}", [r, "v" * 20], txid=f"t{r}")]
        if r % 7 == 3:
            messages.append(change(f"k{(r + 1) % 5}", operation="delete"))
        ends.append(append(client, "compact", *messages))
        fold.apply(*messages)
    tail = ends[-1]
    read = client.get("compact", params={"offset": "-1"})
    assert read.status_code == 200
    base = read.headers["Stream-State-Base"]
    assert offsets.decode(ends[0]) < offsets.decode(base) <= offsets.decode(tail)
    # From the start, with or without `state`: the snapshot, never the log from the base.
    assert read.json() == fold.snapshot(tail)
    assert read.headers["Stream-Next-Offset"] == tail
    assert read.headers["Stream-Up-To-Date"] == "true"
    for params in ({"state": "snapshot"}, {}, {"offset": "-1", "state": "snapshot"}):
        other = client.get("compact", params=params)
        assert other.content == read.content
        assert other.headers["ETag"] == read.headers["ETag"]
    assert f":{offsets.decode(base)}:" in read.headers["ETag"]
    cached = client.get(
        "compact", params={"offset": "-1"}, headers={"If-None-Match": read.headers["ETag"]}
    )
    assert cached.status_code == 304

    below = [end for end in ends if offsets.decode(end) < offsets.decode(base)]
    for offset in (below[0], below[-1], offsets.encode(0)):
        gone = client.get("compact", params={"offset": offset})
        doc = problem(gone, 410, "STREAM_COMPACTED")
        assert "snapshot" in doc["detail"]
        assert gone.headers["Stream-State-Base"] == base
    live = client.get("compact", params={"offset": below[-1], "live": "long-poll"})
    problem(live, 410, "STREAM_COMPACTED")
    at_base = client.get("compact", params={"offset": base})
    assert at_base.status_code == 200  # offsets at and after the base are unchanged
    assert at_base.headers["Stream-Next-Offset"] == tail

    fork = client.put(
        "compact-fork",
        headers={"Stream-Forked-From": "/v1/stream/compact", "Stream-Fork-Offset": below[-1]},
    )
    problem(fork, 410, "STREAM_COMPACTED")
    assert client.head("compact-fork").status_code == 404

    # Appends go on from the tail, and dedupe state survived the compaction.
    producer = {"Producer-Id": "p", "Producer-Epoch": "0", "Producer-Seq": "0"}
    later = [change("k0", "last")]
    assert client.post("compact", json=later, headers=producer).status_code == 200
    assert client.post("compact", json=later, headers=producer).status_code == 204
    fold.apply(*later)
    tail = client.head("compact").headers["Stream-Next-Offset"]
    assert snapshot(client, "compact").json() == fold.snapshot(tail)
    assert client.get("compact", params={"offset": ends[-1]}).json() == later


def test_compaction_is_configuration(client: httpx.Client) -> None:
    create(client, "c-config", **{"Stream-State-Compaction": "4096"})
    again = client.put("c-config", headers={**JSON, "Stream-State-Compaction": "4096"})
    assert again.status_code == 200
    problem(
        client.put("c-config", headers={**JSON, "Stream-State-Compaction": "4097"}), 409, "CONFLICT"
    )
    problem(client.put("c-config", headers=JSON), 409, "CONFLICT")
    for value in ("0", "-1", "1e3", "", "9" * 5000):
        bad = client.put("c-bad", headers={**JSON, "Stream-State-Compaction": value})
        problem(bad, 400, "BAD_REQUEST")
    text = client.put(
        "c-text", headers={"Content-Type": "text/plain", "Stream-State-Compaction": "1"}
    )
    problem(text, 400, "STATE_NOT_JSON")
    assert client.head("c-bad").status_code == client.head("c-text").status_code == 404


def compact_now(client: httpx.Client, name: str, fold: Fold) -> str:
    """Upserts until the stream compacts (bounded); its tail then."""
    for r in range(200):
        messages = [change(f"k{r % 3}", r)]
        tail = append(client, name, *messages)
        fold.apply(*messages)
        if "Stream-State-Base" in client.get(name, params={"offset": "-1"}).headers:
            return tail
    raise AssertionError("no compaction in 200 appends")


def test_a_fork_of_a_compacted_stream_reads_as_its_state(client: httpx.Client) -> None:
    create(client, "cf", **{"Stream-State-Compaction": "256"})
    fold = Fold()
    tail = compact_now(client, "cf", fold)
    assert client.put("cf-fork", headers={"Stream-Forked-From": "/v1/stream/cf"}).status_code == 201
    assert client.head("cf-fork").headers["Stream-Next-Offset"] == tail
    read = client.get("cf-fork", params={"offset": "-1"})
    assert read.status_code == 200, read.text
    assert read.json() == fold.snapshot(tail)


async def test_a_live_reader_keeps_up_through_compactions(base_url: str) -> None:
    """A reader that lags the tail by less than the compaction size never loses its place,
    here with appends larger than what a commit hands parked readers (64 KiB), which they
    read back from the log (with compaction at the tail, the SSE response ended and its
    offset was 410)."""
    size, big = 100_000, "x" * 30_000
    async with (
        httpx.AsyncClient(base_url=base_url, timeout=10) as client,
        httpx.AsyncClient(base_url=base_url, timeout=10) as reader,
    ):
        headers = {**JSON, "Stream-State-Compaction": str(size)}
        assert (await client.put("keep-up", headers=headers)).status_code == 201
        start = (await client.head("keep-up")).headers["Stream-Next-Offset"]
        received: list[Any] = []
        moved = trio.Event()
        sent = [[change(f"k{i}", f"{r} {big}") for i in range(3)] for r in range(10)]

        async def read(task_status: trio.TaskStatus[None]) -> None:
            nonlocal moved
            params = {"offset": start, "live": "sse"}
            async with reader.stream("GET", "keep-up", params=params) as response:
                task_status.started()
                lines = response.aiter_lines()
                event = ""
                async for line in lines:
                    if line.startswith("event:"):
                        event = line[6:].strip()
                    elif line.startswith("data:") and event == "data":
                        received.extend(json.loads(line[5:]))
                        moved.set()
                        moved = trio.Event()
                    if len(received) == 3 * len(sent):
                        return
            moved.set()  # the response ended early: wake the writer to fail

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                await nursery.start(read)
                for r, messages in enumerate(sent):
                    response = await client.post("keep-up", json=messages)
                    assert response.status_code == 204
                    while len(received) < 3 * (r + 1):  # the reader is one append behind
                        waited = moved
                        await waited.wait()
                        assert moved is not waited, "the live response ended"
        assert received == [message for messages in sent for message in messages]
        latest = await client.get("keep-up", params={"offset": "-1"})
        base = latest.headers["Stream-State-Base"]
        assert offsets.decode(base) > offsets.decode(start)  # it compacted meanwhile


@pytest.mark.parametrize(
    ("mode", "body", "status", "index"),
    [
        ("structural", [5, {"not": "state"}], 400, 0),
        ("structural", [change("a", 1), {"headers": {"control": "rewind"}}], 400, 1),
        ("semantic", [change("a", 1, "insert"), change("a", 2, "insert")], 409, 1),
        ("semantic", [change("zz", operation="delete")], 409, 0),
        ("semantic", [change("zz", 1, "update")], 409, 0),
    ],
)
def test_a_create_s_initial_body_is_validated_as_an_append(
    client: httpx.Client,
    request: pytest.FixtureRequest,
    mode: str,
    body: list[Any],
    status: int,
    index: int,
) -> None:
    """The body of a PUT is the stream's first append: it was stored unchecked."""
    name = "vc-" + hashlib.sha256(request.node.name.encode()).hexdigest()[:16]
    headers = {**JSON, "Stream-State-Validation": mode}
    response = client.put(name, content=json.dumps(body), headers=headers)
    doc = problem(response, status, "STATE_INVALID" if status == 400 else "STATE_CONFLICT")
    assert doc["index"] == index
    assert client.head(name).status_code == 404  # nothing was created
    created = client.put(name, content=json.dumps(SEED), headers=headers)
    assert created.status_code == 201
    tail = created.headers["Stream-Next-Offset"]
    assert snapshot(client, name).json() == Fold(SEED).snapshot(tail)


def test_a_semantic_fork_s_initial_body_is_checked_against_its_inherited_state(
    client: httpx.Client,
) -> None:
    create(client, "vf-source")
    append(client, "vf-source", *SEED)
    headers = {
        **JSON,
        "Stream-Forked-From": "/v1/stream/vf-source",
        "Stream-State-Validation": "semantic",
    }
    refused = client.put("vf", content=json.dumps([change("a", 5, "insert")]), headers=headers)
    assert problem(refused, 409, "STATE_CONFLICT")["index"] == 0
    assert client.head("vf").status_code == 404
    body = [{**change("a", 5, "update"), "old_value": 1}, change("c", 3, "insert")]
    created = client.put("vf", content=json.dumps(body), headers=headers)
    assert created.status_code == 201, created.text
    tail = created.headers["Stream-Next-Offset"]
    assert snapshot(client, "vf").json() == Fold([*SEED, *body]).snapshot(tail)


def test_a_snapshot_that_compaction_can_invalidate_is_revalidated(client: httpx.Client) -> None:
    """A cached snapshot is a starting point only until the next compaction passes its offset:
    after that, a client served it again from a shared cache (max-age=60, plus 300 s stale)
    could only continue into 410, fetch the snapshot again, and get the same stale copy."""
    create(client, "cache-compacting", **{"Stream-State-Compaction": "1024"})
    create(client, "cache-plain")
    for name in ("cache-compacting", "cache-plain"):
        append(client, name, change("a", 1))
    for params in (
        {"state": "snapshot"},
        {"offset": "-1", "state": "snapshot", "live": "long-poll"},
    ):
        compacting = client.get("cache-compacting", params=params)
        assert compacting.headers["Cache-Control"] == "no-cache"
        plain = client.get("cache-plain", params=params)
        assert "max-age=60" in plain.headers["Cache-Control"]  # no compaction: still a start
    fold = Fold([change("a", 1)])
    compact_now(client, "cache-compacting", fold)
    compacted = client.get("cache-compacting", params={"offset": "-1"})
    assert "Stream-State-Base" in compacted.headers
    assert compacted.headers["Cache-Control"] == "no-cache"
    tag = compacted.headers["ETag"]
    revalidated = client.get("cache-compacting", headers={"If-None-Match": tag})
    assert revalidated.status_code == 304  # revalidating costs no body
