"""A shared todo list on a State Protocol stream: two writers, and a late joiner that needs
one request (docs/state.md).

    python examples/state_todos.py [BASE_URL]     (default: $STREAMS_URL, else
                                                  http://127.0.0.1:4437)

Alice and Bob edit the list through the server: each append is a batch of change messages
(insert, update, delete) with a txid, on an `application/json` stream created with
`Stream-State-Validation: semantic`, so an update whose `old_value` is stale is refused (409)
and retried after catching up. Each keeps a replica by folding the stream from the start
with plain catch-up reads. Carol joins late with ONE request, `GET ?state=snapshot&live=sse`:
the server's snapshot of the rows as one event, then every edit made after it, live. Alice
closes the stream at the end, which ends Carol's request; the three print their rows, and
the script exits 1 unless they agree.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import uuid
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx

Rows = dict[tuple[str, str], Any]  # (type, key) -> value

MAX_READS = 100  # catch-up reads per sync, SSE connections per late joiner: bounded loops
TIMEOUT = 30.0  # seconds for any one request, and for the late joiner to finish


def fold(rows: Rows, message: Any) -> bool:
    """Apply one message as the State Protocol does; False if it is not a State Protocol
    message (skipped). insert/update/upsert replace the whole value, delete removes, reset
    clears, the snapshot markers change nothing."""
    headers = message.get("headers") if isinstance(message, dict) else None
    if not isinstance(headers, dict):
        return False
    operation, control = headers.get("operation"), headers.get("control")
    if operation in ("insert", "update", "upsert"):
        rows[message["type"], message["key"]] = message["value"]
    elif operation == "delete":
        rows.pop((message["type"], message["key"]), None)
    elif control == "reset":
        rows.clear()
    elif control not in ("snapshot-start", "snapshot-end"):
        return False
    return True


def todo(operation: str, key: str, value: Any = None, old: Any = None) -> dict[str, Any]:
    """A change message for the todo collection (txid and timestamp added when sent)."""
    message: dict[str, Any] = {"type": "todo", "key": key, "headers": {"operation": operation}}
    if operation != "delete":
        message["value"] = value
    if old is not None:
        message["old_value"] = old
    return message


class Writer:
    """A client that edits the list: an idempotent producer, and a replica of the rows
    folded from the stream (plain reads from the offset it reached)."""

    def __init__(self, name: str, client: httpx.Client, url: str) -> None:
        self.name = name
        self.client = client
        self.url = url
        self.producer = f"{name}-{uuid.uuid4().hex[:8]}"
        self.seq = 0  # the next Producer-Seq; a refused append does not use one up
        self.txids = 0
        self.offset = "-1"
        self.rows: Rows = {}

    def sync(self) -> None:
        """Catch up: read from where the replica is until the server says up to date."""
        for _ in range(MAX_READS):
            response = self.client.get(self.url, params={"offset": self.offset})
            response.raise_for_status()
            for message in response.json():
                fold(self.rows, message)
            self.offset = response.headers["Stream-Next-Offset"]
            if response.headers.get("Stream-Up-To-Date") == "true":
                return
        raise RuntimeError(f"{self.name} did not catch up in {MAX_READS} reads")

    def send(self, *changes: dict[str, Any], close: bool = False) -> httpx.Response:
        """One append of `changes`, all under one txid; a refusal by the stream's validation
        (409 STATE_CONFLICT) is returned, not raised."""
        self.txids += 1
        txid = f"{self.name}-{self.txids}"
        stamp = {"txid": txid, "timestamp": datetime.now(UTC).isoformat()}
        batch = [{**c, "headers": {**c["headers"], **stamp}} for c in changes]
        headers = {
            "Content-Type": "application/json",
            "Producer-Id": self.producer,
            "Producer-Epoch": "0",
            "Producer-Seq": str(self.seq),
        }
        if close:
            headers["Stream-Closed"] = "true"
        body = json.dumps(batch) if batch else b""
        response = self.client.post(self.url, content=body, headers=headers)
        what = ", ".join(f"{c['headers']['operation']} {c['key']}" for c in changes)
        what = f"{what} [{txid}]" if changes else "close"
        problem = response.json() if response.status_code == 409 else {}
        if problem.get("code") == "STATE_CONFLICT":
            print(f"{self.name:>5}: {what} -> 409 {problem['code']}: {problem['reason']}")
            return response
        response.raise_for_status()
        self.seq += 1
        offset = response.headers["Stream-Next-Offset"]
        print(f"{self.name:>5}: {what} -> {response.status_code}, offset {offset}")
        return response

    def update(self, key: str, **fields: Any) -> httpx.Response:
        """Change some fields of a row: the whole new row is sent (the State Protocol
        replaces values), with the row as this replica knows it as `old_value`."""
        old = self.rows["todo", key]
        return self.send(todo("update", key, {**old, **fields}, old))


def sse_events(lines: Iterable[str]) -> Iterator[tuple[str, str]]:
    """(event, data) pairs of a text/event-stream, keep-alive comments skipped."""
    event = "message"
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                yield event, "\n".join(data)
            event, data = "message", []
        elif line.startswith(":"):
            continue
        else:
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "event":
                event = value
            elif field == "data":
                data.append(value)


class LateJoiner(threading.Thread):
    """Joins with `?state=snapshot&live=sse`: the first data event is the snapshot (the
    rows as of its offset, between snapshot-start and snapshot-end), the rest are the
    appends after it. Ends when the stream is closed (after reconnecting from its offset if
    the server closes the connection first, as it does every few minutes for CDNs)."""

    def __init__(self, name: str, client: httpx.Client, url: str) -> None:
        super().__init__(name=name, daemon=True)
        self.client = client
        self.url = url
        self.rows: Rows = {}
        self.joined = threading.Event()  # set once the snapshot is folded
        self.live = 0  # change messages received after the snapshot
        self.failure: BaseException | None = None

    def run(self) -> None:
        try:
            self._follow()
        except BaseException as error:  # reported by the main thread
            self.failure = error
            self.joined.set()

    def _follow(self) -> None:
        params = {"state": "snapshot", "live": "sse"}  # one request: snapshot, then live
        for _ in range(MAX_READS):
            with self.client.stream("GET", self.url, params=params) as response:
                response.raise_for_status()
                for event, data in sse_events(response.iter_lines()):
                    if event == "data":
                        self._fold(json.loads(data))
                    elif event == "control":
                        control = json.loads(data)
                        params = {"offset": control["streamNextOffset"], "live": "sse"}
                        if control.get("streamClosed"):
                            return
            print(f"{self.name:>5}: the server ended the connection; reconnecting from there")
        raise RuntimeError(f"{self.name} reconnected {MAX_READS} times")

    def _fold(self, messages: list[Any]) -> None:
        if self.joined.is_set():
            for message in messages:
                self.live += fold(self.rows, message)
                print(f"{self.name:>5}: live {message['headers']['operation']} {message['key']}")
            return
        for message in messages:
            fold(self.rows, message)
        start, end = messages[0]["headers"], messages[-1]["headers"]
        assert (start["control"], end["control"]) == ("snapshot-start", "snapshot-end")
        print(f"{self.name:>5}: joined with a snapshot of {len(self.rows)} rows at {end['offset']}")
        self.joined.set()


def show(rows: Rows) -> str:
    """The rows as one line of JSON, in key order."""
    return json.dumps([[t, k, v] for (t, k), v in sorted(rows.items())], sort_keys=True)


def main(base_url: str) -> int:
    url = f"{base_url.rstrip('/')}/v1/stream/todos-{uuid.uuid4().hex[:8]}"
    with httpx.Client(timeout=TIMEOUT) as client:
        created = client.put(
            url,
            headers={
                "Content-Type": "application/json",
                "Stream-State-Validation": "semantic",
            },
        )
        created.raise_for_status()
        print(f"created {url} (Stream-State-Validation: semantic)")
        alice, bob = Writer("alice", client, url), Writer("bob", client, url)

        # Before Carol joins: a history she will not have to download.
        alice.send(
            todo("insert", "milk", {"title": "buy milk", "done": False}),
            todo("insert", "dog", {"title": "walk the dog", "done": False}),
        )
        bob.send(todo("insert", "plants", {"title": "water plants", "done": False}))
        alice.sync()
        bob.sync()
        alice.update("milk", done=True)
        bob.update("milk", title="buy oat milk")  # stale: Bob has not seen Alice's edit
        bob.sync()
        bob.update("milk", title="buy oat milk")  # caught up: now it applies
        bob.send(todo("delete", "dog"))
        for n in range(3):  # a row edited many times is one row in the snapshot
            bob.sync()
            bob.update("plants", title=f"water plants ({n + 1}x)")

        carol = LateJoiner("carol", httpx.Client(timeout=TIMEOUT), url)
        carol.start()
        if not carol.joined.wait(TIMEOUT) or carol.failure is not None:
            raise SystemExit(f"carol could not join: {carol.failure!r}")

        # After Carol joined: she sees these live, over the same request.
        alice.send(todo("insert", "bills", {"title": "pay bills", "done": False}))
        alice.sync()
        alice.update("plants", done=True)
        bob.send(todo("upsert", "dog", {"title": "walk the dog again", "done": False}))
        bob.sync()
        bob.send(todo("delete", "milk"))
        alice.sync()
        alice.send(close=True)  # the end of the session: readers see the stream closed

        carol.join(TIMEOUT)
        carol.client.close()
        if carol.is_alive() or carol.failure is not None:
            raise SystemExit(f"carol did not finish: {carol.failure!r}")
        alice.sync()
        bob.sync()

    print(f"carol received {carol.live} changes live after joining")
    for name, rows in (("alice", alice.rows), ("bob", bob.rows), ("carol", carol.rows)):
        print(f"rows {name} {show(rows)}")
    agree = alice.rows == bob.rows == carol.rows
    print("alice, bob and carol agree" if agree else "the clients DISAGREE")
    return 0 if agree else 1


if __name__ == "__main__":
    default = os.environ.get("STREAMS_URL", "http://127.0.0.1:4437")
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else default))
