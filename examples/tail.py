"""Follow a stream from where we left off, as a browser or mobile client would.

    python examples/tail.py http://127.0.0.1:4437/v1/stream/demo

The last offset is kept in `.offset` beside the script, so a restart resumes exactly there.
"""

from __future__ import annotations

import sys
from pathlib import Path

import httpx

OFFSET_FILE = Path(__file__).with_suffix(".offset")


def main(url: str) -> None:
    offset = OFFSET_FILE.read_text() if OFFSET_FILE.exists() else "-1"
    cursor: str | None = None
    with httpx.Client(timeout=60) as client:
        while True:
            params = {"offset": offset, "live": "long-poll"}
            if cursor:
                params["cursor"] = cursor
            response = client.get(url, params=params)
            response.raise_for_status()
            if response.status_code == 200 and response.content:
                sys.stdout.write(response.text + "\n")
                sys.stdout.flush()
            offset = response.headers["Stream-Next-Offset"]
            OFFSET_FILE.write_text(offset)
            cursor = response.headers.get("Stream-Cursor")
            if response.headers.get("Stream-Closed") == "true":
                return  # EOF: the writer closed the stream


if __name__ == "__main__":
    main(sys.argv[1])
