"""The compiler: golden flow sets (compared as sets), per-object counts, determinism, validation."""

from __future__ import annotations

import dataclasses
import ipaddress
from pathlib import Path

import pytest

from flows import cookies
from flows.cluster import Cluster, ClusterError, PodSpec
from flows.compiler import CompileCache, compile_cluster, compile_node, local_pod_flows, remote_flows
from flows.example import example_cluster
from flows.flowset import FlowConflictError, FlowSet
from flows.model import Flow, Match, Output
from flows.ofctl import render_flows
from flows.tables import OUTPUT

GOLDEN = Path(__file__).parent / "golden"


@pytest.mark.parametrize("node", ["node-1", "node-2"])
def test_compiled_flows_equal_golden_set(node: str) -> None:
    got = set(render_flows(compile_node(example_cluster(), node)).splitlines())
    want = set((GOLDEN / f"{node}.flows").read_text().splitlines())
    assert got - want == set(), "flows compiled but not in the golden file"
    assert want - got == set(), "golden flows no longer compiled"


def test_every_local_pod_has_a_flow_with_its_cookie_matching_its_address() -> None:
    # The agent's readiness wait relies on this (ovsagent/flowprobe.py): a flow with the pod's
    # cookie that matches the pod's exact IPv4 address as nw_src, nw_dst, arp_spa or arp_tpa.
    cluster = example_cluster()
    for node in cluster.nodes:
        flows = compile_node(cluster, node.name)
        for pod in cluster.pods_on(node.name):
            cookie = cookies.pod_cookie(pod.namespace, pod.name)
            named = [
                f
                for f in flows
                if f.cookie == cookie
                and any(
                    name in ("nw_src", "nw_dst", "arp_spa", "arp_tpa") and value == str(pod.ip)
                    for name, value in f.match.fields
                )
            ]
            assert named, f"no flow of {pod.name} matches on {pod.ip}"


def test_compile_is_deterministic_and_order_independent() -> None:
    c = example_cluster()
    shuffled = Cluster(tuple(reversed(c.nodes)), tuple(reversed(c.pods)))
    assert compile_cluster(c) == compile_cluster(shuffled)


def test_flow_budget_per_local_pod_and_remote_node() -> None:
    c = example_cluster()
    n1, n2 = c.nodes
    assert len(local_pod_flows(n1, c.pods_on("node-1")[0])) <= 6
    assert len(remote_flows(n1, n2)) <= 2


def test_pod_flows_carry_the_pod_cookie() -> None:
    c = example_cluster()
    flows = compile_node(c, "node-1")
    pod = c.pods_on("node-1")[0]
    mine = flows.with_cookie(cookies.pod_cookie(pod.namespace, pod.name))
    assert len(mine) == len(local_pod_flows(c.node("node-1"), pod))
    decoded = cookies.decode(mine[0].cookie)
    assert decoded.category == cookies.Category.POD
    assert decoded.generation == cookies.GENERATION


def test_pod_without_ofport_gets_no_flows_yet() -> None:
    c = example_cluster()
    pods = tuple(dataclasses.replace(p, ofport=None) if p.name == "web-1" else p for p in c.pods)
    before = compile_node(c, "node-1")
    after = compile_node(Cluster(c.nodes, pods), "node-1")
    assert len(before) - len(after) == 5
    # other nodes do not depend on a remote pod's port at all
    assert compile_node(c, "node-2") == compile_node(Cluster(c.nodes, pods), "node-2")


def test_cluster_rejects_overlapping_cidrs_and_duplicate_ips() -> None:
    c = example_cluster()
    n1, n2 = c.nodes
    with pytest.raises(ClusterError, match="overlapping"):
        Cluster((n1, dataclasses.replace(n2, pod_cidr=ipaddress.IPv4Network("100.64.1.0/25"))), ())
    dup = PodSpec("default", "copy", "node-1", ipaddress.IPv4Address("100.64.1.10"), 9)
    with pytest.raises(ClusterError, match="share IP"):
        Cluster(c.nodes, (*c.pods, dup))
    gw = PodSpec("default", "gw", "node-1", ipaddress.IPv4Address("100.64.1.1"), 9)
    with pytest.raises(ClusterError, match="not a pod address"):
        Cluster(c.nodes, (gw,))
    with pytest.raises(ClusterError, match="unknown node"):
        Cluster(
            c.nodes,
            (dataclasses.replace(dup, node="node-9", ip=ipaddress.IPv4Address("100.64.1.99")),),
        )


def test_flowset_refuses_two_different_flows_on_one_key() -> None:
    a = Flow(OUTPUT, 1, Match.of(reg1=1), (Output(1),))
    b = Flow(OUTPUT, 1, Match.of(reg1=1), (Output(2),))
    assert len(FlowSet.of([a, a])) == 1
    with pytest.raises(FlowConflictError, match="two flows for table=output"):
        FlowSet.of([a, b])


def test_with_node_pods_validates_the_new_pods_and_equals_a_fresh_cluster() -> None:
    c = example_cluster()
    extra = PodSpec("default", "extra", "node-1", ipaddress.IPv4Address("100.64.1.99"), 9)
    changed = c.with_node_pods("node-1", (*c.pods_on("node-1"), extra))
    assert changed == Cluster(c.nodes, changed.pods)
    assert set(changed.pods) == {*c.pods, extra}
    assert changed.pods_on("node-1")[-1] == extra and changed.pods_on("node-2") == c.pods_on("node-2")
    assert c.with_node_pods("node-1", ()).pods_on("node-1") == ()
    other = c.pods_on("node-2")[0]
    with pytest.raises(ClusterError, match="listed twice"):
        c.with_node_pods("node-1", (dataclasses.replace(extra, namespace=other.namespace, name=other.name),))
    with pytest.raises(ClusterError, match="not a pod address"):
        c.with_node_pods("node-1", (dataclasses.replace(extra, ip=ipaddress.IPv4Address("100.64.2.50")),))
    with pytest.raises(ClusterError, match="share IP"):
        c.with_node_pods("node-1", (extra, dataclasses.replace(extra, name="twin")))
    with pytest.raises(ClusterError, match="is on node node-1, not node-2"):
        c.with_node_pods("node-2", (extra,))
    with pytest.raises(KeyError):
        c.with_node_pods("node-9", ())


def test_compile_cache_gives_what_a_fresh_compile_gives() -> None:
    c = example_cluster()
    cache = CompileCache()
    one_by_one = {n.name: compile_node(c, n.name) for n in c.nodes}
    assert compile_cluster(c, cache) == compile_cluster(c) == one_by_one
    extra = PodSpec("default", "extra", "node-1", ipaddress.IPv4Address("100.64.1.99"), 9)
    bigger = c.with_node_pods("node-1", (*c.pods_on("node-1"), extra))
    assert compile_node(bigger, "node-1", cache) == compile_node(bigger, "node-1")
    assert len(compile_node(bigger, "node-1", cache)) == len(compile_node(c, "node-1")) + 5
    moved = Cluster(
        (c.nodes[0], dataclasses.replace(c.nodes[1], tunnel_ip=ipaddress.IPv4Address("198.18.0.99"))),
        c.pods,
    )
    assert compile_node(moved, "node-1", cache) == compile_node(moved, "node-1")
    assert compile_node(c, "node-1", cache) == compile_node(c, "node-1")
