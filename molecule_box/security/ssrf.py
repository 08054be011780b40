"""The one policy for agent URLs, applied at register, at create and again before each proxied call.

Always refused: link-local (cloud metadata lives there), multicast, unspecified,
reserved, broadcast and documentation (TEST-NET) ranges. Loopback, private
(RFC 1918, ULA) and shared (CGNAT, which Tailscale uses) ranges are refused
unless the operator lists them in ``MOLECULE_BOX_ALLOW_AGENT_NETWORKS``.
Hostnames are resolved and every address must pass; a name that does not
resolve is refused. An IPv6 address that carries an IPv4 one (mapped,
IPv4-compatible, SIIT, 6to4, NAT64 ``64:ff9b::/96``) is judged as that IPv4
address: otherwise ``[64:ff9b::7f00:1]`` would pass as a public address and a
NAT64 gateway would carry it to 127.0.0.1.

A URL is visible ASCII only (hosts in their ``xn--`` form): a space, CR/LF or
a Unicode digit never reaches storage, a request line or the resolver (whose
IDNA encoding would turn ``１２７.0.0.1`` into 127.0.0.1, or raise).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from urllib.parse import urlsplit

import trio

from ..errors import BadRequest

NO_INBOUND = "remote://no-inbound"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_VISIBLE_ASCII = re.compile(r"[\x21-\x7e]+")

_ALWAYS_BLOCKED = [ipaddress.ip_network(n) for n in (
    "0.0.0.0/8", "169.254.0.0/16", "192.0.0.0/24", "192.0.2.0/24", "198.18.0.0/15", "198.51.100.0/24",
    "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4", "255.255.255.255/32",
    "::/128", "fe80::/10", "ff00::/8", "2001:db8::/32", "fd00:ec2::254/128", "100::/64",
    "64:ff9b:1::/48",  # local-use NAT64: where the IPv4 address sits is the operator's choice, so unknowable
)]
#: IPv6 ranges whose last 32 bits are an IPv4 address: IPv4-compatible, SIIT (RFC 2765), NAT64 (RFC 6052).
_IPV4_IN_LOW_BITS = [ipaddress.ip_network(n) for n in ("::/96", "::ffff:0:0:0/96", "64:ff9b::/96")]
_CONDITIONAL = [ipaddress.ip_network(n) for n in (
    "127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "::1/128", "fc00::/7",
)]


class UnsafeAgentURL(BadRequest):
    def __init__(self, reason: str) -> None:
        super().__init__(f"agent URL refused: {reason}", code="unsafe_agent_url")


def ip_refusal(ip: IPAddress, allowed: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> str | None:
    """Why ``ip`` may not be an agent address, or None when it may."""
    if isinstance(ip, ipaddress.IPv6Address):
        carried = embedded_ipv4(ip)
        if carried is not None:
            reason = ip_refusal(carried, allowed)
            return reason and f"{ip} carries {carried}: {reason}"
    for net in _ALWAYS_BLOCKED:
        if ip.version == net.version and ip in net:
            return f"{ip} is in {net}, which agent URLs may never use"
    for net in _CONDITIONAL:
        if ip.version == net.version and ip in net:
            if any(ip.version == a.version and ip in a for a in allowed):
                return None
            return f"{ip} is in {net}; list it in MOLECULE_BOX_ALLOW_AGENT_NETWORKS to allow it"
    if not ip.is_global:
        return f"{ip} is not a public address"
    return None


def embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one stands for on the wire, or None (``::`` and ``::1`` carry none)."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if int(ip) > 1 and any(ip in net for net in _IPV4_IN_LOW_BITS):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def split_agent_url(url: str) -> tuple[str, int]:
    """Syntax check; returns (host, port) or raises :class:`UnsafeAgentURL`."""
    if len(url) > 2048:
        raise UnsafeAgentURL("longer than 2048 characters")
    if not _VISIBLE_ASCII.fullmatch(url):
        raise UnsafeAgentURL("only visible ASCII: no spaces, control characters (CR/LF) or non-ASCII "
                             "characters (write a non-ASCII host in its xn-- form)")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise UnsafeAgentURL("not a valid URL") from None
    if parts.scheme not in ("http", "https"):
        raise UnsafeAgentURL("scheme must be http or https")
    if not parts.hostname or parts.username or parts.password:
        raise UnsafeAgentURL("needs a host and no credentials")
    if port == 0:
        raise UnsafeAgentURL("port 0 is not a port an agent can listen on")
    return parts.hostname, port or (443 if parts.scheme == "https" else 80)


async def check_agent_url(url: str, allowed: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> str:
    """Validate ``url`` for use as an agent endpoint; returns it unchanged or raises :class:`UnsafeAgentURL`."""
    if url == NO_INBOUND:
        return url
    host, port = split_agent_url(url)
    await resolve_checked(host, port, allowed)
    return url


async def resolve_checked(host: str, port: int,
                          allowed: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> list[IPAddress]:
    """Every address ``host`` stands for (a literal IP is its own), each passed by the policy, or
    :class:`UnsafeAgentURL`. Resolved afresh each call: callers cache the answer for as long as they trust it."""
    allowed = tuple(allowed)
    try:
        addresses: list[IPAddress] = [ipaddress.ip_address(host)]
    except ValueError:
        try:
            with trio.fail_after(5):
                infos = await trio.socket.getaddrinfo(host, port, type=trio.socket.SOCK_STREAM)
        except (OSError, UnicodeError, trio.TooSlowError):  # UnicodeError: the resolver's IDNA step ("a..b")
            raise UnsafeAgentURL(f"host {host!r} does not resolve") from None
        addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
        if not addresses:
            raise UnsafeAgentURL(f"host {host!r} does not resolve") from None
    for ip in addresses:
        reason = ip_refusal(ip, allowed)
        if reason:
            raise UnsafeAgentURL(reason)
    return addresses
