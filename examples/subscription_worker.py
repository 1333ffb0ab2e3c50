"""A pull-wake worker (docs/subscriptions.md): woken through a wake stream, it claims the
subscription, reads what is new on each stream, acknowledges it, and claims again.

    python examples/subscription_worker.py [BASE_URL]     (default: $STREAMS_URL, else
                                                          http://127.0.0.1:4437)

It sets up what it needs under fresh names: a wake stream, and a pull-wake subscription to
`examples/orders-<id>/*`. A producer thread then creates three order streams and appends
orders to them while the worker runs: the worker follows the wake stream with long-polls,
and on each wake event claims the subscription (`POST .../claim`), reads every stream with
pending data from its acknowledged offset to the tail the claim reported, and acks those
tails with `done: true` (`POST .../ack`, with the claim's token). When the ack says
`next_wake`, more arrived meanwhile and it claims again at once. It exits 0 once it has
processed every order exactly once, 1 otherwise.
"""

from __future__ import annotations

import os
import sys
import threading
import uuid
from typing import Any

import httpx

STREAMS = ("a", "b", "c")
ORDERS = 20  # per stream
TIMEOUT = 30.0  # any one request; the whole run is bounded by MAX_ROUNDS long-polls
MAX_ROUNDS = 200
JSON = {"Content-Type": "application/json"}


def produce(base: str, prefix: str) -> None:
    with httpx.Client(base_url=base, timeout=TIMEOUT) as client:
        for name in STREAMS:
            client.put(f"{prefix}/{name}", headers=JSON).raise_for_status()
        for n in range(ORDERS):
            for name in STREAMS:
                order = {"stream": name, "order": n}
                client.post(f"{prefix}/{name}", json=order, headers=JSON).raise_for_status()


def read_from(client: httpx.Client, path: str, start: str, tail: str) -> tuple[list[Any], str]:
    """The messages of `path` from `start`, at least up to `tail` (the claim's view of it),
    and the offset they end at: what to ack (a read may pass `tail` by whole messages that
    arrived since the claim; acking where the read ended processes those once too)."""
    messages: list[Any] = []
    offset = start
    while offset == "-1" or offset < tail:
        response = client.get(path, params={"offset": offset})
        response.raise_for_status()
        messages.extend(response.json())
        offset = response.headers["Stream-Next-Offset"]
    return messages, offset


def work(client: httpx.Client, sub: str, seen: list[Any]) -> None:
    """Claim, process, ack; again while the ack says more is pending."""
    while True:
        claim = client.post(f"{sub}/claim", json={"worker": "example-worker"})
        if claim.status_code == 409:  # no pending work, or another worker holds the lease
            return
        claim.raise_for_status()
        wake = claim.json()
        acks = []
        for stream in wake["streams"]:
            if stream["has_pending"]:
                path, start = stream["path"], stream["acked_offset"]
                got, end = read_from(client, path, start, stream["tail_offset"])
                seen.extend(got)
                acks.append({"stream": path, "offset": end})
        done = {
            "wake_id": wake["wake_id"],
            "generation": wake["generation"],
            "acks": acks,
            "done": True,
        }
        ack = client.post(
            f"{sub}/ack", json=done, headers={"Authorization": f"Bearer {wake['token']}"}
        )
        ack.raise_for_status()
        print(f"wake {wake['generation']}: {len(acks)} stream(s) processed and acked")
        if not ack.json()["next_wake"]:
            return


def main() -> int:
    base = (
        sys.argv[1] if len(sys.argv) > 1 else os.environ.get("STREAMS_URL", "http://127.0.0.1:4437")
    )
    base = base.rstrip("/") + "/v1/stream/"
    run = uuid.uuid4().hex[:8]
    prefix, wake_stream, sub = (
        f"examples/orders-{run}",
        f"examples/wake-{run}",
        f"__ds/subscriptions/orders-{run}",
    )
    seen: list[Any] = []
    with httpx.Client(base_url=base, timeout=TIMEOUT) as client:
        client.put(wake_stream, headers=JSON).raise_for_status()
        config = {
            "type": "pull-wake",
            "pattern": f"{prefix}/*",
            "wake_stream": wake_stream,
            "lease_ttl_ms": 10_000,
            "description": "example order processor",
        }
        client.put(sub, json=config).raise_for_status()
        producer = threading.Thread(target=produce, args=(base, prefix))
        producer.start()
        offset = "-1"
        for _ in range(MAX_ROUNDS):
            if len(seen) >= ORDERS * len(STREAMS) and not producer.is_alive():
                break
            response = client.get(wake_stream, params={"offset": offset, "live": "long-poll"})
            offset = response.headers["Stream-Next-Offset"]
            if response.status_code == 200 and any(
                e.get("subscription_id") == f"orders-{run}" for e in response.json()
            ):
                work(client, sub, seen)
        producer.join(TIMEOUT)
        client.delete(sub)
    expected = sorted((name, n) for name in STREAMS for n in range(ORDERS))
    got = sorted((m["stream"], m["order"]) for m in seen)
    print(f"processed {len(got)} orders from {len(STREAMS)} streams")
    if got != expected:
        print("orders were lost or processed twice")
        return 1
    print("every order processed exactly once")
    return 0


if __name__ == "__main__":
    sys.exit(main())
