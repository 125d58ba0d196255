"""Fixtures for the agent's OVS and netlink layers: a node whose br-int the agent's own code builds."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from flows.example import example_cluster
from lab.ovs import OvsNode
from ovsagent.naming import PodIdentity, mac_for_ip
from ovsagent.ovsdb import Connection
from tests.conftest import NetnsFactory, OvsNodeFactory

BRIDGE = "br-int"
GATEWAY_PORT = "sluice-gw0"
DATAPATH_ID = "00000000000000a1"


@dataclass
class AgentNode:
    """A started OVS node, the agent's OVSDB connection to it, and the node's namespace path."""

    node: OvsNode
    ovsdb: Connection
    netns_factory: NetnsFactory

    @property
    def host_netns(self) -> str:
        """The node's namespace as a path (what the agent gets when it does not run inside it)."""
        return f"/run/netns/{self.node.netns}"

    def pod(
        self,
        name: str,
        ip: str,
        *,
        namespace: str = "default",
        ifname: str = "eth0",
        prefixlen: int = 24,
    ) -> tuple[str, PodIdentity]:
        """Make a fresh pod namespace; return (its name, the pod's identity)."""
        ns = self.netns_factory()
        identity = PodIdentity(
            namespace=namespace,
            name=name,
            uid=f"uid-{name}",
            container_id=f"cid{name.replace('-', '')}",
            ifname=ifname,
            ip=ipaddress.IPv4Interface(f"{ip}/{prefixlen}"),
            netns=str(ns.path),
        )
        return ns.name, identity


@pytest.fixture
def agent_node(ovs_node_factory: OvsNodeFactory, netns: NetnsFactory) -> Iterator[AgentNode]:
    """A node without bridges, then br-int built by `Connection.ensure_bridge` (netdev datapath)."""
    node = ovs_node_factory("node-1", bridge=None)
    ovsdb = Connection(node.db_target, timeout=10.0).start()
    try:
        ovsdb.ensure_bridge(
            BRIDGE,
            datapath_type="netdev",
            protocols=("OpenFlow13", "OpenFlow15"),
            datapath_id=DATAPATH_ID,
        )
        me = example_cluster().node("node-1")
        ovsdb.ensure_internal_port(
            BRIDGE,
            GATEWAY_PORT,
            ofport_request=me.gateway_ofport,
            mac=mac_for_ip(me.gateway_ip),
        )
        yield AgentNode(node, ovsdb, netns)
    finally:
        ovsdb.close()
