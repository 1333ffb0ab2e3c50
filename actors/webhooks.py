"""Webhook deliveries over HTTP: httpx on Trio, bounded, and only to safe addresses.

Every delivery resolves the URL's host again and checks each address it resolves to
(`streams.protocol.webhook_urls`: a name may have been re-pointed at a private address since
the subscription was made), then connects to the checked address itself, with the URL's host
in `Host` and in TLS's SNI (so a second lookup by the client cannot be steered elsewhere).
Redirects are not followed (a 3xx is a failed delivery). Each delivery has one timeout for
everything, reads at most `max_reply_bytes` of the reply, and at most `concurrency` run at
once.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable

import attrs
import httpx
import trio

from streams.protocol.errors import ProtocolError
from streams.protocol.webhook_urls import Target, rejected, target

logger = logging.getLogger(__name__)

Resolve = Callable[[str, int], Awaitable[list[str]]]


async def resolve(host: str, port: int) -> list[str]:
    infos = await trio.socket.getaddrinfo(host, port, type=trio.socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


@attrs.frozen
class Outcome:
    ok: bool  # the receiver answered 2xx
    done: bool = False  # ... with {"done": true}
    detail: str = ""


@attrs.frozen
class WebhookLimits:
    timeout: float = 10.0
    max_reply_bytes: int = 64 * 1024
    concurrency: int = 32
    allow_local_http: bool = True


class Webhooks:
    def __init__(
        self,
        limits: WebhookLimits,
        resolver: Resolve = resolve,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.limits = limits
        self.resolve = resolver
        self.client = httpx.AsyncClient(
            timeout=limits.timeout, follow_redirects=False, trust_env=False, transport=transport
        )
        self.limiter = trio.CapacityLimiter(limits.concurrency)

    async def check(self, url: str) -> tuple[Target, str]:
        """The URL's target and an address it may be delivered to; 400
        WEBHOOK_URL_REJECTED if it is unsafe or does not resolve."""
        found = target(url, self.limits.allow_local_http)
        try:
            with trio.fail_after(self.limits.timeout):
                addresses = await self.resolve(found.host, found.port)
        except (OSError, trio.TooSlowError):
            raise rejected(f"webhook host {found.host!r} does not resolve") from None
        if not addresses or not all(found.allows(address) for address in addresses):
            raise rejected("webhook.url must not target private, loopback or link-local hosts")
        return found, addresses[0]

    async def post(self, url: str, body: bytes, signature: str) -> Outcome:
        async with self.limiter:
            try:
                with trio.fail_after(self.limits.timeout):
                    return await self._post(url, body, signature)
            except ProtocolError as error:
                return Outcome(False, detail=error.detail)
            except (httpx.HTTPError, OSError, trio.TooSlowError) as error:
                return Outcome(False, detail=f"{type(error).__name__}: {error}")

    async def _post(self, url: str, body: bytes, signature: str) -> Outcome:
        found, address = await self.check(url)
        original = httpx.URL(url)
        pinned = original.copy_with(host=address)
        headers = {
            "Host": original.netloc.decode("ascii"),
            "Content-Type": "application/json",
            "Accept-Encoding": "identity",  # the reply's bytes are counted as they come
            "Webhook-Signature": signature,
        }
        extensions = {"sni_hostname": found.host} if found.scheme == "https" else {}
        request = self.client.build_request(
            "POST", pinned, content=body, headers=headers, extensions=extensions
        )
        response = await self.client.send(request, stream=True)
        try:
            reply = bytearray()
            if response.headers.get("content-encoding", "identity") == "identity":
                async for chunk in response.aiter_bytes():  # not decompressed: counted as sent
                    reply += chunk
                    if len(reply) > self.limits.max_reply_bytes:
                        break  # a reply this large is not {"done": true}
        finally:
            await response.aclose()
        if not 200 <= response.status_code < 300:
            return Outcome(False, detail=f"HTTP {response.status_code}")
        return Outcome(True, done=_done(bytes(reply), self.limits.max_reply_bytes))

    async def aclose(self) -> None:
        await self.client.aclose()


def _done(reply: bytes, limit: int) -> bool:
    if len(reply) > limit:
        return False
    try:
        parsed = json.loads(reply)
    except (ValueError, UnicodeDecodeError):
        return False
    return isinstance(parsed, dict) and parsed.get("done") is True
