"""Webhook URL safety (PROTOCOL.md 6.2, 12.8): which URLs a subscription may name, and which
addresses a delivery may connect to. Pure: the caller resolves names and asks about each
address, at creation and again before every delivery (a name may be re-pointed).

Rules: `https://` to a public address; `http://` only for the development exception,
`localhost` or `127.0.0.x` (when allowed by `DS_SUBSCRIPTIONS__ALLOW_LOCALHOST_HTTP`), and then
only to loopback addresses. Private (RFC 1918, unique-local), loopback, link-local (and so
the cloud metadata address 169.254.169.254), shared, reserved, multicast and unspecified
addresses are refused, IPv4 mapped into IPv6 too; a name counts as its worst address. URLs
with credentials are refused (they would be sent to the receiver and logged).
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

import attrs

from streams.protocol.errors import ProtocolError
from streams.protocol.subscription_config import error

LOCAL_DEV = re.compile(r"localhost|127\.0\.0\.(25[0-5]|2[0-4]\d|1?\d?\d)")


def rejected(message: str) -> ProtocolError:
    return error(400, "WEBHOOK_URL_REJECTED", message)


@attrs.frozen
class Target:
    """Where a webhook URL points: the name (or address) to resolve and its port."""

    scheme: str
    host: str
    port: int
    local_dev: bool  # the http://localhost development exception

    def allows(self, address: str) -> bool:
        """May a delivery connect to `address`, one of the host's resolved addresses?"""
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if self.local_dev:
            return ip.is_loopback
        return ip.is_global and not ip.is_multicast


def target(url: str, allow_local_http: bool) -> Target:
    """The URL's target, or 400 WEBHOOK_URL_REJECTED; an address given literally is checked
    here (names are checked once resolved, `Target.allows`)."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:
        raise rejected("webhook.url must be a valid URL") from None
    if parts.scheme not in ("http", "https") or not host:
        raise rejected("webhook.url must be an https:// URL")
    if parts.username is not None or parts.password is not None:
        raise rejected("webhook.url must not hold credentials")
    host = host.lower()
    local = LOCAL_DEV.fullmatch(host) is not None
    if parts.scheme == "http":
        if not (local and allow_local_http):
            raise rejected("webhook.url must use https (http only for localhost in development)")
    elif local or host.endswith(".localhost"):
        raise rejected("webhook.url must not target this host over https")
    found = Target(parts.scheme, host, port or (443 if parts.scheme == "https" else 80), local)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return found  # a name: checked once resolved
    if not found.allows(host):
        raise rejected("webhook.url must not target private, loopback or link-local addresses")
    return found
