"""Names the agent derives from a pod: MAC, OVS port name, external_ids round trip."""

from __future__ import annotations

import ipaddress

import pytest

from flows.identity import mac_for_ip as flows_mac_for_ip
from ovsagent.naming import Key, PodIdentity, mac_for_ip, port_name


@pytest.mark.parametrize("ip", ["100.64.1.10", "100.64.0.1", "100.127.255.254", "198.18.0.11"])
def test_mac_for_ip_matches_the_controllers_scheme(ip: str) -> None:
    assert mac_for_ip(ip) == flows_mac_for_ip(ip)
    assert mac_for_ip("100.64.1.10") == "0a:58:64:40:01:0a"


def test_port_names_are_short_readable_deterministic_and_distinct() -> None:
    names = {
        port_name(ns, name)
        for ns in ("default", "kube-system", "a-very-long-namespace-name-indeed")
        for name in ("web-1", "web-2", "db-0", "x" * 253, "Pod.With.Dots")
    }
    assert len(names) == 15
    for name in names:
        assert 1 <= len(name) <= 15
        assert all(c.isalnum() or c == "-" for c in name)
    assert port_name("default", "web-1") == port_name("default", "web-1")
    assert port_name("default", "web-1").startswith("web1-")
    assert port_name("default", "web-1") != port_name("other", "web-1")
    assert port_name("default", "...").startswith("pod-")


def test_port_name_refuses_an_empty_pod() -> None:
    with pytest.raises(ValueError, match="namespace and a name"):
        port_name("", "web-1")


def test_identity_round_trips_through_external_ids() -> None:
    pod = PodIdentity(
        "default", "web-1", "u1", "c1", "eth0", ipaddress.IPv4Interface("100.64.1.10/24"), "/run/netns/x"
    )
    ids = pod.external_ids()
    assert all(k.startswith("sluice.io/") for k in ids)
    assert ids[Key.MAC] == "0a:58:64:40:01:0a"
    assert PodIdentity.from_external_ids(ids) == pod
    del ids[Key.UID.value]
    with pytest.raises(ValueError, match=r"sluice\.io/uid"):
        PodIdentity.from_external_ids(ids)
    with pytest.raises(ValueError, match=r"sluice\.io/ip"):
        PodIdentity.from_external_ids({**pod.external_ids(), Key.IP.value: "not-an-ip"})
