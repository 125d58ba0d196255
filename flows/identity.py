"""Addresses derived from others: pod and gateway MACs come from their IPv4 addresses."""

from __future__ import annotations

import ipaddress

MAC_PREFIX = "0a:58"


def mac_for_ip(ip: ipaddress.IPv4Address | str) -> str:
    """Return the MAC of the interface holding `ip`: `0a:58:` followed by the four IPv4 bytes.

    0a is a locally administered unicast prefix; Kubernetes' own bridge plugin uses the same
    scheme, so the controller can compute every L2 address from API data alone.
    """
    # IPv4Address(an IPv4Address) would print and parse it again: use its bytes directly.
    packed = (ip if isinstance(ip, ipaddress.IPv4Address) else ipaddress.IPv4Address(ip)).packed
    return MAC_PREFIX + "".join(f":{b:02x}" for b in packed)
