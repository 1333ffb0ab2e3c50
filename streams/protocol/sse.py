"""Server-Sent Events framing for `live=sse` reads."""

from __future__ import annotations

import base64
import json
import re

_LINE_BREAK = re.compile(rb"\r\n|\r|\n")
KEEP_ALIVE = b": keep-alive\n\n"  # a comment: proxies see traffic, clients ignore it
MAX_HEARTBEAT_SECS = 15.0


def heartbeat(long_poll_timeout: float) -> float:
    """How long an SSE response may stay quiet before a keep-alive comment."""
    return min(long_poll_timeout, MAX_HEARTBEAT_SECS)


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


class DataEvent:
    """One `data` event written a piece of payload at a time, so a large payload is never
    held whole: the outputs of `feed` and `end`, concatenated, equal `data_event(payload)`
    for the concatenated pieces, wherever the pieces are cut."""

    def __init__(self, *, base64_encoded: bool) -> None:
        self.base64_encoded = base64_encoded
        self._started = False
        self._carry = b""  # base64: the 1-2 bytes that do not fill a 3-byte group yet
        self._in_line = False  # text: the current line's `data:` prefix is written
        self._after_cr = False  # text: the last piece ended in CR, which an LF may complete

    def feed(self, piece: bytes) -> bytes:
        head = self._head()
        if self.base64_encoded:
            return head + self._base64(piece)
        return head + self._text(piece)

    def end(self) -> bytes:
        """The rest of the event: the last line (possibly empty) and the blank line."""
        head = self._head()
        if self.base64_encoded:
            return head + base64.b64encode(self._carry) + b"\n\n"
        return head + (b"\n\n" if self._in_line else b"data:\n\n")

    def _head(self) -> bytes:
        if self._started:
            return b""
        self._started = True
        return b"event: data\ndata:" if self.base64_encoded else b"event: data\n"

    def _base64(self, piece: bytes) -> bytes:
        if self._carry:
            piece = self._carry + piece
        whole = len(piece) - len(piece) % 3
        self._carry = piece[whole:]
        return base64.b64encode(piece[:whole] if self._carry else piece)

    def _text(self, piece: bytes) -> bytes:
        out: list[bytes] = []
        position = 1 if self._after_cr and piece.startswith(b"\n") else 0  # a split CRLF
        for match in _LINE_BREAK.finditer(piece, position):
            self._line(out, piece[position : match.start()])
            out.append(b"\n" if self._in_line else b"data:\n")
            self._in_line = False
            position = match.end()
        self._line(out, piece[position:])
        if piece:
            self._after_cr = piece.endswith(b"\r")
        return b"".join(out)

    def _line(self, out: list[bytes], text: bytes) -> None:
        """Part of a line: its prefix first if the line starts here."""
        if text:
            if not self._in_line:
                out.append(b"data: " if text.startswith(b" ") else b"data:")
                self._in_line = True
            out.append(text)


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
