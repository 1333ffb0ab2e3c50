"""Protocol errors: raised by the pure protocol code, rendered by the HTTP layer."""

from __future__ import annotations

import json
from collections.abc import Mapping

import attrs


@attrs.define(eq=False)
class ProtocolError(Exception):
    """A request the protocol rejects: a status, a short title and optional headers.

    `body` is False for responses that must stay empty (HEAD, 304, closed-stream 409).
    """

    status: int
    title: str
    detail: str = ""
    headers: Mapping[str, str] = attrs.field(factory=dict)
    code: str = ""
    body: bool = True
    fields: Mapping[str, object] = attrs.field(factory=dict)  # more problem details

    def __str__(self) -> str:
        return f"{self.status} {self.title}: {self.detail}" if self.detail else self.title

    def problem_json(self) -> bytes:
        """RFC 9457 problem details."""
        doc: dict[str, object] = {"type": "about:blank", "title": self.title, "status": self.status}
        if self.detail:
            doc["detail"] = self.detail
        if self.code:
            doc["code"] = self.code
        doc.update(self.fields)
        return json.dumps(doc).encode()


def bad_request(detail: str, code: str = "BAD_REQUEST") -> ProtocolError:
    return ProtocolError(400, "Bad Request", detail, code=code)


def conflict(detail: str, code: str = "CONFLICT", **headers: str) -> ProtocolError:
    return ProtocolError(409, "Conflict", detail, headers=_h(headers), code=code)


def not_found(detail: str = "stream not found") -> ProtocolError:
    return ProtocolError(404, "Not Found", detail, code="STREAM_NOT_FOUND")


def gone(detail: str = "stream was deleted") -> ProtocolError:
    return ProtocolError(410, "Gone", detail, code="STREAM_GONE")


def _h(headers: Mapping[str, str]) -> dict[str, str]:
    """Keyword arguments spell headers with underscores."""
    return {k.replace("_", "-"): v for k, v in headers.items()}
