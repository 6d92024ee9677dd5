"""Who is calling: the connection's peer, or — only when that peer is a configured reverse proxy
— the client it names in `X-Forwarded-For` (and the scheme in `X-Forwarded-Proto`).

Invariants:
- With no proxy configured (`server.trusted_proxies`, the default) the peer is the client and
  the scheme is the connection's, whatever the request's headers say. Any client can write
  `X-Forwarded-For`; believing it from anyone, loopback included, lets a guesser rotate the
  header and dodge the per-address sign-in throttle.
- Behind trusted proxies the client is the right-most address in `X-Forwarded-For` that is not
  itself a trusted proxy: each proxy appends the address it saw, so everything left of the last
  untrusted hop was written by the client and proves nothing.
- This is the only place that reads forwarding headers (`X-Real-IP` and `Forwarded` are never
  read), and `cairn serve` turns uvicorn's own proxy-header handling off, so the rule holds the
  same under any server and in the in-process tests.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

from starlette.types import ASGIApp, Receive, Scope, Send

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# X-Forwarded-Proto value -> the scope's scheme, per scope type.
_SCHEMES = {
    "http": {"http": "http", "https": "https"},
    "websocket": {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"},
}


def parse_network(entry: str) -> IPNetwork:
    """One `trusted_proxies` entry (an address or a CIDR network); ValueError otherwise."""
    try:
        return ipaddress.ip_network(entry.strip(), strict=False)
    except ValueError:
        raise ValueError(f"{entry!r} is not an IP address or network") from None


def parse_address(value: str) -> IPAddress | None:
    """An address as proxies write it (`1.2.3.4`, `1.2.3.4:5678`, `[::1]:80`, `::1`), or None."""
    text = value.strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    # An IPv4 client seen through an IPv6 socket counts as the IPv4 address it is.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class TrustedProxies:
    """The reverse proxies whose forwarding headers are believed."""

    def __init__(self, entries: Iterable[str]) -> None:
        self.networks: tuple[IPNetwork, ...] = tuple(parse_network(entry) for entry in entries)

    def __bool__(self) -> bool:
        return bool(self.networks)

    def trusts(self, host: str | None) -> bool:
        """Whether `host` (a peer or a hop in X-Forwarded-For) is a configured proxy."""
        address = parse_address(host) if host else None
        return address is not None and self._trusts(address)

    def _trusts(self, address: IPAddress) -> bool:
        return any(address in network for network in self.networks)

    def client_of(self, peer: str, forwarded_for: Sequence[str]) -> str:
        """The client's address for a request from the trusted proxy `peer`.

        Hops are read right to left, skipping trusted proxies; the first other address is the
        client. A hop that is no address at all (garbage, `unknown`) stops the walk: the last
        trusted hop before it is then the best anyone can vouch for, so the request counts
        against that proxy, never against a name the client made up.
        """
        client = peer
        for hop in reversed(forwarded_for):
            address = parse_address(hop)
            if address is None:
                return client
            client = str(address)
            if not self._trusts(address):
                return client
        # Every hop is a trusted proxy: the left-most of them made the request.
        return client


def _header_values(scope: Scope, name: bytes) -> list[str]:
    """Every comma-separated item of every `name` header, in order."""
    items: list[str] = []
    for key, value in scope.get("headers", []):
        if key == name:
            items.extend(item.strip() for item in bytes(value).decode("latin-1").split(","))
    return [item for item in items if item]


class ForwardedHeaders:
    """Set the scope's client address and scheme from a trusted proxy's headers.

    Outermost middleware, so everything after it (the sign-in throttle, the session cookie's
    Secure flag) sees the same answer. A no-op when no proxy is configured.
    """

    def __init__(self, app: ASGIApp, trusted_proxies: Sequence[str]) -> None:
        self.app = app
        self.trusted = TrustedProxies(trusted_proxies)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.trusted and scope["type"] in _SCHEMES:
            peer = scope.get("client")
            if peer and self.trusted.trusts(peer[0]):
                forwarded_for = _header_values(scope, b"x-forwarded-for")
                if forwarded_for:
                    # The port of a hop further out means nothing here.
                    scope["client"] = (self.trusted.client_of(peer[0], forwarded_for), 0)
                proto = _header_values(scope, b"x-forwarded-proto")
                # The right-most value is the one the proxy next to us wrote.
                scheme = _SCHEMES[scope["type"]].get(proto[-1].lower()) if proto else None
                if scheme is not None:
                    scope["scheme"] = scheme
        await self.app(scope, receive, send)
