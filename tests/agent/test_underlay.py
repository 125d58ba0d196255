"""The agent's move of the underlay address to br-phy, as seen from a peer on the underlay.

A peer node (its own ovsdb-server + ovs-vswitchd, a `br-phy` holding its underlay address, a
Geneve port so the userspace tunnel neighbour cache is on) is wired to the agent's node by a
veth. The peer resolves the node's underlay address while `uplink0` still holds it; once the
agent has moved it to br-phy (another MAC), the peer's kernel and its vswitchd must know the
new MAC, or Geneve packets to the node are lost.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

from lab import netns as lab_netns
from lab.ovs import FailMode, OvsNode
from tests.agent.harness import UNDERLAY, UNDERLAY_IF, AgentBed, agent_bed
from tests.conftest import NetnsFactory, OvsNodeFactory
from tests.support import wait_until

PEER_UNDERLAY = ipaddress.IPv4Interface("198.18.0.12/24")
PEER_IF = "phy0"
WAIT = 15.0


def _kernel_mac(peer: OvsNode, ip: ipaddress.IPv4Address) -> str | None:
    """The MAC the peer's kernel has for `ip` on br-phy, or None."""
    out = lab_netns.Netns(peer.netns).ip("neigh", "show", str(ip), "dev", "br-phy").stdout.split()
    return out[out.index("lladdr") + 1].lower() if "lladdr" in out else None


def _tunnel_mac(peer: OvsNode, ip: ipaddress.IPv4Address) -> str | None:
    """The MAC the peer's vswitchd tunnel neighbour cache has for `ip`, or None."""
    for line in peer.appctl("tnl/neigh/show").splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0] == str(ip):
            return parts[1].lower()
    return None


def _wait_for(what: str, check: Callable[[], bool], extra: Callable[[], str]) -> None:
    wait_until(check, WAIT, what, detail=extra)


def _peer(ovs_node_factory: OvsNodeFactory) -> OvsNode:
    peer = ovs_node_factory("peer", bridge=None)
    peer.add_bridge("br-phy", fail_mode=FailMode.STANDALONE)
    # the userspace datapath snoops ARP for its tunnel neighbour cache only while it has a tunnel port
    peer.add_bridge("br-int")
    peer.vsctl(
        "add-port", "br-int", "tun0", "--", "set", "Interface", "tun0", "type=geneve",
        "options:remote_ip=flow", "options:key=flow",
    )  # fmt: skip
    return peer


def _wire_peer(peer: OvsNode) -> None:
    peer.vsctl("add-port", "br-phy", PEER_IF)
    ns = lab_netns.Netns(peer.netns)
    ns.ip("addr", "add", str(PEER_UNDERLAY), "dev", "br-phy")
    ns.ip("link", "set", "br-phy", "up")


def _both_know(bed: AgentBed, peer: OvsNode, mac: str) -> None:
    ip = UNDERLAY.ip

    def state() -> str:
        known = f"kernel: {_kernel_mac(peer, ip)}, tnl/neigh: {_tunnel_mac(peer, ip)}, want {mac}"
        return f"{known}\n{bed.agent_log()}"

    _wait_for(
        f"the peer to know {ip} at {mac}",
        lambda: _kernel_mac(peer, ip) == mac and _tunnel_mac(peer, ip) == mac,
        state,
    )


def test_peers_learn_br_phy_mac_at_every_agent_start(
    ovs_node_factory: OvsNodeFactory, netns: NetnsFactory
) -> None:
    peer = _peer(ovs_node_factory)
    with agent_bed(ovs_node_factory, netns, peer=(peer.netns, PEER_IF)) as bed:
        _wire_peer(peer)
        old_mac = lab_netns.link_info(bed.node.netns, UNDERLAY_IF).mac.lower()
        # before the agent: the peer resolves the node's address to uplink0's MAC (its kernel
        # from the reply, its vswitchd by snooping the reply crossing br-phy)
        peer_ns = lab_netns.Netns(peer.netns)

        def resolved_old() -> bool:
            peer_ns.exec("ping", "-c1", "-W1", str(UNDERLAY.ip), check=False)
            return _kernel_mac(peer, UNDERLAY.ip) == old_mac and _tunnel_mac(peer, UNDERLAY.ip) == old_mac

        _wait_for("the peer to resolve the node's address to uplink0's MAC", resolved_old, lambda: "")

        bed.start_agent()
        new_mac = lab_netns.link_info(bed.node.netns, "br-phy").mac.lower()
        assert new_mac != old_mac
        _both_know(bed, peer, new_mac)
        # uplink0 (now an OVS port without addresses) no longer answers ARP for the node's addresses
        arp_ignore = lab_netns.Netns(bed.node.netns).exec(
            "cat", f"/proc/sys/net/ipv4/conf/{UNDERLAY_IF}/arp_ignore"
        )
        assert arp_ignore.stdout.strip() == "1"

        # a restart announces again (here: the peer's entries were put back to the old MAC, as a
        # crash between the move and the announcement would leave them)
        assert bed.agent is not None and bed.agent.stop() == 0
        peer_ns.ip("neigh", "replace", str(UNDERLAY.ip), "lladdr", old_mac, "dev", "br-phy", "nud", "stale")
        peer.appctl("tnl/neigh/set", "br-phy", str(UNDERLAY.ip), old_mac)
        # ... and its datapath forgets the first announcement's cached flow (for up to 10 s it
        # would pass identical ARP frames without the upcall in which vswitchd snoops them)
        peer.appctl("dpctl/del-flows")
        assert _kernel_mac(peer, UNDERLAY.ip) == old_mac and _tunnel_mac(peer, UNDERLAY.ip) == old_mac
        bed.start_agent()
        _both_know(bed, peer, new_mac)
        # and the address is still where it belongs: the peer reaches the node through br-phy
        assert peer_ns.exec("ping", "-c1", "-W2", str(UNDERLAY.ip), check=False).returncode == 0
