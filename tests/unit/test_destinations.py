"""Where webhooks may be sent: public addresses, and the networks an operator allows."""

from __future__ import annotations

import ipaddress

import pytest

from services.reporting.destinations import Destinations, NotAllowedError, networks_of


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "localhost",
        "10.0.0.5",
        "172.16.3.4",
        "192.168.1.10",
        "169.254.169.254",  # the cloud metadata service
        "100.64.0.1",  # carrier-grade NAT
        "0.0.0.0",  # noqa: S104 - an address refused, not one listened on
        "::1",
        "[::1]",
        "fd00::1",
        "fe80::1",
        "::ffff:127.0.0.1",
        "224.0.0.1",
    ],
)
async def test_loopback_private_link_local_and_metadata_addresses_are_refused(host: str) -> None:
    """Any address not globally routable, however written (a name, an IPv4-mapped IPv6)."""
    with pytest.raises(NotAllowedError) as refused:
        await Destinations().check(host, 443)
    assert refused.value.code == "webhook_url_not_allowed"


async def test_an_operator_may_allow_a_network_and_public_addresses_pass() -> None:
    """The council's case system on 10.20.0.0/16, when the operator says so; not 10.21."""
    allowed = Destinations(networks_of("10.20.0.0/16, fd12::/16"))
    await allowed.check("10.20.7.8", 443)
    await allowed.check("fd12::5", 443)
    with pytest.raises(NotAllowedError):
        await allowed.check("10.21.0.1", 443)
    assert Destinations().allows(ipaddress.ip_address("81.2.69.160"))
    assert Destinations().allows(ipaddress.ip_address("2a00:1450:4009:81a::200e"))
