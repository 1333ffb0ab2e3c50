"""Server-Sent Events framing for `live=sse` reads."""

from __future__ import annotations

import base64
import json
import re

_LINE_BREAK = re.compile(rb"\r\n|\r|\n")


def data_event(payload: bytes, *, base64_encoded: bool) -> bytes:
    """One `data` event; every line break in the payload starts a new `data:` line.

    Splitting on every CR and LF means stored bytes can never inject an event or field.
    """
    if base64_encoded:
        return b"event: data\ndata:" + base64.b64encode(payload) + b"\n\n"
    lines = _LINE_BREAK.split(payload)
    return b"event: data\n" + b"".join(_data_line(line) for line in lines) + b"\n"


def _data_line(line: bytes) -> bytes:
    """Readers drop one space after `data:`; add one only where the line starts with one."""
    return (b"data: " if line.startswith(b" ") else b"data:") + line + b"\n"


def control_event(
    next_offset: str,
    *,
    cursor: str | None,
    up_to_date: bool,
    closed: bool,
) -> bytes:
    control: dict[str, object] = {"streamNextOffset": next_offset}
    if closed:
        control["streamClosed"] = True
        control["upToDate"] = True
    else:
        if cursor is not None:
            control["streamCursor"] = cursor
        if up_to_date:
            control["upToDate"] = True
    return b"event: control\ndata:" + json.dumps(control).encode() + b"\n\n"
