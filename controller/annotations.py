"""The Kubernetes annotations the controller reads, named once (documented in docs/controller.md)."""

from __future__ import annotations

# Node annotations, published by the node's agent.
NODE_TUNNEL_IP = "sluice.io/tunnel-ip"
"""The node's underlay IPv4 address: the Geneve tunnel endpoint other nodes send to."""

NODE_GATEWAY_OFPORT = "sluice.io/gateway-ofport"
"""The OpenFlow port number of the node's gateway port on br-int (decimal)."""

NODE_TUNNEL_OFPORT = "sluice.io/tunnel-ofport"
"""The OpenFlow port number of the node's Geneve tunnel port on br-int (decimal)."""

NODE_DATAPATH_ID = "sluice.io/datapath-id"
"""br-int's datapath id, hexadecimal (16 digits as `ovs-vsctl get Bridge br-int datapath_id`
prints it, `0x` prefix optional). The controller matches a connecting switch to its Node by it."""

# Pod annotations, published by the agent of the pod's node when the pod is attached.
POD_PORT_NAME = "sluice.io/port-name"
"""The name of the pod's OVS port on br-int; its ofport is learned from the switch."""

NETWORK_STATUS = "k8s.v1.cni.cncf.io/network-status"
"""The standard (Kubernetes Network Plumbing WG) network status: a JSON list of
{name, interface, ips, mac, default}. The pod's IP is the first IPv4 address of the entry whose
`default` is true."""
