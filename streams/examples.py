"""The collab example's page (examples/collab/, docs in its README), served by the server
itself under `/examples/collab/` when `DS_EXAMPLES__COLLAB` is on, so that trying the example
is one command. Off by default.

The files are the built page (`npm run build` there writes `dist/`), read once at start: a
request can only name one of them (there is no file system path to traverse), and each
answer is a small `Reply` through the protocol's own request handling (its request cap,
timeouts, access log and metrics). `config.json` tells the page the Yjs and stream base
paths, which are settings.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import attrs

from streams.protocol.errors import ProtocolError
from streams.protocol.machine import Reply

PREFIX = b"/examples/collab"
PAGE = Path("examples") / "collab" / "dist"  # in the checkout the server runs from
BUILT: Path | None = None  # where the page is, if not there (tests set it)
TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".txt": "text/plain; charset=utf-8",
    ".png": "image/png",
    ".svg": "image/svg+xml",
}
# The page loads only its own files and talks only to this server.
POLICY = (
    "default-src 'self'; connect-src 'self'; img-src 'self' data:; style-src 'self' "
    "'unsafe-inline'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)


@attrs.frozen
class File:
    body: bytes
    content_type: str
    etag: str

    @classmethod
    def of(cls, body: bytes, content_type: str) -> File:
        return cls(body, content_type, f'"{hashlib.sha256(body).hexdigest()[:32]}"')


def built() -> Path:
    """The built page: in the working directory's checkout (`pip install .` leaves the
    package elsewhere), else in the checkout this module is in (an editable install)."""
    if BUILT is not None:
        return BUILT
    here = Path.cwd() / PAGE
    return here if here.is_dir() else Path(__file__).resolve().parent.parent / PAGE


def missing(directory: Path | None = None) -> str | None:
    """Why the page cannot be served from `directory` (the built page's), or None if it can."""
    directory = directory or built()
    if not (directory / "index.html").is_file():
        return (
            f"the collab example is not built ({directory / 'index.html'} is missing):"
            " run `npm ci && npm run build` in examples/collab"
        )
    return None


def load(
    yjs_base_path: str, stream_base_path: str, directory: Path | None = None
) -> dict[str, File]:
    """The files the page is made of (in `directory`, the built page's), by name, and its
    `config.json`."""
    directory = directory or built()
    files = {
        path.name: File.of(path.read_bytes(), TYPES[path.suffix])
        for path in sorted(directory.iterdir())
        if path.is_file() and path.suffix in TYPES
    }
    config = {"yjsBase": yjs_base_path, "streamBase": stream_base_path}
    files["config.json"] = File.of(json.dumps(config).encode(), TYPES[".json"])
    return files


class Examples:
    """Answers `/examples/collab/...` from the files `load` read."""

    def __init__(self, files: dict[str, File]) -> None:
        self.files = files

    @staticmethod
    def owns(path: bytes) -> bool:
        return path == PREFIX or path.startswith(PREFIX + b"/")

    def answer(self, method: str, path: bytes, if_none_match: str | None) -> Reply:
        """The reply to a request for `path` (which this owns)."""
        if method not in ("GET", "HEAD"):
            allow = {"Allow": "GET, HEAD"}
            raise ProtocolError(405, "Method Not Allowed", f"{method} is not supported", allow)
        if path == PREFIX:
            return Reply(308, {"Location": "/examples/collab/"})
        name = path[len(PREFIX) + 1 :].decode("utf-8", "replace") or "index.html"
        file = self.files.get(name)
        if file is None:
            raise ProtocolError(404, "Not Found", "no such file in the collab example")
        headers = {"ETag": file.etag, "Cache-Control": "no-cache"}
        if if_none_match is not None and file.etag in if_none_match:
            return Reply(304, headers)
        headers["Content-Type"] = file.content_type
        if name == "index.html":
            headers["Content-Security-Policy"] = POLICY
        return Reply(200, headers, file.body)
