"""Micro-benchmark: microseconds per flow to turn compiled flows into flow-mod bytes, cold and cached.

Run: `.venv/bin/python -m bench.ofmsg_serialize [--nodes N] [--pods P] [--rounds R]`.
Prints, per OpenFlow version, the cost of building and serializing with os-ken, of the fast
FlowModEncoder (fresh, so its memos start empty), of a cache miss and a cache hit in
`controller.ofmsg.FlowModCache`, and of framing cached bytes as bundle-adds.
Not a test: numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import ipaddress
import time
from collections.abc import Callable
from functools import partial

from controller import ofmsg
from controller.ofmsg import Command, FlowModCache, OfProto
from flows.cluster import Cluster, NodeSpec, PodSpec
from flows.compiler import compile_node
from flows.model import Flow


def synthetic_cluster(nodes: int, pods: int) -> Cluster:
    """Return `nodes` nodes with `pods` attached pods each (100.64.N.0/24, ofports from 3)."""
    specs = tuple(
        NodeSpec(
            f"node-{n}",
            ipaddress.IPv4Network(f"100.64.{n}.0/24"),
            ipaddress.IPv4Address(f"198.18.{n // 250}.{n % 250 + 1}"),
            2,
            10,
        )
        for n in range(1, nodes + 1)
    )
    pod_specs = tuple(
        PodSpec("bench", f"pod-{n}-{i}", f"node-{n}", ipaddress.IPv4Address(f"100.64.{n}.{i + 10}"), i + 11)
        for n in range(1, nodes + 1)
        for i in range(pods)
    )
    return Cluster(specs, pod_specs)


def per_flow(flows: list[Flow], rounds: int, fn: Callable[[Flow], object]) -> float:
    """Return the best-of-`rounds` microseconds per flow of `fn` over `flows`."""
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        for flow in flows:
            fn(flow)
        best = min(best, time.perf_counter() - started)
    return best / len(flows) * 1e6


def _serialize(proto: OfProto, flow: Flow) -> bytes:
    return ofmsg.serialize(ofmsg.flow_mod(proto, flow, Command.ADD))


def measure(version: int, flows: list[Flow], rounds: int) -> dict[str, float]:
    """Return microseconds per flow for each way of producing flow-mod bytes at `version`."""
    proto = OfProto(version)
    row = {"os-ken": per_flow(flows, rounds, partial(_serialize, proto))}
    row["encoder"] = min(
        per_flow(flows, 1, partial(ofmsg.FlowModEncoder(proto).encode, command=Command.ADD))
        for _ in range(rounds)
    )
    row["miss"] = min(
        per_flow(flows, 1, partial(FlowModCache(proto).get, Command.ADD)) for _ in range(rounds)
    )
    cache = FlowModCache(proto)
    for flow in flows:
        cache.get(Command.ADD, flow)
    row["hit"] = per_flow(flows, rounds, partial(cache.get, Command.ADD))
    if version >= ofmsg.OF15:
        cached = [cache.get(Command.ADD, f) for f in flows]
        started = time.perf_counter()
        for _ in range(rounds):
            for xid, data in enumerate(cached):
                ofmsg.bundle_add(data, xid=xid, bundle_id=1, flags=3)
        row["bundle-add"] = (time.perf_counter() - started) / rounds / len(flows) * 1e6
        best = float("inf")
        for _ in range(rounds):
            started = time.perf_counter()
            ofmsg.bundle_messages(cache, [], flows, bundle_id=1, first_xid=1)
            best = min(best, time.perf_counter() - started)
        row["hit+frame"] = best / len(flows) * 1e6
    return row


def main() -> None:
    """Print the table."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--nodes", type=int, default=20)
    parser.add_argument("--pods", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    flows = compile_node(synthetic_cluster(args.nodes, args.pods), "node-1").sorted()
    print(f"{len(flows)} flows of one node ({args.nodes} nodes x {args.pods} pods), best of {args.rounds}")
    columns = ("os-ken", "encoder", "miss", "hit", "bundle-add", "hit+frame")
    print("us/flow  " + " ".join(f"{c:>11}" for c in columns))
    for version, label in ((ofmsg.OF13, "OF1.3"), (ofmsg.OF15, "OF1.5")):
        row = measure(version, flows, args.rounds)
        cells = (f"{row[c]:>11.2f}" if c in row else f"{'n/a':>11}" for c in columns)
        print(f"{label:<8} " + " ".join(cells))


if __name__ == "__main__":
    main()
