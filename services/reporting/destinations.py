"""Where webhooks may be sent: the public internet, and the networks an operator allows.

A webhook URL is the ledger making a request on an admin's say, from inside the council's
network. Pointed at loopback, a private network, a link-local address (the cloud metadata
service at 169.254.169.254) or any other address that is not globally routable, it would
reach what only the ledger can reach, and its delivery errors would tell what answered
there. So such an address is refused, when the subscription is made and again on every
send, after the name is resolved (a name may resolve elsewhere later), unless it is in a
network the operator allows (``LEDGER_WEBHOOK_ALLOWED_NETWORKS``, e.g. a case system on
the council's own network). A send's error is one of a few words, never the text of what
answered or failed.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from shared.core.errors import UnprocessableError

__all__ = ["Destinations", "GuardedResolver", "NotAllowedError", "networks_of"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def networks_of(text: str) -> tuple[Network, ...]:
    """The networks of a comma-separated list of CIDRs (``10.20.0.0/16,fd00::/8``)."""
    return tuple(ipaddress.ip_network(item.strip()) for item in text.split(",") if item.strip())


class NotAllowedError(UnprocessableError):
    """A webhook's address is not one the ledger may send to."""

    code = "webhook_url_not_allowed"
    title = "Webhook address not allowed"


class Destinations:
    """Which addresses webhooks may reach."""

    def __init__(self, allowed: Sequence[Network] = ()) -> None:
        self._allowed = tuple(allowed)

    def allows(self, address: Address) -> bool:
        """A globally routable address, or one of a network the operator allows."""
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if any(address in network for network in self._allowed):
            return True
        return address.is_global and not address.is_multicast

    async def check(self, host: str, port: int) -> None:
        """Refuse a host any of whose addresses may not be reached (NotAllowedError)."""
        for address in await _addresses(host, port):
            if not self.allows(address):
                raise NotAllowedError(
                    f"{host} is, or resolves to, an address webhooks may not reach (loopback, "
                    "private, link-local or otherwise not public); an operator may allow a "
                    "network with LEDGER_WEBHOOK_ALLOWED_NETWORKS"
                )


async def _addresses(host: str, port: int) -> list[Address]:
    try:
        return [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        pass
    try:
        found = await DefaultResolver().resolve(host, port, socket.AF_UNSPEC)
    except OSError as error:
        raise NotAllowedError(f"{host} cannot be resolved") from error
    return [ipaddress.ip_address(item["host"]) for item in found]


class GuardedResolver(AbstractResolver):
    """aiohttp's resolver, refusing names that resolve to an address not allowed."""

    def __init__(self, destinations: Destinations) -> None:
        self._destinations = destinations
        self._resolver = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """The addresses of a host, if every one may be reached."""
        found = await self._resolver.resolve(host, port, family)
        if not all(self._destinations.allows(ipaddress.ip_address(r["host"])) for r in found):
            raise OSError(f"{host} resolves to an address webhooks may not reach")
        return found

    async def close(self) -> None:
        """Close the resolver underneath."""
        await self._resolver.close()
