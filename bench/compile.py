"""Benchmark: compiling a synthetic 100 x 100 cluster, recompiling after one pod, and flows per node.

Run: `.venv/bin/python -m bench.compile [--nodes 100] [--pods 100] [--no-ovs]`.

Prints the time to compile every node from scratch; the time to handle one added pod the way
the controller does (the model takes the Pod object and the switch's new port map, patches its
snapshot, and only the pod's node is recompiled through the model's CompileCache) and that time
as a share of the full compile; flows per node, per local pod
and per remote node. Unless --no-ovs (or not root), it also times `ovs-ofctl --bundle add-flows`
of one node's flows on a real userspace bridge, times the number of nodes, as the yardstick
compile must stay under. Not a test: numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

from bench.ofmsg_serialize import synthetic_cluster
from controller.model import ClusterModel, Kind
from flows.cluster import Cluster
from flows.compiler import compile_cluster, compile_node, local_pod_flows, remote_flows
from flows.ofctl import render_flows
from tests.controller.kube import node_obj, pod_obj


def best_of(rounds: int, fn: Callable[[], object], after: Callable[[], object] | None = None) -> float:
    """Return the best wall time of `rounds` calls of `fn`, in seconds (`after` runs untimed after each)."""
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
        if after is not None:
            after()
    return best


def model_of(cluster: Cluster) -> ClusterModel:
    """Return a ClusterModel fed the Node and Pod objects equivalent to `cluster`."""
    model = ClusterModel()
    model.replace(
        Kind.NODE,
        [
            node_obj(n.name, str(n.pod_cidr), str(n.tunnel_ip), datapath_id=f"{i + 1:016x}")
            for i, n in enumerate(cluster.nodes)
        ],
    )
    model.replace(Kind.POD, [pod_obj(p.namespace, p.name, p.node, str(p.ip)) for p in cluster.pods])
    for node in cluster.nodes:
        model.set_ports(node.name, {f"p-{p.name}"[:15]: p.ofport or 0 for p in cluster.pods_on(node.name)})
    return model


def ofctl_install_seconds(cluster: Cluster) -> float | None:
    """Return `ovs-ofctl --bundle add-flows` time of node-1's flows on a real bridge (None: no OVS)."""
    from lab.ovs import OvsNode  # only with OVS

    node = OvsNode.create("slbench")
    try:
        node.start()
        node.add_bridge("br-int")
        text = render_flows(compile_node(cluster, cluster.nodes[0].name))
        path = node.rundir / "flows.txt"
        path.write_text(text)

        def install() -> None:
            node.ofctl("del-flows", "br-int")
            node.ofctl("--bundle", "add-flows", "br-int", str(path))

        return best_of(3, install)
    finally:
        node.close()


def main() -> None:
    """Run the benchmark and print its table."""
    parser = argparse.ArgumentParser(description="compile benchmark")
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--pods", type=int, default=100)
    parser.add_argument("--no-ovs", action="store_true", help="skip the ovs-ofctl yardstick")
    args = parser.parse_args()
    cluster = synthetic_cluster(args.nodes, args.pods)
    full = best_of(3, lambda: compile_cluster(cluster))
    model = model_of(cluster)
    for node in cluster.nodes:
        model.compile(node.name)  # the controller's steady state: every node compiled once
    first = cluster.nodes[0]
    ports = {f"p-{p.name}"[:15]: p.ofport or 0 for p in cluster.pods_on(first.name)}
    counter = iter(range(1_000_000))
    added: list[str] = []

    def one_pod() -> None:
        i = next(counter)
        added.append(f"bench/new-{i}")
        pod = pod_obj("bench", f"new-{i}", first.name, str(first.pod_cidr.network_address + 200))
        affected = model.upsert(Kind.POD, pod)
        model.set_ports(first.name, {**ports, f"p-new-{i}"[:15]: 4000 + i % 1000})
        for name in affected:
            model.compile(name)

    def reset() -> None:
        model.delete(Kind.POD, added.pop())
        model.set_ports(first.name, ports)
        model.compile(first.name)

    incremental = best_of(5, one_pod, reset)
    one_pod()
    same = model.compile(first.name) == compile_node(model.snapshot(), first.name)
    node_only = best_of(5, lambda: compile_node(cluster, first.name))
    flows = compile_node(cluster, first.name)
    pod = cluster.pods_on(first.name)[0]
    remote = cluster.nodes[1]
    rows = [
        ("cluster", f"{args.nodes} nodes x {args.pods} pods"),
        ("compile every node from scratch", f"{full:.3f} s"),
        ("one pod added: model + its node", f"{incremental:.4f} s ({100 * incremental / full:.2f}% of full)"),
        ("  same flows as from scratch", "yes" if same else "NO (bug)"),
        ("one node compiled from scratch", f"{node_only:.4f} s ({100 * node_only / full:.2f}% of full)"),
        ("flows per node", str(len(flows))),
        ("flows per local pod", str(len(local_pod_flows(first, pod)))),
        ("flows per remote node", str(len(remote_flows(first, remote)))),
    ]
    if not args.no_ovs and os.geteuid() == 0:
        one = ofctl_install_seconds(cluster)
        if one is not None:
            yardstick = one * args.nodes
            rows.append(("ovs-ofctl --bundle, one node", f"{one:.3f} s (x {args.nodes} = {yardstick:.3f} s)"))
            rows.append(("full compile / that", f"{full / yardstick:.2f}"))
    for label, value in rows:
        print(f"{label + ':':<36} {value}")


if __name__ == "__main__":
    main()
