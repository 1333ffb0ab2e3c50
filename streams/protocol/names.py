"""Stream names from request paths and `Stream-Forked-From`: pure, no I/O.

A name is the percent-decoded path after `/v1/stream/` (or the base path configured), decoded
as strict UTF-8 (anything else is 400, never a U+FFFD that would merge distinct byte strings
into one stream). Names compare exactly, code point by code point: no Unicode normalization
and no case folding.
"""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

from streams.protocol.errors import bad_request, not_found

PREFIX = "/v1/stream/"
_PREFIX = PREFIX.encode()
Prefixes = tuple[bytes, ...]
DEFAULT: Prefixes = (_PREFIX,)
PLURAL = b"/v1/streams/"  # upstream's LLM proxy (packages/proxy) hard-codes this one
RESERVED = "__ds"


def prefixes(base_path: str) -> Prefixes:
    """The path prefixes streams live under, for a base path (`DS_HTTP__STREAM_BASE_PATH`):
    its own, and with the default base also the plural `/v1/streams/`."""
    prefix = (base_path.rstrip("/") + "/").encode()
    return (_PREFIX, PLURAL) if prefix == _PREFIX else (prefix,)


def request_path(raw_path: bytes | None, path: str) -> bytes:
    """The request path as percent-decoded bytes.

    ASGI's `path` is already decoded, with invalid UTF-8 replaced by U+FFFD, so the raw
    path is the source when the server gives one (hypercorn does); a query string that
    some test clients leave in it is cut off.
    """
    if raw_path is None:
        return path.encode("utf-8", "surrogatepass")
    return unquote_to_bytes(raw_path.partition(b"?")[0])


def from_path(path: bytes, max_bytes: int, under: Prefixes = DEFAULT) -> str:
    """The stream a decoded request path names; 404 outside the prefixes it lives `under`."""
    for prefix in under:
        if path.startswith(prefix):
            return _checked(path[len(prefix) :], max_bytes)
    raise not_found("no such route")


def from_fork_header(value: str, max_bytes: int, under: Prefixes = DEFAULT) -> str:
    """The stream `Stream-Forked-From` names: its path, with or without a prefix streams live
    `under` (`/v1/stream/`).

    Header values arrive decoded as latin-1, so encoding them back gives the bytes sent;
    they are percent-decoded and checked exactly like a request path.
    """
    try:  # only HTTP's whitespace: str.strip() also drops 0x85 and 0xa0, which end UTF-8 chars
        raw = unquote_to_bytes(value.strip(" \t").encode("latin-1"))
    except UnicodeEncodeError:
        raise bad_request("Stream-Forked-From must be a URL path") from None
    prefix = next((prefix for prefix in under if raw.startswith(prefix)), None)
    raw = raw[len(prefix) :] if prefix is not None else raw.lstrip(b"/")
    if not raw:
        raise bad_request("Stream-Forked-From names no stream")
    return _checked(raw, max_bytes)


def _checked(raw: bytes, max_bytes: int) -> str:
    if not raw:
        raise not_found("no stream name")
    try:
        name = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise bad_request("stream names must be valid UTF-8") from None
    if name == RESERVED or name.startswith(RESERVED + "/"):
        raise not_found("reserved path")
    if "\x00" in name:
        raise bad_request("stream names cannot contain NUL")
    if len(raw) > max_bytes:
        raise bad_request(f"stream names are at most {max_bytes} bytes")
    return name
