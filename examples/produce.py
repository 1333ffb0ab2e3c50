"""Append with an idempotent producer: retries after errors are stored once.

    python examples/produce.py http://127.0.0.1:4437/v1/stream/demo "one" "two" "three"

Each message is one POST; a failed request is retried with the same (id, epoch, seq), so a
response lost in transit never duplicates data. The last message closes the stream.
"""

from __future__ import annotations

import json
import sys
import time
import uuid

import httpx


def main(url: str, messages: list[str]) -> None:
    producer = f"example-{uuid.uuid4().hex[:8]}"
    with httpx.Client(timeout=10) as client:
        client.put(url, headers={"Content-Type": "application/json"})
        for seq, message in enumerate(messages):
            headers = {
                "Content-Type": "application/json",
                "Producer-Id": producer,
                "Producer-Epoch": "0",
                "Producer-Seq": str(seq),
            }
            if seq == len(messages) - 1:
                headers["Stream-Closed"] = "true"
            for attempt in range(5):
                try:
                    response = client.post(url, content=json.dumps(message), headers=headers)
                    break
                except httpx.TransportError:
                    time.sleep(0.2 * 2**attempt)
            else:
                raise SystemExit(f"gave up on message {seq}")
            print(seq, response.status_code, response.headers.get("Stream-Next-Offset"))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
