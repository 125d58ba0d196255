"""Node set-up at agent start: br-int, the gateway port, the Geneve port, and the Node annotations.

Everything here is idempotent (the OVSDB calls write only what differs), so a restarted agent runs
it again without disturbing the bridge: same datapath id, same ofports, no flow flush.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from ovsagent import netns
from ovsagent.config import AgentConfig, DatapathType
from ovsagent.durable import makedirs_durable, write_atomic
from ovsagent.kube import (
    NODE_DATAPATH_ID,
    NODE_GATEWAY_OFPORT,
    NODE_TUNNEL_IP,
    NODE_TUNNEL_OFPORT,
    KubeApi,
)
from ovsagent.naming import mac_for_ip
from ovsagent.ovsdb import TUNNEL_PORT, Connection, OvsdbError, PortSpec

log = logging.getLogger(__name__)

# Geneve with one option adds 58 bytes, and OVS never fragments: the pod MTU leaves that room.
TUNNEL_OVERHEAD = 58
# The userspace datapath's underlay bridge: the tunnel endpoint address lives on its internal port.
PHYS_BRIDGE = "br-phy"
# In `state_dir`: br-phy's addresses and gateway routes, as last set up (see `UnderlayMemory`).
UNDERLAY_MEMORY = "underlay.json"


class NodeSetupError(Exception):
    """The node cannot be set up; the message says what is missing or failed."""


@dataclass(frozen=True, slots=True)
class Underlay:
    """The node's underlay: the tunnel endpoint address and the MTU pods get."""

    tunnel_ip: ipaddress.IPv4Address
    pod_mtu: int


@dataclass(frozen=True, slots=True)
class NodeState:
    """What node set-up established: the facts the controller needs, and what ADD uses."""

    pod_cidr: ipaddress.IPv4Network
    gateway: ipaddress.IPv4Interface
    gateway_ofport: int
    tunnel_ofport: int
    tunnel_ip: ipaddress.IPv4Address
    datapath_id: str
    mtu: int

    def annotations(self) -> dict[str, str]:
        """Return the Node annotations the controller reads."""
        return {
            NODE_TUNNEL_IP: str(self.tunnel_ip),
            NODE_GATEWAY_OFPORT: str(self.gateway_ofport),
            NODE_TUNNEL_OFPORT: str(self.tunnel_ofport),
            NODE_DATAPATH_ID: self.datapath_id,
        }


def datapath_id_for(node_name: str) -> str:
    """Return br-int's datapath id for `node_name`: 16 hex digits of SHA-256 of the name.

    Deterministic, so a restarted agent (or a rebuilt bridge) keeps the id the controller knows.
    """
    digest = hashlib.sha256(f"sluice/{node_name}".encode()).hexdigest()
    dpid = digest[:16]
    return dpid if int(dpid, 16) else "0000000000000001"


def resolve_pod_cidr(config: AgentConfig, kube: KubeApi) -> ipaddress.IPv4Network | None:
    """Return the podCIDR (the config override, else the Node's spec.podCIDR), or None when unset.

    Raises KubeError when the Node cannot be read, NodeSetupError for an invalid podCIDR.
    """
    text = config.pod_cidr_override or kube.get_node(config.node_name).pod_cidr
    if not text:
        return None
    try:
        return ipaddress.IPv4Network(text, strict=True)
    except ValueError as exc:
        raise NodeSetupError(f"Node {config.node_name}: podCIDR {text!r} is invalid: {exc}") from None


def find_underlay(config: AgentConfig, host_netns: str | None = None) -> Underlay:
    """Return the tunnel IP and pod MTU from the config and the underlay interface.

    The interface is `underlay_interface`, else the one the default route uses. Raises
    NodeSetupError when neither a tunnel IP nor an interface to take it from can be found.
    """
    ifname = config.underlay_interface or netns.default_route_interface(netns=host_netns)
    link = netns.link_addresses(ifname, netns=host_netns) if ifname else None
    if config.underlay_interface and link is None:
        raise NodeSetupError(f"underlay interface {config.underlay_interface} does not exist")
    if uses_phys_bridge(config):
        # the address has moved (or will move) to br-phy's internal port
        phys = netns.link_addresses(PHYS_BRIDGE, netns=host_netns)
        if phys is not None and phys.addresses:
            link = netns.LinkAddresses(
                link.ifname if link else PHYS_BRIDGE, link.mtu if link else phys.mtu, phys.addresses
            )
    tunnel_ip: ipaddress.IPv4Address | None = None
    if config.tunnel_ip is not None:
        tunnel_ip = ipaddress.IPv4Address(config.tunnel_ip)
    elif link is not None and link.addresses:
        tunnel_ip = link.addresses[0].ip
    if tunnel_ip is None:
        raise NodeSetupError(
            "no tunnel IP: set `tunnel_ip` or `underlay_interface` (an interface with an IPv4 address)"
            + (f"; {ifname} has no IPv4 address" if ifname else "; there is no default route")
        )
    if config.mtu is not None:
        mtu = config.mtu
    elif link is not None:
        mtu = link.mtu - TUNNEL_OVERHEAD
    else:
        mtu = 1500 - TUNNEL_OVERHEAD
    return Underlay(tunnel_ip, mtu)


def uses_phys_bridge(config: AgentConfig) -> bool:
    """Return True when the node needs br-phy: the userspace datapath with a configured underlay."""
    return config.datapath_type is DatapathType.NETDEV and config.underlay_interface is not None


@dataclass(frozen=True, slots=True)
class UnderlayMemory:
    """br-phy's addresses and gateway routes as node set-up last left them, kept in
    `<state_dir>/underlay.json`.

    They were the underlay interface's until the agent moved them to br-phy's internal port.
    When br-phy is deleted (`ovs-vsctl del-br`, an OVS clean-up script), that port goes and takes
    them with it: the node loses its underlay, its API server connection and its tunnels, and
    nothing on the node still knows the addresses. Node set-up puts them back from here.
    """

    interface: str
    addresses: tuple[ipaddress.IPv4Interface, ...]
    routes: tuple[netns.GatewayRoute, ...]

    def dump(self) -> bytes:
        """The file's content."""
        doc = {
            "interface": self.interface,
            "addresses": [str(a) for a in self.addresses],
            "routes": [{"dst": str(r.dst), "gateway": str(r.gateway)} for r in self.routes],
        }
        return (json.dumps(doc, indent=2) + "\n").encode()

    @classmethod
    def load(cls, data: bytes) -> UnderlayMemory:
        """Parse the file's content. Raises ValueError naming what is wrong."""
        try:
            doc = json.loads(data)
            return cls(
                str(doc["interface"]),
                tuple(ipaddress.IPv4Interface(a) for a in doc["addresses"]),
                tuple(
                    netns.GatewayRoute(ipaddress.IPv4Network(r["dst"]), ipaddress.IPv4Address(r["gateway"]))
                    for r in doc["routes"]
                ),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not an underlay record: {exc!r}") from None


def _memory_path(config: AgentConfig) -> Path:
    return config.state_dir / UNDERLAY_MEMORY


def _recall_underlay(config: AgentConfig) -> UnderlayMemory | None:
    """The recorded underlay of `config.underlay_interface`, or None (none, unreadable, another
    interface's: logged)."""
    path = _memory_path(config)
    try:
        memory = UnderlayMemory.load(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.error("cannot read the recorded underlay addresses in %s: %s", path, exc)
        return None
    if memory.interface != config.underlay_interface:
        log.warning(
            "%s records the underlay of %s, not of %s: not used",
            path,
            memory.interface,
            config.underlay_interface,
        )
        return None
    return memory


def _remember_underlay(config: AgentConfig, memory: UnderlayMemory) -> None:
    """Record `memory` durably, unless the file already says the same (an error is logged only:
    the node works, it just could not be repaired from the record later)."""
    path = _memory_path(config)
    payload = memory.dump()
    try:
        if path.exists() and path.read_bytes() == payload:
            return
        makedirs_durable(path.parent)
        write_atomic(path, payload)
    except OSError as exc:
        log.error("cannot record the underlay addresses in %s: %s", path, exc)


def _put_back_underlay(config: AgentConfig, host_netns: str | None) -> None:
    """Give br-phy (found without any address, and the underlay interface without any either)
    the addresses and gateway routes recorded for it. Raises NetlinkError."""
    memory = _recall_underlay(config)
    if memory is None or not memory.addresses:
        return
    log.warning(
        "%s lost the node's underlay addresses (deleted with its internal port?): putting back %s "
        "and the routes %s, as recorded in %s",
        PHYS_BRIDGE,
        [str(a) for a in memory.addresses],
        [str(r) for r in memory.routes],
        _memory_path(config),
    )
    refused = netns.put_addresses(PHYS_BRIDGE, memory.addresses, memory.routes, netns=host_netns)
    for route, error in refused:
        log.error("cannot put back the underlay route %s on %s: %s", route, PHYS_BRIDGE, error)


def ensure_phys_bridge(config: AgentConfig, ovsdb: Connection, host_netns: str | None = None) -> None:
    """For OVS userspace tunnelling: put the underlay interface on br-phy and move its address there.

    The userspace datapath sends tunnel packets by looking `tun_dst` up in its own routing table
    (learned from the kernel) and needs the route's device to be an OVS bridge: the endpoint
    address must sit on a bridge's internal port, with the physical interface a port of that
    bridge (OVS "userspace tunneling" how-to). br-phy is a plain `standalone` bridge (NORMAL
    switching), so the node's other underlay traffic keeps flowing through it. The underlay
    interface stops answering ARP for addresses it no longer holds, and br-phy's addresses are
    announced by gratuitous ARP. When neither br-phy nor the underlay interface has an address,
    br-phy was deleted with them: they are put back from the record (`UnderlayMemory`), which
    every set-up refreshes. Run before anything that needs the underlay (the API server may only
    be reachable through it). Idempotent. Raises NodeSetupError (no such underlay interface),
    OvsdbError, NetlinkError.
    """
    if not uses_phys_bridge(config):
        return
    assert config.underlay_interface is not None
    if not netns.link_exists(config.underlay_interface, netns=host_netns):
        raise NodeSetupError(f"underlay interface {config.underlay_interface} does not exist")
    ovsdb.ensure_bridge(
        PHYS_BRIDGE,
        datapath_type=DatapathType.NETDEV.value,
        fail_mode="standalone",
        protocols=[p.value for p in config.of_protocols],
    )
    # before the move, so the underlay interface never answers ARP for br-phy's address
    netns.answer_arp_only_for_own_addresses(config.underlay_interface, netns=host_netns)
    ovsdb.add_ports(PHYS_BRIDGE, [PortSpec(config.underlay_interface)])
    netns.move_addresses(config.underlay_interface, PHYS_BRIDGE, netns=host_netns)
    phys = netns.link_addresses(PHYS_BRIDGE, netns=host_netns)
    if phys is not None and not phys.addresses:
        _put_back_underlay(config, host_netns)
        phys = netns.link_addresses(PHYS_BRIDGE, netns=host_netns)
    if phys is None or not phys.addresses:
        return
    routes = netns.gateway_routes(PHYS_BRIDGE, netns=host_netns) or []
    _remember_underlay(config, UnderlayMemory(config.underlay_interface, phys.addresses, tuple(routes)))
    # br-phy's MAC differs from the underlay interface's: peers that resolved the address before
    # the move (kernels, other vswitchds' tunnel neighbour caches) would keep sending to the old
    # MAC, which br-phy does not deliver to its LOCAL port, and lose our Geneve packets. Announce
    # on every start: a restart after a crash mid-move must still correct them. (A br-phy made
    # anew has a new MAC too.)
    netns.announce_addresses(PHYS_BRIDGE, [a.ip for a in phys.addresses], netns=host_netns)


def ensure_bridge(config: AgentConfig, ovsdb: Connection) -> str:
    """Create or fix br-int and its Geneve port; return the datapath id. Raises OvsdbError."""
    dpid = datapath_id_for(config.node_name)
    ovsdb.ensure_bridge(
        config.bridge,
        datapath_type=config.datapath_type.value,
        fail_mode="secure",
        protocols=[p.value for p in config.of_protocols],
        datapath_id=dpid,
        controllers=config.controllers,
        inactivity_probe_ms=config.inactivity_probe_ms,
        max_backoff_ms=config.controller_max_backoff_ms,
    )
    tunnel_ofport = ovsdb.ensure_tunnel_port(config.bridge, TUNNEL_PORT, ofport_request=config.tunnel_ofport)
    if tunnel_ofport != config.tunnel_ofport:
        raise NodeSetupError(
            f"Geneve port {TUNNEL_PORT} got ofport {tunnel_ofport}, not the configured "
            f"{config.tunnel_ofport} (another port holds it?)"
        )
    return dpid


def prepare_underlay(config: AgentConfig, ovsdb: Connection, *, host_netns: str | None = None) -> None:
    """The first step of node set-up, before the API server is asked anything: br-phy where the
    datapath needs it (`ensure_phys_bridge`). Raises NodeSetupError."""
    try:
        ensure_phys_bridge(config, ovsdb, host_netns)
    except (OvsdbError, netns.NetlinkError) as exc:
        raise NodeSetupError(f"underlay set-up on {PHYS_BRIDGE} failed: {exc}") from None


def setup_node(
    config: AgentConfig,
    ovsdb: Connection,
    pod_cidr: ipaddress.IPv4Network,
    *,
    host_netns: str | None = None,
) -> NodeState:
    """Set up br-int, the Geneve port and the gateway port for `pod_cidr`; return the node's state.

    Runs after `prepare_underlay`. The gateway port gets the podCIDR's first address with the
    podCIDR's prefix, so the kernel's connected route sends the pod network through it. Raises
    NodeSetupError.
    """
    try:
        underlay = find_underlay(config, host_netns)
        dpid = ensure_bridge(config, ovsdb)
        gateway = ipaddress.IPv4Interface(f"{pod_cidr.network_address + 1}/{pod_cidr.prefixlen}")
        gateway_ofport = ovsdb.ensure_internal_port(
            config.bridge, config.gateway_port, mac=mac_for_ip(gateway.ip)
        )
        netns.configure_host_port(config.gateway_port, gateway, underlay.pod_mtu, netns=host_netns)
    except (OvsdbError, netns.NetlinkError) as exc:
        raise NodeSetupError(f"node set-up failed: {exc}") from None
    state = NodeState(
        pod_cidr=pod_cidr,
        gateway=gateway,
        gateway_ofport=gateway_ofport,
        tunnel_ofport=config.tunnel_ofport,
        tunnel_ip=underlay.tunnel_ip,
        datapath_id=dpid,
        mtu=underlay.pod_mtu,
    )
    log.info(
        "node set up: %s datapath id %s, gateway %s (ofport %d), tunnel %s (ofport %d), pod MTU %d",
        config.bridge,
        dpid,
        gateway,
        gateway_ofport,
        underlay.tunnel_ip,
        config.tunnel_ofport,
        underlay.pod_mtu,
    )
    return state
