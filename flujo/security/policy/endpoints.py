"""Agent endpoints: which URLs, hosts and addresses an agent may reach.

Checked *statically* at validation (scheme, host globs, literal addresses,
cloud metadata names) and again when a remote agent is built, with the host
*resolved* (``socket.getaddrinfo``) so a name pointing at a metadata,
loopback or private address is refused — :func:`endpoint_problems`.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import socket
from collections.abc import Callable, Sequence
from typing import Any

from flujo.security.policy.model import SecurityPolicy

__all__ = [
    "ALWAYS_DENIED_NETWORKS",
    "LOOPBACK_NETWORKS",
    "METADATA_HOSTS",
    "PRIVATE_NETWORKS",
    "IPAddress",
    "Resolver",
    "endpoint_problems",
]

METADATA_HOSTS = frozenset(
    {
        "metadata.google.internal",
        "metadata.goog",
        "metadata",
        "instance-data",
        "instance-data.ec2.internal",
        "metadata.azure.internal",
        "metadata.tencentyun.com",
        "metadata.platformequinix.com",
    }
)
"""Names of cloud instance-metadata services; always refused."""


def _networks(*cidrs: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(c) for c in cidrs)


ALWAYS_DENIED_NETWORKS = _networks(
    "169.254.0.0/16",  # IPv4 link-local: AWS, GCP, Azure, OCI metadata at .169.254
    "fe80::/10",  # IPv6 link-local
    "fd00:ec2::254/128",  # AWS metadata over IPv6
    "100.100.100.200/32",  # Alibaba Cloud metadata
    "0.0.0.0/8",  # "this host": 0.0.0.0 reaches local services on Linux
    "::/128",  # unspecified
    "224.0.0.0/4",  # multicast
    "ff00::/8",
    "240.0.0.0/4",  # reserved, broadcast
)
"""Addresses no agent endpoint may reach, whatever the policy says."""

LOOPBACK_NETWORKS = _networks("127.0.0.0/8", "::1/128")
PRIVATE_NETWORKS = _networks(
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",  # carrier-grade NAT, used by some cluster networks
    "198.18.0.0/15",
    "fc00::/7",  # unique local
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]
"""``(host, port) -> addresses``; the default uses :func:`socket.getaddrinfo`."""


def _host_matches(host: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(host, p.lower().rstrip(".")) for p in patterns)


def _literal_address(host: str) -> IPAddress | None:
    """``host`` as an address, accepting the forms C resolvers accept (``2852039166``)."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if host and all(c in "0123456789abcdefx." for c in host) and host[0].isdigit():
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def _embedded_v4(address: IPAddress) -> list[IPAddress]:
    """The address and any IPv4 address it carries (mapped, 6to4, Teredo, NAT64)."""
    found: list[IPAddress] = [address]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            found.append(address.ipv4_mapped)
        if address.sixtofour is not None:
            found.append(address.sixtofour)
        if address.teredo is not None:
            found.append(address.teredo[1])
        if address in _NAT64:
            found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return found


def _in(address: IPAddress, networks: Sequence[Any]) -> bool:
    return any(address.version == n.version and address in n for n in networks)


def _allowed_networks(policy: SecurityPolicy) -> list[Any]:
    out = []
    for cidr in policy.allowed_cidrs:
        try:
            out.append(ipaddress.ip_network(cidr, strict=False))
        except ValueError:
            continue  # reported by check_agent_policy's config check
    return out


def _address_problem(
    address: IPAddress, policy: SecurityPolicy, named: bool, host: str
) -> str | None:
    """Why ``address`` may not be reached, or None. ``named``: the host is in allowedHosts."""
    candidates = _embedded_v4(address)
    shown = f"{host} ({address})" if host != str(address) else str(address)
    if any(_in(a, ALWAYS_DENIED_NETWORKS) for a in candidates):
        return f"{shown} is a link-local, metadata or reserved address; always refused"
    if named or any(_in(a, _allowed_networks(policy)) for a in candidates):
        return None
    if any(_in(a, LOOPBACK_NETWORKS) for a in candidates) and not policy.allow_loopback:
        return f"{shown} is a loopback address; the policy sets allowLoopback: false"
    if any(_in(a, PRIVATE_NETWORKS) for a in candidates) and not policy.allow_private_networks:
        return (
            f"{shown} is a private address; the policy sets allowPrivateNetworks: false "
            "(name the host in allowedHosts or its network in allowedCidrs)"
        )
    return None


def _system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


def _split_url(url: str) -> tuple[str, str, int, bool] | str:
    """(scheme, host, port, has_userinfo), or a problem."""
    import httpx  # the client's own parser: checks see the host it will connect to

    try:
        parsed = httpx.URL(url)
    except Exception:
        return "is not a valid URL"
    if parsed.scheme not in ("http", "https") or not parsed.host:
        return "is not an absolute http(s) URL"
    host = parsed.host.lower().rstrip(".")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    return parsed.scheme, host, port, bool(parsed.userinfo)


def endpoint_problems(
    url: str,
    policy: SecurityPolicy,
    *,
    resolve: bool | None = None,
    resolver: Resolver | None = None,
) -> list[str]:
    """Why ``url`` may not be an agent endpoint under ``policy``; empty when it may.

    ``resolve`` (default: the policy's ``resolveHosts``) looks host names up;
    without it only literal addresses, ``localhost`` and metadata names are
    classified.  Messages name the host, never the path, query or user info.
    """
    split = _split_url(url)
    if isinstance(split, str):
        return [f"endpoint {split}"]
    scheme, host, port, userinfo = split
    problems: list[str] = []
    if userinfo:
        problems.append("endpoint embeds credentials (user:password@); use apiKey or secretHeaders")
    if host in METADATA_HOSTS:
        return [*problems, f"{host} is a cloud metadata service; always refused"]
    if _host_matches(host, policy.denied_hosts):
        return [*problems, f"host {host} is in the policy's deniedHosts"]
    named = _host_matches(host, policy.allowed_hosts)
    literal = _literal_address(host)
    addresses: list[IPAddress] = []
    if literal is not None:
        addresses = [literal]
    elif host == "localhost" or host.endswith(".localhost"):
        addresses = [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")]
    if (resolve if resolve is not None else policy.resolve_hosts) and literal is None:
        try:
            found = (resolver or _system_resolver)(host, port)
        except (OSError, UnicodeError) as exc:
            reason = getattr(exc, "strerror", None) or type(exc).__name__
            return [
                *problems,
                f"cannot resolve {host} to check it against the security policy ({reason})",
            ]
        addresses = [ipaddress.ip_address(a.split("%")[0]) for a in found] or addresses
    if (policy.allowed_hosts or policy.allowed_cidrs) and not named:
        networks = _allowed_networks(policy)
        inside = bool(addresses) and all(
            any(_in(a, networks) for a in _embedded_v4(x)) for x in addresses
        )
        if not inside and (addresses or not policy.allowed_cidrs):
            lists = " or ".join(
                n
                for n, v in (("allowedHosts", policy.allowed_hosts), ("allowedCidrs", networks))
                if v
            )
            return [*problems, f"host {host} is not in the policy's {lists}"]
    for address in addresses:
        problem = _address_problem(address, policy, named, host)
        if problem is not None:
            problems.append(problem)
            break
    loopback = bool(addresses) and all(
        any(_in(a, LOOPBACK_NETWORKS) for a in _embedded_v4(x)) for x in addresses
    )
    if scheme == "http" and policy.require_https and not (policy.allow_http_loopback and loopback):
        where = "to loopback only" if policy.allow_http_loopback else "nowhere"
        problems.append(f"http is not allowed (requireHttps: true; http {where}); use https")
    return problems
