"""Who may do what to which stream: pure, no I/O.

A token's `scope` claim holds space-separated grants, `read:<pattern>` and `write:<pattern>`,
where a pattern is a glob over stream names split at `/`: `*` matches any characters within
one segment, a segment that is exactly `**` matches any number of segments (zero included),
and every other character is literal. Matching uses no regular expressions, so a pattern
cannot smuggle one in. Write implies nothing about read.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import attrs

from streams.protocol import names
from streams.protocol.errors import ProtocolError

Action = Literal["read", "write"]
Pattern = tuple[str, ...]  # a glob's segments
ACTIONS: dict[str, Action] = {"read:": "read", "write:": "write"}
METHODS: dict[str, Action] = {
    "GET": "read",
    "HEAD": "read",
    "PUT": "write",
    "POST": "write",
    "DELETE": "write",
}


@attrs.frozen
class Need:
    """One grant a request needs: an action on a stream."""

    action: Action
    name: str
    source: bool = False  # a fork's source, not the stream addressed


@attrs.frozen
class Grants:
    read: tuple[Pattern, ...] = ()
    write: tuple[Pattern, ...] = ()

    def allows(self, need: Need) -> bool:
        patterns = self.read if need.action == "read" else self.write
        segments = tuple(need.name.split("/"))
        return any(_matches(pattern, segments) for pattern in patterns)


def parse_scope(scope: str) -> Grants:
    """The grants in a `scope` claim; entries that are not `read:` or `write:` (other
    applications' scopes) and empty patterns grant nothing."""
    found: dict[Action, list[Pattern]] = {"read": [], "write": []}
    for entry in scope.split():
        for prefix, action in ACTIONS.items():
            if entry.startswith(prefix) and len(entry) > len(prefix):
                found[action].append(tuple(entry[len(prefix) :].split("/")))
    return Grants(tuple(found["read"]), tuple(found["write"]))


def matches(pattern: str, name: str) -> bool:
    """Whether the glob `pattern` matches the stream `name`."""
    return _matches(tuple(pattern.split("/")), tuple(name.split("/")))


def needed(
    method: str, name: str, headers: Mapping[str, str], max_name_bytes: int
) -> tuple[Need, ...]:
    """The grants a request needs: read for HEAD and GET, write for PUT, POST and DELETE,
    and for a fork also read on its source. None for OPTIONS (preflights carry no token)
    and methods the protocol refuses anyway."""
    action = METHODS.get(method)
    if action is None:
        return ()
    need = Need(action, name)
    source = headers.get("stream-forked-from") if method == "PUT" else None
    if source is None:
        return (need,)
    return need, Need("read", names.from_fork_header(source, max_name_bytes), source=True)


def unauthorized(detail: str, *, invalid: bool = True) -> ProtocolError:
    """401: no token (a bare challenge, RFC 6750 section 3.1), or one that does not verify."""
    challenge = 'Bearer error="invalid_token"' if invalid else "Bearer"
    return ProtocolError(
        401, "Unauthorized", detail, headers={"WWW-Authenticate": challenge}, code="UNAUTHORIZED"
    )


def forbidden(need: Need) -> ProtocolError:
    """403: a valid token without the grant (the name is not echoed into a header)."""
    what = "the fork source" if need.source else "this stream"
    return ProtocolError(
        403,
        "Forbidden",
        f"the token does not grant {need.action} on {what}",
        headers={"WWW-Authenticate": 'Bearer error="insufficient_scope"'},
        code="FORBIDDEN",
    )


def _matches(pattern: Pattern, name: Pattern) -> bool:
    """Segment by segment: `reach[j]` holds when the pattern so far matches name[:j]."""
    reach = [True] + [False] * len(name)
    for segment in pattern:
        if segment == "**":  # zero or more segments: everything from the first reached on
            seen = False
            for j, reached in enumerate(reach):
                seen = seen or reached
                reach[j] = seen
        else:
            reach = [False] + [reach[j] and _segment(segment, part) for j, part in enumerate(name)]
    return reach[-1]


def _segment(pattern: str, text: str) -> bool:
    """One segment, where `*` matches any run of characters: the literal parts between the
    stars must appear in order, the first at the start and the last at the end (taking the
    leftmost place for each middle part is never worse)."""
    if "*" not in pattern:
        return pattern == text
    first, *middle, last = pattern.split("*")
    if len(text) < len(first) + len(last) or not (text.startswith(first) and text.endswith(last)):
        return False
    position, end = len(first), len(text) - len(last)
    for part in middle:
        found = text.find(part, position, end)
        if found < 0:
            return False
        position = found + len(part)
    return True
