"""The subscription routes (PROTOCOL.md sections 6 and 7) under `<stream base>/__ds/`:
parse, ask `actors.subscriptions.Subscriptions`, answer. Routed before stream operations.
Errors are the spec's JSON (`{"error": {"code", "message", ...}}`).

Server auth (`DS_AUTH__MODE=jwt`) admits management requests and claims as requests for
the stream path `__ds/subscriptions/<id>`; callbacks, acks and releases carry a callback or
claim token in `Authorization` instead, and that token is their authentication.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from actors.storage import Unavailable
from actors.subscriptions import Subscriptions
from streams.protocol import responses
from streams.protocol.errors import ProtocolError
from streams.protocol.machine import Reply
from streams.protocol.subscription_config import (
    Limits,
    error,
    invalid,
    parse_config,
    parse_id,
    parse_json,
    path_list,
    stream_path,
)
from streams.protocol.wake_tokens import bearer
from streams.request import Request, respond
from streams.sending import Sender

if TYPE_CHECKING:
    from streams.http import StreamsHTTP

JSON = "application/json"
MAX_BODY = 1 << 20  # a control request's body
ACTIONS = ("callback", "claim", "ack", "release")
TOKENED = ("callback", "ack", "release")


def mount(http: StreamsHTTP, subscriptions: Subscriptions) -> SubscriptionsHTTP:
    http.subscriptions = SubscriptionsHTTP(http, subscriptions)
    return http.subscriptions


class SubscriptionsHTTP:
    def __init__(self, http: StreamsHTTP, subscriptions: Subscriptions) -> None:
        self.http = http
        self.subscriptions = subscriptions
        self.base = http.settings.stream_base_path.rstrip("/")
        self.prefix = (self.base + "/__ds/").encode()
        self.limits = Limits(max_streams=http.settings.subscription_max_links)
        self.public_url = http.settings.subscription_public_url.rstrip("/")

    def owns(self, path: bytes) -> bool:
        rest = path[len(self.prefix) :]
        return path.startswith(self.prefix) and (
            rest == b"jwks.json" or rest.startswith(b"subscriptions/")
        )

    def _base_url(self, request: Request) -> str:
        """The stream root's URL, as the client addressed it (or as configured)."""
        if self.public_url:
            return self.public_url
        scope = request.scope
        return responses.location(
            scope.get("scheme", "http"),
            request.headers.get("host"),
            scope.get("server"),
            self.base,
        )

    async def route(self, request: Request, send: Sender, path: bytes) -> None:
        try:
            reply = await self._route(request, path[len(self.prefix) :].decode("utf-8"))
        except UnicodeDecodeError:
            reply = _error(invalid("the path is not valid UTF-8"))
        except (ProtocolError, Unavailable) as raised:
            if send.started:
                raise
            failure = raised if isinstance(raised, ProtocolError) else unavailable(raised)
            self.http.metrics.errors[failure.code or "INTERNAL", failure.status] += 1
            reply = _error(failure)
        await respond(request, send, reply)

    async def _route(self, request: Request, rest: str) -> Reply:
        method = request.method
        if method == "OPTIONS":
            return responses.preflight()
        if rest == "jwks.json":
            request.operation = "subscription-jwks"
            if method not in ("GET", "HEAD"):
                raise error(405, "INVALID_REQUEST", f"{method} is not supported")
            jwks = json.dumps(await self.subscriptions.jwks()).encode()
            headers = {
                "Content-Type": "application/jwk-set+json",
                "Cache-Control": "public, max-age=300",
            }
            return Reply(200, headers, jwks)
        parts = rest.removeprefix("subscriptions/").split("/")
        id = parse_id(parts[0], self.limits)
        action = "/".join(parts[1:])
        request.operation = "subscription-" + (action.split("/")[0] or method.lower())
        if self.http.auth is not None and action not in TOKENED:
            self.http.auth.admit(request, f"__ds/subscriptions/{id}")
        subs = self.subscriptions
        if action == "":
            return await self._base(request, id)
        if action == "streams":
            _only(method, "POST")
            body = await self._json(request)
            paths = path_list(body.get("streams"), self.limits)
            await subs.add_streams(id, paths)
            return Reply(204)
        if action.startswith("streams/"):
            _only(method, "DELETE")
            path = stream_path(action.removeprefix("streams/"), self.limits, "path")
            await subs.remove_stream(id, path)
            return Reply(204)
        if action not in ACTIONS:
            raise error(404, "SUBSCRIPTION_NOT_FOUND", "no such subscription route")
        _only(method, "POST")
        token = bearer(request.headers.get("authorization")) if action in TOKENED else ""
        body = await self._json(request)
        if action == "claim":
            worker = body.get("worker")
            if not isinstance(worker, str) or not worker or len(worker) > 1024:
                raise invalid("worker must be a non-empty string of at most 1024 characters")
            return _json(200, await subs.claim(id, worker))
        if action == "release":
            await subs.release(id, token, body)
            return Reply(204)
        kind = "webhook" if action == "callback" else "pull-wake"
        return _json(200, await subs.ack(id, token, body, kind))

    async def _base(self, request: Request, id: str) -> Reply:
        subs = self.subscriptions
        method = request.method
        if method == "PUT":
            body = await request.body(MAX_BODY)
            config = parse_config(body, self.limits)
            base_url = self._base_url(request)
            created = await subs.create(id, config, base_url)
            return _json(201 if created else 200, await subs.describe(id, base_url))
        if method in ("GET", "HEAD"):
            return _json(200, await subs.describe(id, self._base_url(request)))
        if method == "DELETE":
            await subs.delete(id)
            return Reply(204)
        raise error(405, "INVALID_REQUEST", f"{method} is not supported")

    @staticmethod
    async def _json(request: Request) -> dict[str, Any]:
        return parse_json(await request.body(MAX_BODY))


def _only(method: str, allowed: str) -> None:
    if method != allowed:
        raise error(405, "INVALID_REQUEST", f"{method} is not supported here")


def _json(status: int, body: dict[str, Any]) -> Reply:
    return Reply(
        status, {"Content-Type": JSON, "Cache-Control": "no-store"}, json.dumps(body).encode()
    )


def unavailable(cause: Unavailable) -> ProtocolError:
    """The database failed (postgres mode): nothing was changed that the retry would not."""
    return ProtocolError(
        503,
        "STORAGE_UNAVAILABLE",
        f"{cause}; retry",
        {"Retry-After": "1"},
        code="STORAGE_UNAVAILABLE",
    )


def _error(failure: ProtocolError) -> Reply:
    doc = {
        "code": failure.code or "INTERNAL",
        "message": failure.detail or failure.title,
        **failure.fields,
    }
    headers = {**failure.headers, "Content-Type": JSON}
    return Reply(failure.status, headers, json.dumps({"error": doc}).encode())
