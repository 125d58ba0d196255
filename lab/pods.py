"""Lab pod plumbing: a pod namespace joined to a node's OVS bridge by a veth pair.

This is the lab's and the tests' own plumbing (the agent does the production equivalent with
pyroute2). The host end of the veth lives in the node's namespace, where that node's
ovs-vswitchd runs, and is added to the bridge as a plain (`system`-type) interface, which the
userspace datapath reads and writes through an AF_PACKET socket.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Mapping
from dataclasses import dataclass

from lab import netns
from lab.ovs import OvsError, OvsNode

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PodPort:
    """A pod's interface and the bridge port it is attached through."""

    pod_netns: str
    ifname: str
    node_netns: str
    host_ifname: str
    bridge: str
    ofport: int
    ip: ipaddress.IPv4Interface
    mac: str
    mtu: int


def attach_veth_pod(
    node: OvsNode,
    pod_netns: str,
    *,
    host_ifname: str,
    ip: ipaddress.IPv4Interface | str,
    mac: str | None = None,
    mtu: int = 1500,
    bridge: str = "br-int",
    ifname: str = "eth0",
    ofport: int | None = None,
    gateway: ipaddress.IPv4Address | str | None = None,
    external_ids: Mapping[str, str] | None = None,
) -> PodPort:
    """Plumb `pod_netns` onto `bridge` of `node` with a veth; return the resulting port.

    The pod end `ifname` gets `ip` (CIDR form), `mac` (kernel-chosen if None), `mtu`, TX checksum
    offload off (required with the userspace datapath, or TCP breaks), and a default route via
    `gateway` if given. The host end `host_ifname` (unique within the node's namespace) is added
    to the bridge, with OpenFlow port `ofport` if given. Raises ValueError for bad input and
    NetnsError/OvsError if plumbing fails (what was created is removed again).
    """
    iface = ipaddress.IPv4Interface(ip)
    netns.validate_ifname(host_ifname)
    netns.validate_ifname(ifname)
    if ofport is not None and not 1 <= ofport <= 0xFEFF:
        raise ValueError(f"invalid ofport {ofport}: must be 1..65279")
    netns.create_veth(node.netns, host_ifname, pod_netns, ifname, mtu=mtu)
    try:
        netns.configure_link(pod_netns, ifname, mac=mac, mtu=mtu, up=True)
        netns.add_address(pod_netns, ifname, iface)
        netns.disable_tx_offload(pod_netns, ifname)
        if gateway is not None:
            netns.add_route(pod_netns, "default", via=gateway, dev=ifname)
        netns.configure_link(node.netns, host_ifname, mtu=mtu, up=True)
        cmd = ["add-port", bridge, host_ifname]
        settings = [f"external_ids:{k}={v}" for k, v in (external_ids or {}).items()]
        if ofport is not None:
            settings.append(f"ofport_request={ofport}")
        if settings:
            cmd += ["--", "set", "Interface", host_ifname, *settings]
        node.vsctl(*cmd)
        got = node.ofport(host_ifname)
        if ofport is not None and got != ofport:
            raise OvsError(cmd, -1, f"{host_ifname} got ofport {got}, requested {ofport}")
        info = netns.link_info(pod_netns, ifname)
    except BaseException:
        _undo(node, bridge, host_ifname)
        raise
    log.debug("pod %s/%s attached to %s port %d", pod_netns, ifname, bridge, got)
    return PodPort(
        pod_netns=pod_netns,
        ifname=ifname,
        node_netns=node.netns,
        host_ifname=host_ifname,
        bridge=bridge,
        ofport=got,
        ip=iface,
        mac=info.mac,
        mtu=info.mtu,
    )


def detach_veth_pod(node: OvsNode, port: PodPort) -> None:
    """Remove the bridge port and the veth pair of `port`; succeeds if parts are already gone."""
    _undo(node, port.bridge, port.host_ifname)


def _undo(node: OvsNode, bridge: str, host_ifname: str) -> None:
    try:
        node.vsctl("--if-exists", "del-port", bridge, host_ifname)
    except OvsError as exc:
        log.warning("cannot remove port %s from %s: %s", host_ifname, bridge, exc)
    netns.delete_link(node.netns, host_ifname)
