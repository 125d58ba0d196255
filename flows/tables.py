"""The pipeline's tables, declared once in order, each with the matches it accepts and where it may go."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Table:
    """One OpenFlow table: its stable name, number (from its position) and contract."""

    name: str
    number: int
    summary: str
    accepts: frozenset[str]
    goes_to: frozenset[str]
    explanation: str


@dataclass(frozen=True, slots=True)
class _Spec:
    name: str
    summary: str
    accepts: tuple[str, ...]
    goes_to: tuple[str, ...]
    explanation: str


# Match fields by family, as OVS names them in dump-flows. `proto` is the shorthand OVS prints
# for dl_type (+ nw_proto): ip, arp, tcp, udp, sctp, icmp.
_L3 = ("proto", "nw_src", "nw_dst")
_L4 = ("tp_src", "tp_dst")

_SPECS: tuple[_Spec, ...] = (
    _Spec(
        "classifier",
        "where the packet came from (pod port, gateway, tunnel); unknown ports dropped",
        ("in_port",),
        ("spoof_guard", "arp_responder", "conntrack"),
        "Every packet starts here. A flow per known port records the source in `pkt_source` "
        "(reg0[0..3]) and sends pod traffic to `spoof_guard`, gateway traffic to "
        "`arp_responder` and tunnel traffic straight to `conntrack`. A packet from any other "
        "port is dropped by the lowest-priority flow.",
    ),
    _Spec(
        "spoof_guard",
        "a pod sends only with its own MAC and IP (IP and ARP)",
        ("in_port", "proto", "dl_src", "nw_src", "arp_spa", "arp_sha"),
        ("arp_responder", "conntrack"),
        "For each local pod, two flows let through IP with the pod's source MAC and IP "
        "(to `conntrack`) and ARP with the pod's MAC and IP as sender (to `arp_responder`). "
        "Anything else from a pod port is dropped.",
    ),
    _Spec(
        "arp_responder",
        "answers ARP for the gateway, local pods and remote gateways, so ARP never floods",
        ("proto", "arp_op", "arp_tpa"),
        ("conntrack",),
        "ARP requests for the gateway IP, a local pod IP or a remote node's gateway IP are "
        "answered in place: the request is turned into a reply with the MAC derived from the "
        "asked-for IP (`0a:58:` + its four bytes) and sent back out of the port it came in on. "
        "Other ARP is dropped, IPv4 continues to `conntrack`, anything else is dropped.",
    ),
    _Spec(
        "conntrack",
        "sends IP traffic through conntrack in the pod zone",
        ("proto",),
        ("conntrack_state",),
        "IPv4 goes through the connection tracker in the pod zone and continues, tracked, in "
        "`conntrack_state`.",
    ),
    _Spec(
        "conntrack_state",
        "established and related traffic skips the policy tables; invalid is dropped",
        ("proto", "ct_state"),
        ("egress_policy", "l3_forwarding"),
        "Packets of established or related connections go straight to `l3_forwarding`, so a "
        "policy change never cuts an allowed connection and replies need no rules. Invalid "
        "packets are dropped. New connections go to `egress_policy`.",
    ),
    _Spec(
        "egress_policy",
        "NetworkPolicy egress rules (none compiled yet)",
        ("proto", *_L3, *_L4, "in_port", "reg0"),
        ("egress_default", "l3_forwarding"),
        "NetworkPolicy egress rules will match here. Until policies are compiled, every new "
        "connection falls through to `egress_default`.",
    ),
    _Spec(
        "egress_default",
        "default for egress: allow (isolation lands with NetworkPolicy)",
        ("proto", "in_port", "nw_src"),
        ("l3_forwarding",),
        "The default egress decision. With no NetworkPolicy support yet, everything is allowed "
        "on to `l3_forwarding`.",
    ),
    _Spec(
        "l3_forwarding",
        "picks the output: local pod (MAC rewrite), remote podCIDR (tunnel), else the gateway",
        ("proto", "nw_dst", "reg0"),
        ("ingress_policy",),
        "A local pod's IP: set the gateway MAC as source and the pod's MAC as destination and "
        "choose its port. A remote node's podCIDR: set `tun_dst` to that node's tunnel IP and "
        "choose the tunnel port. A packet that arrived from the tunnel and is not for a local "
        "pod is dropped (no hairpin through this node), as is one for an unallocated address "
        "of the local podCIDR. Everything else goes to the gateway (the node's host stack). "
        "The chosen port is written to `out_port` (reg1).",
    ),
    _Spec(
        "ingress_policy",
        "NetworkPolicy ingress rules for the destination pod (none compiled yet)",
        ("proto", "ct_state", *_L3, *_L4, "reg1"),
        ("ingress_default", "output"),
        "Established and related packets go straight to `output`. NetworkPolicy ingress rules "
        "will match here; until then new connections fall through to `ingress_default`.",
    ),
    _Spec(
        "ingress_default",
        "default for ingress: allow (isolation lands with NetworkPolicy)",
        ("proto", "reg1", "nw_dst"),
        ("conntrack_commit",),
        "The default ingress decision. With no NetworkPolicy support yet, everything is allowed "
        "on to `conntrack_commit`.",
    ),
    _Spec(
        "conntrack_commit",
        "commits allowed new connections",
        ("proto", "ct_state"),
        ("output",),
        "A new connection that got this far was allowed: it is committed to the connection "
        "tracker, so its later packets are `+est` and skip the policy tables.",
    ),
    _Spec(
        "output",
        "sends to the chosen port",
        ("reg1",),
        (),
        "The packet leaves by the port in `out_port` (reg1).",
    ),
)


def _declare(specs: tuple[_Spec, ...]) -> tuple[Table, ...]:
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError("duplicate table name in the pipeline declaration")
    position = {name: i for i, name in enumerate(names)}
    tables = []
    for i, spec in enumerate(specs):
        for target in spec.goes_to:
            if target not in position:
                raise ValueError(f"table {spec.name} goes to undeclared table {target}")
            # OpenFlow only allows goto_table to a later table.
            if position[target] <= i:
                raise ValueError(f"table {spec.name} goes backwards to {target}")
        tables.append(
            Table(
                spec.name,
                i,
                spec.summary,
                frozenset(spec.accepts),
                frozenset(spec.goes_to),
                spec.explanation,
            )
        )
    return tuple(tables)


PIPELINE: tuple[Table, ...] = _declare(_SPECS)
_BY_NAME = {t.name: t for t in PIPELINE}
_BY_NUMBER = {t.number: t for t in PIPELINE}


def table(name: str) -> Table:
    """Return the table called `name`; raise KeyError naming it if there is none."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"no table named {name!r} in the pipeline") from None


def table_by_number(number: int) -> Table:
    """Return the table with OpenFlow number `number`; raise KeyError if there is none."""
    try:
        return _BY_NUMBER[number]
    except KeyError:
        raise KeyError(f"no table number {number} in the pipeline") from None


CLASSIFIER = table("classifier")
SPOOF_GUARD = table("spoof_guard")
ARP_RESPONDER = table("arp_responder")
CONNTRACK = table("conntrack")
CONNTRACK_STATE = table("conntrack_state")
EGRESS_POLICY = table("egress_policy")
EGRESS_DEFAULT = table("egress_default")
L3_FORWARDING = table("l3_forwarding")
INGRESS_POLICY = table("ingress_policy")
INGRESS_DEFAULT = table("ingress_default")
CONNTRACK_COMMIT = table("conntrack_commit")
OUTPUT = table("output")
