"""The controller's cluster model: Kubernetes Node and Pod objects reduced to the compiler's `Cluster`.

Objects are plain dicts as the API server sends them (`json.loads` of a response read with
`_preload_content=False`, or `ApiClient.sanitize_for_serialization` of a model object). Each is
parsed once, when it arrives, into a small value (`NodeInfo`, `PodInfo`); `ClusterModel` keeps
those values and builds a `flows.cluster.Cluster` from them on demand.

A malformed object (garbage in its network-status annotation, a Node without podCIDR or tunnel
IP, a pod IP outside its node's podCIDR, two pods with one IP, two nodes with overlapping
podCIDRs) is logged once, with its kind and name, and left out; everything else keeps compiling.
A pod that is simply not attached yet (no annotations), runs in the host network, is not
scheduled, or has finished, is left out silently: that is normal.
"""

from __future__ import annotations

import enum
import ipaddress
import json
import logging
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from controller import annotations as ann
from flows.cluster import Cluster, ClusterError, NodeSpec, PodSpec
from flows.compiler import CompileCache, compile_node
from flows.flowset import FlowSet

log = logging.getLogger(__name__)

# OVS numbers real ports 1..0xfeff (OFPP_MAX in OpenFlow 1.0 terms); higher ones are reserved.
MAX_OFPORT = 0xFEFF
# Linux interface names (and so OVS port names of pod interfaces) have at most 15 characters.
MAX_PORT_NAME = 15
FINISHED_PHASES = frozenset({"Succeeded", "Failed"})

KubeObject = Mapping[str, Any]


class Kind(enum.Enum):
    """The kinds of Kubernetes object the model holds."""

    NODE = "Node"
    POD = "Pod"


class MalformedObject(ValueError):
    """An object that cannot be used as it is; the message says why."""


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """What the controller needs of a Node: the compiler's NodeSpec and the switch identity."""

    spec: NodeSpec
    datapath_id: int | None
    created: str = ""

    @property
    def name(self) -> str:
        """Return the node's name."""
        return self.spec.name


@dataclass(frozen=True, slots=True)
class PodInfo:
    """What the controller needs of an attached Pod."""

    namespace: str
    name: str
    node: str
    ip: ipaddress.IPv4Address
    port_name: str
    terminating: bool = False
    created: str = ""

    @property
    def key(self) -> str:
        """Return `namespace/name`."""
        return f"{self.namespace}/{self.name}"


# ---- parsing -------------------------------------------------------------------------------


def _mapping(obj: object, where: str) -> Mapping[str, Any]:
    if obj is None:
        return {}
    if not isinstance(obj, Mapping):
        raise MalformedObject(f"{where} is not an object")
    return obj


def _metadata(obj: KubeObject) -> Mapping[str, Any]:
    return _mapping(obj.get("metadata"), "metadata")


def _annotations(obj: KubeObject) -> Mapping[str, Any]:
    return _mapping(_metadata(obj).get("annotations"), "metadata.annotations")


def object_key(kind: Kind, obj: KubeObject) -> str:
    """Return the key of an object: the name of a Node, `namespace/name` of a Pod.

    Raises MalformedObject when the object has no name.
    """
    meta = _metadata(obj)
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        raise MalformedObject("object has no metadata.name")
    if kind is Kind.NODE:
        return name
    namespace = meta.get("namespace")
    if not isinstance(namespace, str) or not namespace:
        raise MalformedObject(f"pod {name} has no metadata.namespace")
    return f"{namespace}/{name}"


def _ofport(annotations: Mapping[str, Any], key: str) -> int:
    text = annotations.get(key)
    if text is None:
        raise MalformedObject(f"no {key} annotation")
    try:
        port = int(str(text), 10)
    except ValueError:
        raise MalformedObject(f"{key} annotation {text!r} is not a port number") from None
    if not 1 <= port <= MAX_OFPORT:
        raise MalformedObject(f"{key} annotation {text!r} is not a port number (1..{MAX_OFPORT})")
    return port


def _pod_cidr(spec: Mapping[str, Any]) -> ipaddress.IPv4Network:
    candidates: list[object] = []
    if spec.get("podCIDR"):
        candidates.append(spec["podCIDR"])
    cidrs = spec.get("podCIDRs")
    if isinstance(cidrs, list):
        candidates.extend(cidrs)
    if not candidates:
        raise MalformedObject("no spec.podCIDR")
    for candidate in candidates:
        try:
            net = ipaddress.ip_network(str(candidate), strict=True)
        except ValueError:
            raise MalformedObject(f"podCIDR {candidate!r} is not a network") from None
        if isinstance(net, ipaddress.IPv4Network):
            if net.prefixlen > 30:
                raise MalformedObject(f"podCIDR {net} is too small")
            return net
    raise MalformedObject(f"no IPv4 podCIDR in {candidates}")


def parse_datapath_id(text: str) -> int:
    """Return the datapath id written as hex (`0000aabbccddeeff`, `0x...`, colons allowed).

    Raises MalformedObject.
    """
    digits = text.strip().lower().removeprefix("0x").replace(":", "")
    try:
        value = int(digits, 16)
    except ValueError:
        raise MalformedObject(f"datapath id {text!r} is not hexadecimal") from None
    if not digits or len(digits) > 16 or value < 0:
        raise MalformedObject(f"datapath id {text!r} is not a 64-bit hexadecimal number")
    return value


def parse_node(obj: KubeObject) -> NodeInfo:
    """Return the NodeInfo of a Node object. Raises MalformedObject saying what is wrong.

    A bad `sluice.io/datapath-id` does not make the node unusable for the other nodes' flows;
    it is reported by `node_datapath_problem` and the datapath id is left unset.
    """
    name = object_key(Kind.NODE, obj)
    spec = _mapping(obj.get("spec"), "spec")
    annotations = _annotations(obj)
    pod_cidr = _pod_cidr(spec)
    tunnel_text = annotations.get(ann.NODE_TUNNEL_IP)
    if tunnel_text is None:
        raise MalformedObject(f"no {ann.NODE_TUNNEL_IP} annotation")
    try:
        tunnel_ip = ipaddress.IPv4Address(str(tunnel_text))
    except ValueError:
        raise MalformedObject(
            f"{ann.NODE_TUNNEL_IP} annotation {tunnel_text!r} is not an IPv4 address"
        ) from None
    gateway_ofport = _ofport(annotations, ann.NODE_GATEWAY_OFPORT)
    tunnel_ofport = _ofport(annotations, ann.NODE_TUNNEL_OFPORT)
    if gateway_ofport == tunnel_ofport:
        raise MalformedObject(f"gateway and tunnel share ofport {gateway_ofport}")
    datapath_id: int | None = None
    dpid_text = annotations.get(ann.NODE_DATAPATH_ID)
    if dpid_text is not None:
        try:
            datapath_id = parse_datapath_id(str(dpid_text))
        except MalformedObject:
            datapath_id = None
    created = str(_metadata(obj).get("creationTimestamp") or "")
    return NodeInfo(NodeSpec(name, pod_cidr, tunnel_ip, gateway_ofport, tunnel_ofport), datapath_id, created)


def node_datapath_problem(obj: KubeObject) -> str | None:
    """Return why a Node's datapath-id annotation is unusable, or None if it is fine or absent."""
    text = _annotations(obj).get(ann.NODE_DATAPATH_ID)
    if text is None:
        return None
    try:
        parse_datapath_id(str(text))
    except MalformedObject as exc:
        return f"{ann.NODE_DATAPATH_ID} annotation: {exc}"
    return None


def _default_ipv4(status_text: object) -> ipaddress.IPv4Address:
    if not isinstance(status_text, str):
        raise MalformedObject(f"{ann.NETWORK_STATUS} annotation is not a string")
    try:
        status = json.loads(status_text)
    except ValueError:
        raise MalformedObject(f"{ann.NETWORK_STATUS} annotation is not JSON") from None
    if not isinstance(status, list) or not all(isinstance(e, dict) for e in status):
        raise MalformedObject(f"{ann.NETWORK_STATUS} annotation is not a list of objects")
    defaults = [e for e in status if e.get("default") is True]
    if not defaults:
        raise MalformedObject(f"{ann.NETWORK_STATUS} annotation has no default network")
    ips = defaults[0].get("ips")
    if not isinstance(ips, list):
        raise MalformedObject(f"{ann.NETWORK_STATUS} default network has no ips list")
    for text in ips:
        try:
            ip = ipaddress.ip_address(str(text))
        except ValueError:
            raise MalformedObject(f"{ann.NETWORK_STATUS} has a bad IP {text!r}") from None
        if isinstance(ip, ipaddress.IPv4Address):
            return ip
    raise MalformedObject(f"{ann.NETWORK_STATUS} default network has no IPv4 address")


def parse_pod(obj: KubeObject) -> PodInfo | None:
    """Return the PodInfo of an attached Pod, or None for a pod that has no flows of its own.

    None: host-network pods, pods not scheduled yet, finished pods (Succeeded/Failed), and pods
    whose agent has not published both `sluice.io/port-name` and the network-status (not
    attached yet). Raises MalformedObject when what is published is unusable.
    """
    key = object_key(Kind.POD, obj)
    namespace, name = key.split("/", 1)
    spec = _mapping(obj.get("spec"), "spec")
    status = _mapping(obj.get("status"), "status")
    if spec.get("hostNetwork") is True or status.get("phase") in FINISHED_PHASES:
        return None
    node = spec.get("nodeName")
    if not node:
        return None
    if not isinstance(node, str):
        raise MalformedObject("spec.nodeName is not a string")
    annotations = _annotations(obj)
    port_name = annotations.get(ann.POD_PORT_NAME)
    status_text = annotations.get(ann.NETWORK_STATUS)
    if port_name is None or status_text is None:
        return None
    if (
        not isinstance(port_name, str)
        or not 0 < len(port_name) <= MAX_PORT_NAME
        or any(c.isspace() or c == "/" for c in port_name)
    ):
        raise MalformedObject(f"{ann.POD_PORT_NAME} annotation {port_name!r} is not a port name")
    ip = _default_ipv4(status_text)
    meta = _metadata(obj)
    return PodInfo(
        namespace,
        name,
        node,
        ip,
        port_name,
        terminating=meta.get("deletionTimestamp") is not None,
        created=str(meta.get("creationTimestamp") or ""),
    )


# ---- building the cluster ------------------------------------------------------------------


class ProblemLog:
    """Logs each problem of an object once: again only if the problem changes or comes back.

    Problems are keyed by (kind, object key, aspect); `aspect` separates independent problems
    of one object (its own content vs a conflict with another object).
    """

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self._log = logger or log
        self._seen: dict[tuple[Kind, str, str], str] = {}

    def report(self, kind: Kind, key: str, aspect: str, reason: str) -> None:
        """Record `reason` for the object; log it at WARNING unless it was already logged."""
        slot = (kind, key, aspect)
        if self._seen.get(slot) == reason:
            return
        self._seen[slot] = reason
        self._log.warning("skipping %s %s: %s", kind.value, key, reason)

    def clear(self, kind: Kind, key: str, aspect: str | None = None) -> None:
        """Forget the object's problems (of one aspect, or all): it is fine now, or gone."""
        for slot in [s for s in self._seen if s[0] is kind and s[1] == key]:
            if aspect is None or slot[2] == aspect:
                del self._seen[slot]

    def keys(self, aspect: str) -> set[tuple[Kind, str]]:
        """Return the objects that currently have a problem of `aspect`."""
        return {(k, key) for (k, key, a) in self._seen if a == aspect}

    def current(self) -> dict[tuple[Kind, str, str], str]:
        """Return every recorded problem."""
        return dict(self._seen)


CONFLICT = "conflict"


def _accept_nodes(
    nodes: Iterable[NodeInfo], problems: ProblemLog, losers: set[tuple[Kind, str]]
) -> dict[str, NodeInfo]:
    # The oldest node keeps a contested podCIDR or tunnel IP; Kubernetes' node IPAM never hands
    # out overlapping podCIDRs, so a conflict is a misconfiguration and the newcomer loses.
    accepted: dict[str, NodeInfo] = {}
    for info in sorted(nodes, key=lambda n: (n.created, n.name)):
        spec = info.spec
        reason = None
        for other in accepted.values():
            if spec.pod_cidr.overlaps(other.spec.pod_cidr):
                reason = f"podCIDR {spec.pod_cidr} overlaps node {other.name}'s {other.spec.pod_cidr}"
            elif spec.tunnel_ip == other.spec.tunnel_ip:
                reason = f"tunnel IP {spec.tunnel_ip} is node {other.name}'s too"
            if reason:
                break
        if reason:
            problems.report(Kind.NODE, info.name, CONFLICT, reason)
            losers.add((Kind.NODE, info.name))
            continue
        accepted[info.name] = info
    return accepted


def _pod_rank(pod: PodInfo) -> tuple[bool, str, str]:
    # Of two pods claiming one IP, a live pod beats a terminating one (its IP may already be
    # reused: the agent frees it at CNI DEL, before the Pod object is gone), then the older wins.
    return (pod.terminating, pod.created, pod.key)


def _resolve_pods(
    node: NodeInfo,
    pods: Iterable[PodInfo],
    ports: Mapping[str, int],
    problems: ProblemLog,
    losers: set[tuple[Kind, str]],
) -> tuple[PodSpec, ...]:
    """Return the PodSpecs of `node`'s usable pods, in key order; report and collect the losers.

    Conflicts are per node: a pod's IP must lie in its node's podCIDR and accepted podCIDRs do
    not overlap, so two pods can only clash on an IP or a port name if they share a node.
    """

    def lose(pod: PodInfo, reason: str) -> None:
        problems.report(Kind.POD, pod.key, CONFLICT, reason)
        losers.add((Kind.POD, pod.key))

    spec = node.spec
    by_ip: dict[ipaddress.IPv4Address, PodInfo] = {}
    by_port: dict[str, PodInfo] = {}
    for pod in sorted(pods, key=_pod_rank):
        if pod.ip not in spec.pod_cidr or pod.ip in (
            spec.pod_cidr.network_address,
            spec.pod_cidr.broadcast_address,
            spec.gateway_ip,
        ):
            lose(pod, f"IP {pod.ip} is not a pod address of node {spec.name}'s podCIDR {spec.pod_cidr}")
        elif pod.ip in by_ip:
            lose(pod, f"IP {pod.ip} belongs to pod {by_ip[pod.ip].key}")
        elif pod.port_name in by_port:
            lose(pod, f"port {pod.port_name} on {pod.node} belongs to pod {by_port[pod.port_name].key}")
        else:
            by_ip[pod.ip] = pod
            by_port[pod.port_name] = pod
    pod_specs = []
    for pod in sorted(by_ip.values(), key=lambda p: p.key):
        ofport = ports.get(pod.port_name)
        if ofport is not None and ofport in (spec.gateway_ofport, spec.tunnel_ofport):
            # The switch and the Node's annotations disagree; flows for both would collide.
            lose(pod, f"its port {pod.port_name} has ofport {ofport}, the gateway's or tunnel's")
            ofport = None
        elif ofport is not None and not 1 <= ofport <= MAX_OFPORT:
            ofport = None
        pod_specs.append(PodSpec(pod.namespace, pod.name, pod.node, pod.ip, ofport))
    return tuple(pod_specs)


def build_cluster(
    nodes: Iterable[NodeInfo],
    pods: Iterable[PodInfo],
    ports: Mapping[str, Mapping[str, int]],
    problems: ProblemLog,
) -> Cluster:
    """Return the Cluster of every usable node and pod; report conflicts to `problems`.

    `ports` maps node name -> {port name -> ofport}, as learned from each switch; a pod whose
    port is not known there yet gets ofport None (the compiler then gives it no local flows).
    Never raises ClusterError for conflicting objects: the losers are reported and left out.
    Nodes are in name order; pods grouped by node in that order, each node's in key order
    (the order `Cluster.with_node_pods` keeps).
    """
    losers: set[tuple[Kind, str]] = set()
    accepted = _accept_nodes(nodes, problems, losers)
    by_node: dict[str, list[PodInfo]] = {}
    for pod in pods:
        by_node.setdefault(pod.node, []).append(pod)
    names = sorted(accepted)
    pod_specs: list[PodSpec] = []
    for name in names:
        pod_specs.extend(
            _resolve_pods(accepted[name], by_node.get(name, ()), ports.get(name, {}), problems, losers)
        )
    # A conflict not found again is over: forget it, so that it is logged if it comes back.
    for kind, key in problems.keys(CONFLICT) - losers:
        problems.clear(kind, key, CONFLICT)
    return Cluster(tuple(accepted[name].spec for name in names), tuple(pod_specs))


# ---- the model -----------------------------------------------------------------------------


def _node_affected(old: NodeInfo | None, new: NodeInfo | None, all_nodes: Iterable[str]) -> set[str]:
    if old == new:
        return set()
    names = {n.name for n in (old, new) if n is not None}
    if (
        old is not None
        and new is not None
        and (old.name, old.spec.pod_cidr, old.spec.tunnel_ip)
        == (new.name, new.spec.pod_cidr, new.spec.tunnel_ip)
    ):
        # Its own ofports or datapath id changed: only its own flows (or session) depend on
        # those. Other nodes reach it by podCIDR and tunnel IP alone.
        return names
    # Added, removed, renumbered or re-addressed: every node routes to every other.
    return names | set(all_nodes)


def _pod_affected(old: PodInfo | None, new: PodInfo | None) -> set[str]:
    # Other nodes route to a pod by its node's podCIDR, so a pod only changes its own node.
    if old == new:
        return set()
    return {p.node for p in (old, new) if p is not None}


class ClusterModel:
    """The current Nodes and Pods (as parsed values) and the ports each switch reported.

    Fed by watch events (`upsert`, `delete`, `replace` after a relist) and by the switches
    (`set_ports`); each feeding call returns the names of the nodes whose flows may have
    changed, for the caller to mark dirty. `snapshot()` returns the Cluster to compile.
    Thread-safe: informers and workers may call it from different threads.
    """

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self._lock = threading.Lock()
        self._problems = ProblemLog(logger)
        self._nodes: dict[str, NodeInfo] = {}
        self._pods: dict[str, PodInfo] = {}
        self._ports: dict[str, dict[str, int]] = {}
        self._pods_by_node: dict[str, dict[str, PodInfo]] = {}
        # The snapshot is rebuilt from scratch after a node change (node conflicts are global)
        # and patched node by node after pod and port changes (pod conflicts are per node).
        self._snapshot: Cluster | None = None
        self._accepted: dict[str, NodeInfo] = {}
        self._stale: set[str] = set()  # nodes whose pods must be resolved again
        self._pod_losers: dict[str, set[tuple[Kind, str]]] = {}
        self._compiler = CompileCache()
        self._compiled_nodes: set[str] = set()

    # -- feeding --

    def upsert(self, kind: Kind, obj: KubeObject) -> set[str]:
        """Add or update an object (ADDED/MODIFIED event); return the affected node names."""
        with self._lock:
            try:
                key = object_key(kind, obj)
            except MalformedObject as exc:
                self._problems.report(kind, "(unnamed)", "object", str(exc))
                return set()
            return self._set(kind, key, self._parse(kind, key, obj))

    def delete(self, kind: Kind, obj_or_key: KubeObject | str) -> set[str]:
        """Remove an object (DELETED event), given it or its key; return the affected node names."""
        with self._lock:
            if isinstance(obj_or_key, str):
                key = obj_or_key
            else:
                try:
                    key = object_key(kind, obj_or_key)
                except MalformedObject:
                    return set()
            self._problems.clear(kind, key)
            return self._set(kind, key, None)

    def replace(self, kind: Kind, objs: Iterable[KubeObject]) -> set[str]:
        """Replace every object of `kind` (after a list or relist); return the affected nodes."""
        with self._lock:
            parsed: dict[str, NodeInfo | PodInfo | None] = {}
            for obj in objs:
                try:
                    key = object_key(kind, obj)
                except MalformedObject as exc:
                    self._problems.report(kind, "(unnamed)", "object", str(exc))
                    continue
                parsed[key] = self._parse(kind, key, obj)
            store: Mapping[str, object] = self._nodes if kind is Kind.NODE else self._pods
            affected: set[str] = set()
            for key in set(store) - set(parsed):
                self._problems.clear(kind, key)
                affected |= self._set(kind, key, None)
            for key, info in parsed.items():
                affected |= self._set(kind, key, info)
            return affected

    def set_ports(self, node: str, ports: Mapping[str, int]) -> set[str]:
        """Record the switch's port name -> ofport map of `node`; return the affected nodes."""
        with self._lock:
            new = dict(ports)
            if self._ports.get(node) == new:
                return set()
            self._ports[node] = new
            self._stale.add(node)
            return {node}

    def forget_ports(self, node: str) -> None:
        """Drop the port map of `node` (its switch went away); its pods keep their last ofports
        until a new map arrives, so nothing is marked dirty."""
        with self._lock:
            self._ports.pop(node, None)

    # -- questions --

    def affected_nodes(self, kind: Kind, old_obj: KubeObject | None, new_obj: KubeObject | None) -> set[str]:
        """Return the nodes whose flows may differ between `old_obj` and `new_obj` (None: absent).

        A pod change affects only its own node (other nodes route by podCIDR); a node added,
        removed, or with a new podCIDR or tunnel IP affects every node; a node's own ofports or
        datapath id affect that node only. Malformed objects count as absent. Logs nothing.
        """
        old = self._quiet_parse(kind, old_obj)
        new = self._quiet_parse(kind, new_obj)
        if kind is Kind.POD:
            return _pod_affected(_as_pod(old), _as_pod(new))
        with self._lock:
            all_nodes = set(self._nodes)
        return _node_affected(_as_node(old), _as_node(new), all_nodes)

    def snapshot(self) -> Cluster:
        """Return the Cluster of the current objects.

        The same object until something changes. After a node change it is rebuilt from
        scratch; after pod or port changes only the pods of the nodes they touched are resolved
        again (`Cluster.with_node_pods`), so a pod event costs O(pods on its node) work plus
        copying tuples, not a rebuild. Either way it equals `build_cluster` of the current objects.
        """
        with self._lock:
            return self._current()

    def compile(self, node: str) -> FlowSet:
        """Return the FlowSet of `node` compiled from the current snapshot.

        Uses a `CompileCache`: pieces whose inputs did not change are reused, so recompiling
        after a pod event builds that pod's flows only. Raises KeyError when `node` is not a
        usable node of the snapshot.
        """
        cluster = self.snapshot()
        return compile_node(cluster, node, self._compiler)

    def node_names(self) -> set[str]:
        """Return the names of the usable nodes known now (conflicting ones included)."""
        with self._lock:
            return set(self._nodes)

    def node_info(self, name: str) -> NodeInfo | None:
        """Return the parsed Node `name`, or None if it is unknown or malformed."""
        with self._lock:
            return self._nodes.get(name)

    def node_for_datapath(self, datapath_id: int) -> str | None:
        """Return the node whose agent published `datapath_id`, or None (none, or ambiguous)."""
        with self._lock:
            names = [n.name for n in self._nodes.values() if n.datapath_id == datapath_id]
        if len(names) == 1:
            return names[0]
        if len(names) > 1:
            log.warning("datapath id %016x is claimed by nodes %s", datapath_id, sorted(names))
        return None

    def problems(self) -> dict[tuple[Kind, str, str], str]:
        """Return every object problem currently known, by (kind, key, aspect)."""
        with self._lock:
            return self._problems.current()

    # -- internals --

    def _current(self) -> Cluster:
        if self._snapshot is not None and self._stale:
            try:
                self._snapshot = self._patched(self._snapshot)
            except ClusterError as exc:
                # A pod that moved between two stale nodes can look listed twice halfway;
                # a rebuild is always consistent.
                log.debug("patching the snapshot failed (%s): rebuilding it", exc)
                self._snapshot = None
        if self._snapshot is None:
            losers: set[tuple[Kind, str]] = set()
            self._accepted = _accept_nodes(self._nodes.values(), self._problems, losers)
            names = sorted(self._accepted)
            pod_specs: list[PodSpec] = []
            self._pod_losers = {}
            for name in names:
                node_losers: set[tuple[Kind, str]] = set()
                pod_specs.extend(self._resolve(name, node_losers))
                self._pod_losers[name] = node_losers
                losers |= node_losers
            for kind, key in self._problems.keys(CONFLICT) - losers:
                self._problems.clear(kind, key, CONFLICT)
            specs = tuple(self._accepted[name].spec for name in names)
            self._snapshot = Cluster(specs, tuple(pod_specs))
        self._stale.clear()
        for gone in self._compiled_nodes - set(self._accepted):
            self._compiler.forget(gone)
        self._compiled_nodes = set(self._accepted)
        return self._snapshot

    def _resolve(self, node: str, losers: set[tuple[Kind, str]]) -> tuple[PodSpec, ...]:
        pods = self._pods_by_node.get(node, {}).values()
        return _resolve_pods(self._accepted[node], pods, self._ports.get(node, {}), self._problems, losers)

    def _patched(self, cluster: Cluster) -> Cluster:
        for name in sorted(self._stale):
            if name not in self._accepted:
                continue  # pods of an unknown or unusable node have no flows
            losers: set[tuple[Kind, str]] = set()
            specs = self._resolve(name, losers)
            for kind, key in self._pod_losers.get(name, set()) - losers:
                self._problems.clear(kind, key, CONFLICT)
            self._pod_losers[name] = losers
            cluster = cluster.with_node_pods(name, specs)
        return cluster

    def _parse(self, kind: Kind, key: str, obj: KubeObject) -> NodeInfo | PodInfo | None:
        try:
            info: NodeInfo | PodInfo | None = parse_node(obj) if kind is Kind.NODE else parse_pod(obj)
        except MalformedObject as exc:
            self._problems.report(kind, key, "object", str(exc))
            return None
        self._problems.clear(kind, key, "object")
        if kind is Kind.NODE:
            dpid_problem = node_datapath_problem(obj)
            if dpid_problem:
                self._problems.report(kind, key, "datapath", dpid_problem)
            else:
                self._problems.clear(kind, key, "datapath")
        return info

    def _quiet_parse(self, kind: Kind, obj: KubeObject | None) -> NodeInfo | PodInfo | None:
        if obj is None:
            return None
        try:
            return parse_node(obj) if kind is Kind.NODE else parse_pod(obj)
        except MalformedObject:
            return None

    def _set(self, kind: Kind, key: str, info: NodeInfo | PodInfo | None) -> set[str]:
        if kind is Kind.NODE:
            old_node = self._nodes.get(key)
            new_node = _as_node(info)
            if new_node is None:
                self._nodes.pop(key, None)
            else:
                self._nodes[key] = new_node
            affected = _node_affected(old_node, new_node, self._nodes)
        else:
            old_pod = self._pods.get(key)
            new_pod = _as_pod(info)
            if old_pod is not None:
                self._pods_by_node.get(old_pod.node, {}).pop(key, None)
            if new_pod is None:
                self._pods.pop(key, None)
            else:
                self._pods[key] = new_pod
                self._pods_by_node.setdefault(new_pod.node, {})[key] = new_pod
            affected = _pod_affected(old_pod, new_pod)
            self._stale |= affected
            return affected
        if affected:
            self._snapshot = None
        return affected


def _as_node(info: object) -> NodeInfo | None:
    return info if isinstance(info, NodeInfo) else None


def _as_pod(info: object) -> PodInfo | None:
    return info if isinstance(info, PodInfo) else None
